package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// standalone is a proxy in standalone mode on the embedded store, with
// its token CLI.
type standalone struct {
	proxy    *proxy
	docker   *testenv.Docker
	conf     []string // the proxy's configuration files
	dataDir  string
	adminURL string
	adminKey string
	// cliConf has the base_url the CLI prints: the proxy's port, which it
	// chose when it started.
	cliConf string
}

func standaloneConf() string {
	return fmt.Sprintf(`[DEFAULT]
my_ip = 127.0.0.1

[websocket_proxy]
wsproxy_host = 127.0.0.1
wsproxy_port = 0
shutdown_timeout = 2

[docker]
api_url = tcp://%s
docker_remote_api_version = %s
`, testenv.DockerAddr, testenv.APIVersion)
}

// newStandalone runs the proxy in standalone mode, with the token API when
// withAdmin is set, and more configuration appended.
func newStandalone(t *testing.T, withAdmin bool, more ...string) *standalone {
	t.Helper()
	dir := t.TempDir()
	conf := standaloneConf() + strings.Join(more, "")
	s := &standalone{docker: testenv.NewDocker(t), dataDir: filepath.Join(dir, "data")}
	if withAdmin {
		s.adminKey = "admin-key-" + testenv.NewUUID()
		keyFile := filepath.Join(dir, "admin.key")
		if err := os.WriteFile(keyFile, []byte(s.adminKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		conf += fmt.Sprintf("\n[admin]\nlisten = 127.0.0.1:0\nkey_file = %s\n", keyFile)
	}
	s.start(t, conf, "--data-dir", s.dataDir)
	if withAdmin {
		s.adminURL = "http://" + s.proxy.sideAddr(t, "token API")
	}
	return s
}

// start runs the proxy with conf (and an override, when not empty) and
// more arguments, and writes cliConf.
func (s *standalone) start(t *testing.T, conf string, more ...string) {
	t.Helper()
	s.conf = confArgs(t, conf, "")
	s.proxy = startProxyArgs(t, append(append([]string{}, s.conf...), more...)...)
	s.cliConf = filepath.Join(t.TempDir(), "cli.conf")
	if err := os.WriteFile(s.cliConf, []byte("[websocket_proxy]\nbase_url = ws://"+s.proxy.addr()+"/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

var urlLine = regexp.MustCompile(`(?m)^websocket:\s+(\S+)$`)
var consoleLine = regexp.MustCompile(`(?m)^web console:\s+(\S+)$`)
var idLine = regexp.MustCompile(`^token ([0-9a-f]{16}) `)

// token runs "zun-wsproxy token ..." against the proxy's store.
func (s *standalone) token(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binary, append(append(append([]string{"token", args[0]}, s.conf...), "--config-file", s.cliConf, "--data-dir", s.dataDir), args[1:]...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mint creates a token and returns its id, WebSocket URL and console URL.
func (s *standalone) mint(t *testing.T, args ...string) (id, wsURL, consoleURL string) {
	t.Helper()
	out, err := s.token(t, append([]string{"create"}, args...)...)
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	m, c, i := urlLine.FindStringSubmatch(out), consoleLine.FindStringSubmatch(out), idLine.FindStringSubmatch(out)
	if m == nil || c == nil || i == nil {
		t.Fatalf("token create printed no URLs:\n%s", out)
	}
	return i[1], m[1], c[1]
}

func TestStandaloneTokens(t *testing.T) {
	t.Parallel()
	s := newStandalone(t, false)
	name := "sa-" + testenv.NewUUID()[:8]
	s.docker.RunNamed(name, "sh")
	ctx := ctxTimeout(t, 60*time.Second)

	_, wsURL, _ := s.mint(t, "--container", name)
	conn := open(ctx, t, wsURL, nil)
	testenv.Echo(t, conn, "hello")
	conn.Close(websocket.StatusNormalClosure, "")
	s.proxy.sessionEnded(t, `container=`+name+`.*token_id=`)

	// Single use by default: the second connection is refused.
	if status := refusal(ctx, wsURL, nil); status != 401 {
		t.Fatalf("second use of a single-use token: %d, want 401", status)
	}

	// The real CLI with the URL the command printed (uuid = the name).
	_, wsURL, _ = s.mint(t, "--container", name)
	out, code := zunclient(t, "attach", "--url", wsURL, "--send", `echo cli-$((6*7))\n`, "--expect", "cli-42")
	if code != 0 {
		t.Fatalf("zunclient: exit %d\n%s", code, out)
	}

	// Exec tokens create their exec; two uses allowed.
	_, wsURL, _ = s.mint(t, "--container", name, "--exec", "sh", "--uses", "2")
	for i := 0; i < 2; i++ {
		conn := open(ctx, t, wsURL, nil)
		if i == 0 {
			testenv.Echo(t, conn, "exec")
		}
		conn.Close(websocket.StatusNormalClosure, "")
	}
	if status := refusal(ctx, wsURL, nil); status != 401 {
		t.Fatalf("third use of a two-use token: %d, want 401", status)
	}

	// Revoked and expired tokens are refused.
	id, wsURL, _ := s.mint(t, "--container", name)
	if out, err := s.token(t, "revoke", id); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %v %s", err, out)
	}
	if status := refusal(ctx, wsURL, nil); status != 401 {
		t.Fatalf("revoked token: %d, want 401", status)
	}
	_, wsURL, _ = s.mint(t, "--container", name, "--ttl", "1s")
	time.Sleep(1500 * time.Millisecond) // the token's time to live, and more
	if status := refusal(ctx, wsURL, nil); status != 401 {
		t.Fatalf("expired token: %d, want 401", status)
	}
	// A token for another container's name is refused.
	_, wsURL, _ = s.mint(t, "--container", name)
	if status := refusal(ctx, strings.Replace(wsURL, "uuid="+name, "uuid=other", 1), nil); status != 401 {
		t.Fatalf("token used for another container: %d, want 401", status)
	}

	list, err := s.token(t, "list")
	if err != nil || !strings.Contains(list, "revoked") || !strings.Contains(list, "expired") || !strings.Contains(list, "used") {
		t.Errorf("token list:\n%s %v", list, err)
	}
	// Minting refuses what cannot be a console.
	if out, err := s.token(t, "create", "--container", "no-such-container"); err == nil || !strings.Contains(out, "no such container") {
		t.Errorf("unknown container: %v %s", err, out)
	}
	stopped := "sa-stopped-" + testenv.NewUUID()[:8]
	s.docker.RunNamed(stopped, "exit 0")
	if !testenv.WaitFor(settle, func() bool { return !s.docker.Running(stopped) }) {
		t.Fatalf("container %s still runs after its command exited", stopped)
	}
	if out, err := s.token(t, "create", "--container", stopped); err == nil || !strings.Contains(out, "not running") {
		t.Errorf("stopped container: %v %s", err, out)
	}

	// The raw tokens exist nowhere: not in the store, not in the log.
	raw := regexp.MustCompile(`token=([A-Za-z0-9_-]{43})`).FindAllStringSubmatch(wsURL, -1)
	files, _ := filepath.Glob(filepath.Join(s.dataDir, "*"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		for _, r := range raw {
			if bytes.Contains(data, []byte(r[1])) {
				t.Errorf("%s holds a raw token", f)
			}
		}
	}
	for _, r := range raw {
		if strings.Contains(s.proxy.logs.String(), r[1]) {
			t.Error("the log holds a raw token")
		}
	}
}

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	s := newStandalone(t, true)
	name := "api-" + testenv.NewUUID()[:8]
	s.docker.RunNamed(name, "sh")
	call := func(method, path, key, body string) (int, map[string]any, []any) {
		t.Helper()
		return adminCall(t, s.adminURL, key, method, path, body)
	}
	if code, _, _ := call("GET", "/v1/tokens", "", ""); code != 401 {
		t.Errorf("no key: %d", code)
	}
	if code, _, _ := call("GET", "/v1/tokens", "wrong-key-wrong-key", ""); code != 401 {
		t.Errorf("wrong key: %d", code)
	}
	code, tok, _ := call("POST", "/v1/tokens", s.adminKey, `{"container":"`+name+`","ttl":"2m"}`)
	secret, _ := tok["token"].(string)
	wsURL, _ := tok["websocket_url"].(string)
	consoleURL, _ := tok["console_url"].(string)
	if code != 201 || secret == "" || !strings.HasPrefix(wsURL, "ws://"+s.proxy.addr()+"/?token="+secret+"&") || !strings.HasPrefix(consoleURL, "http://"+s.proxy.addr()+"/") {
		t.Fatalf("create: %d %v", code, tok)
	}
	ctx := ctxTimeout(t, 30*time.Second)
	conn := open(ctx, t, wsURL, nil)
	testenv.Echo(t, conn, "api")
	conn.Close(websocket.StatusNormalClosure, "")

	for _, c := range []struct {
		body   string
		status int
	}{
		{`not json`, 400},
		{`{"container":"` + name + `","ttl":"forever"}`, 400},
		{`{"container":"` + name + `","uses":0.5}`, 400},
		{`{"container":"` + name + `","uses":100000}`, 400},
		{`{"container":"` + name + `","surprise":1}`, 400},
		{`{"container":""}`, 400},
		{`{"container":"no-such-container"}`, 404},
		{`{"container":"` + name + `","exec":["sh"]}`, 201},
	} {
		if code, body, _ := call("POST", "/v1/tokens", s.adminKey, c.body); code != c.status || (code >= 400 && body["error"] == nil) {
			t.Errorf("POST %s: %d %v, want %d with an error text", c.body, code, body, c.status)
		}
	}
	code, _, list := call("GET", "/v1/tokens", s.adminKey, "")
	if code != 200 || len(list) != 2 {
		t.Fatalf("list: %d %v", code, list)
	}
	for _, item := range list {
		if _, ok := item.(map[string]any)["token"]; ok {
			t.Error("list shows a secret")
		}
	}
	id := tok["id"].(string)
	if code, _, _ := call("DELETE", "/v1/tokens/"+id, s.adminKey, ""); code != 204 {
		t.Errorf("revoke: %d", code)
	}
	if code, _, _ := call("DELETE", "/v1/tokens/nope", s.adminKey, ""); code != 404 {
		t.Errorf("revoke unknown: %d", code)
	}
}

// Standalone mode keeps its store in MariaDB when [database] connection
// is set with mode = standalone: how replicas share tokens. The data
// directory, given to the proxy and the CLI, stays unmade.
func TestStandaloneOnMariaDB(t *testing.T) {
	t.Parallel()
	db := testenv.NewEmptyDB(t, "sa")
	s := &standalone{docker: testenv.NewDocker(t), dataDir: filepath.Join(t.TempDir(), "data")}
	s.start(t, standaloneConf()+"\n[database]\nconnection = mysql+pymysql://"+testenv.MySQLUser+":"+testenv.MySQLPass+"@"+testenv.MySQLAddr+"/"+db.Name+
		"\n[websocket_proxy]\nmode = standalone\n", "--data-dir", s.dataDir)
	name := "sadb-" + testenv.NewUUID()[:8]
	s.docker.RunNamed(name, "sh")
	_, wsURL, _ := s.mint(t, "--container", name)
	conn := open(ctxTimeout(t, 30*time.Second), t, wsURL, nil)
	testenv.Echo(t, conn, "db")
	conn.Close(websocket.StatusNormalClosure, "")
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM console_tokens").Scan(&n); err != nil || n != 1 {
		t.Errorf("%d tokens in MariaDB (%v), want 1", n, err)
	}
	if _, err := os.Stat(s.dataDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the data directory %s was made (%v) although MariaDB is configured", s.dataDir, err)
	}
}

// The container must run when the token is used, not only when it is
// made: a console whose container stopped since then gets 409, attach and
// exec alike.
func TestStandaloneContainerStoppedAfterMint(t *testing.T) {
	t.Parallel()
	s := newStandalone(t, false)
	for _, tc := range []struct {
		kind string
		args []string
	}{
		{"attach", nil},
		{"exec", []string{"--exec", "sh"}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			name := "sa-gone-" + testenv.NewUUID()[:8]
			id := s.docker.RunNamed(name, "sh")
			_, wsURL, _ := s.mint(t, append([]string{"--container", name}, tc.args...)...)
			s.docker.Kill(id)
			if !testenv.WaitFor(settle, func() bool { return !s.docker.Running(id) }) {
				t.Fatalf("container %s still runs after docker kill", name)
			}
			u, err := url.Parse(wsURL)
			if err != nil {
				t.Fatal(err)
			}
			status, body, _ := handshake(t, u.Host, u.RequestURI(), nil)
			if status != 409 || body != "409 Conflict: container is not running\n" {
				t.Fatalf("%s token of a container stopped after the token was made: %d %q, want 409 \"409 Conflict: container is not running\"", tc.kind, status, body)
			}
		})
	}
}

// Tokens live at most 24 hours: a longer TTL is refused (token API: 400
// naming the bound; CLI: an error), and one of exactly 24 hours expires
// 24 hours from now.
func TestStandaloneTTLCap(t *testing.T) {
	t.Parallel()
	s := newStandalone(t, true)
	name := "sa-ttl-" + testenv.NewUUID()[:8]
	s.docker.RunNamed(name, "sh")
	for _, tc := range []struct {
		ttl    string
		status int
	}{
		{"24h", 201},
		{"24h0m1s", 400},
		{"25h", 400},
		{"8760h", 400},
	} {
		t.Run(tc.ttl, func(t *testing.T) {
			before := time.Now()
			code, tok, _ := adminCall(t, s.adminURL, s.adminKey, "POST", "/v1/tokens", `{"container":"`+name+`","ttl":"`+tc.ttl+`"}`)
			after := time.Now()
			if code != tc.status {
				t.Fatalf("POST ttl %s: %d (error %v, expires_at %v), want %d", tc.ttl, code, tok["error"], tok["expires_at"], tc.status)
			}
			if code != 201 {
				if msg, _ := tok["error"].(string); !strings.Contains(msg, "24h") {
					t.Errorf("POST ttl %s: error %q does not name the 24h bound", tc.ttl, msg)
				}
				out, err := s.token(t, "create", "--container", name, "--ttl", tc.ttl)
				if err == nil || !strings.Contains(out, "24h") {
					t.Errorf("token create --ttl %s: %v\n%s", tc.ttl, err, out)
				}
				return
			}
			ttl, _ := time.ParseDuration(tc.ttl)
			expires, err := time.Parse(time.RFC3339Nano, fmt.Sprint(tok["expires_at"]))
			// The store may keep whole seconds.
			if err != nil || expires.Before(before.Add(ttl).Add(-time.Second)) || expires.After(after.Add(ttl).Add(time.Second)) {
				t.Errorf("ttl %s: expires_at %v (%v), want %v from now", tc.ttl, tok["expires_at"], err, ttl)
			}
		})
	}
}
