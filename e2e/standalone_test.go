package e2e

import (
	"bytes"
	"fmt"
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
	conf     string
	dataDir  string
	adminURL string
	adminKey string
}

func standaloneConf(port int) string {
	return fmt.Sprintf(`[DEFAULT]
my_ip = 127.0.0.1

[websocket_proxy]
wsproxy_host = 127.0.0.1
wsproxy_port = %d
shutdown_timeout = 2

[docker]
api_url = tcp://%s
docker_remote_api_version = %s
`, port, testenv.DockerAddr, testenv.APIVersion)
}

// newStandalone runs the proxy in standalone mode, with the token API when
// withAdmin is set, and more configuration appended.
func newStandalone(t *testing.T, withAdmin bool, more ...string) *standalone {
	t.Helper()
	d := testenv.NewDocker(t)
	dir := t.TempDir()
	port := freePort(t)
	s := &standalone{docker: d, dataDir: filepath.Join(dir, "data"), conf: filepath.Join(dir, "zun.conf")}
	conf := standaloneConf(port) + strings.Join(more, "")
	if withAdmin {
		s.adminKey = "admin-key-" + testenv.NewUUID()
		keyFile := filepath.Join(dir, "admin.key")
		os.WriteFile(keyFile, []byte(s.adminKey+"\n"), 0o600)
		adminPort := freePort(t)
		conf += fmt.Sprintf("\n[admin]\nlisten = 127.0.0.1:%d\nkey_file = %s\n", adminPort, keyFile)
		s.adminURL = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	}
	os.WriteFile(s.conf, []byte(conf), 0o600)
	s.proxy = startProxyArgs(t, port, "--config-file", s.conf, "--data-dir", s.dataDir)
	return s
}

var urlLine = regexp.MustCompile(`(?m)^websocket:\s+(\S+)$`)
var consoleLine = regexp.MustCompile(`(?m)^web console:\s+(\S+)$`)
var idLine = regexp.MustCompile(`^token ([0-9a-f]{16}) `)

// token runs "zun-wsproxy token ..." against the proxy's store.
func (s *standalone) token(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"token", args[0], "--config-file", s.conf, "--data-dir", s.dataDir}, args[1:]...)...)
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
	s := newStandalone(t, false)
	name := "sa-" + testenv.NewUUID()[:8]
	s.docker.RunNamed(name, "sh")
	ctx := ctxTimeout(t, 60*time.Second)

	_, wsURL, _ := s.mint(t, "--container", name)
	conn, _, err := dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatalf("attach with a fresh token: %v", err)
	}
	conn.Write(ctx, websocket.MessageBinary, []byte("echo hello-$((6*7))\n"))
	readUntil(ctx, t, conn, "hello-42")
	conn.Close(websocket.StatusNormalClosure, "")
	s.proxy.logs.waitLine(t, `session ended.*container=`+name+`.*token_id=`, 5*time.Second)

	// Single use by default: the second connection is refused.
	if _, resp, err := dial(ctx, wsURL, nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("second use of a single-use token: %v", err)
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
		conn, _, err := dial(ctx, wsURL, nil)
		if err != nil {
			t.Fatalf("exec use %d: %v", i+1, err)
		}
		if i == 0 {
			conn.Write(ctx, websocket.MessageBinary, []byte("echo exec-$((6*7))\n"))
			readUntil(ctx, t, conn, "exec-42")
		}
		conn.Close(websocket.StatusNormalClosure, "")
	}

	// Revoked and expired tokens are refused.
	id, wsURL, _ := s.mint(t, "--container", name)
	if out, err := s.token(t, "revoke", id); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %v %s", err, out)
	}
	if _, resp, err := dial(ctx, wsURL, nil); err == nil || resp.StatusCode != 401 {
		t.Fatalf("revoked token: %v", err)
	}
	_, wsURL, _ = s.mint(t, "--container", name, "--ttl", "1s")
	time.Sleep(1500 * time.Millisecond)
	if _, resp, err := dial(ctx, wsURL, nil); err == nil || resp.StatusCode != 401 {
		t.Fatalf("expired token: %v", err)
	}
	// A token for another container's name is refused.
	_, wsURL, _ = s.mint(t, "--container", name)
	if _, resp, err := dial(ctx, strings.Replace(wsURL, "uuid="+name, "uuid=other", 1), nil); err == nil || resp.StatusCode != 401 {
		t.Fatalf("token used for another container: %v", err)
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
	testenv.WaitFor(5*time.Second, func() bool { return !s.docker.Running(stopped) })
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
	if code != 201 || tok["token"] == "" || tok["websocket_url"] == nil || tok["console_url"] == nil {
		t.Fatalf("create: %d %v", code, tok)
	}
	ctx := ctxTimeout(t, 30*time.Second)
	conn, _, err := dial(ctx, tok["websocket_url"].(string), nil)
	if err != nil {
		t.Fatalf("token from the API: %v", err)
	}
	conn.Write(ctx, websocket.MessageBinary, []byte("echo api-$((6*7))\n"))
	readUntil(ctx, t, conn, "api-42")
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
// is set with mode = standalone: how replicas share tokens.
func TestStandaloneOnMariaDB(t *testing.T) {
	d := testenv.NewDocker(t)
	db := testenv.NewEmptyDB(t, "sa")
	dir := t.TempDir()
	port := freePort(t)
	conf := filepath.Join(dir, "zun.conf")
	os.WriteFile(conf, []byte(standaloneConf(port)+"\n[database]\nconnection = mysql+pymysql://"+testenv.MySQLUser+":"+testenv.MySQLPass+"@"+testenv.MySQLAddr+"/"+db.Name+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "mode.conf"), []byte("[websocket_proxy]\nmode = standalone\n"), 0o600)
	s := &standalone{docker: d, dataDir: filepath.Join(dir, "unused"), conf: conf}
	s.proxy = startProxyArgs(t, port, "--config-file", conf, "--config-file", filepath.Join(dir, "mode.conf"))
	name := "sadb-" + testenv.NewUUID()[:8]
	d.RunNamed(name, "sh")
	out, err := exec.Command(binary, "token", "create", "--config-file", conf, "--config-file", filepath.Join(dir, "mode.conf"), "--container", name).CombinedOutput()
	m := urlLine.FindStringSubmatch(string(out))
	if err != nil || m == nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	ctx := ctxTimeout(t, 30*time.Second)
	conn, _, err := dial(ctx, m[1], nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	conn.Write(ctx, websocket.MessageBinary, []byte("echo db-$((6*7))\n"))
	readUntil(ctx, t, conn, "db-42")
	conn.Close(websocket.StatusNormalClosure, "")
	var n int
	db.QueryRow("SELECT COUNT(*) FROM console_tokens").Scan(&n)
	if n != 1 {
		t.Errorf("%d tokens in MariaDB, want 1", n)
	}
	if _, err := os.Stat(s.dataDir); err == nil {
		t.Error("a SQLite store was made although MariaDB is configured")
	}
}
