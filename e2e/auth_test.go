package e2e

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// handshake sends a WebSocket opening handshake and returns the answer's
// status, body and headers; a 101 is closed at once.
func handshake(t *testing.T, addr, target string, header http.Header) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	testenv.UpgradeHeaders(req.Header)
	req.Header.Set("Sec-WebSocket-Protocol", "binary, base64")
	for k, v := range header {
		req.Header[k] = v
	}
	client := &http.Client{
		Timeout:       15 * time.Second,
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, "", resp.Header
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

// blackhole accepts TCP connections and never answers: a container
// runtime that hangs.
func blackhole(t *testing.T) string {
	return testenv.NewBlackhole(t, "127.0.0.1:0").Addr
}

func TestAuthorizationAnswers(t *testing.T) {
	t.Parallel()
	s := newSession(t)
	good := s.attachable(t, "sh")
	named := s.attachable(t, "sh")
	s.db.Exec("UPDATE container SET name = 'my-console' WHERE id = ?", named.ID)
	s.db.InsertContainer(t, testenv.Container{Name: "twin", DockerID: good.DockerID, Token: "t1"})
	s.db.InsertContainer(t, testenv.Container{Name: "twin", DockerID: good.DockerID, Token: "t2"})
	// Two containers with one name and one token: the token cannot tell.
	s.db.InsertContainer(t, testenv.Container{Name: "clone", DockerID: good.DockerID, Token: "t3"})
	s.db.InsertContainer(t, testenv.Container{Name: "clone", DockerID: good.DockerID, Token: "t3"})
	never := s.db.InsertContainer(t, testenv.Container{DockerID: good.DockerID}) // never attached: no token
	// Nothing listens on port 1: the runtime is down.
	down := s.db.InsertContainer(t, testenv.Container{Token: "tok-down", WebsocketURL: "ws://127.0.0.1:1/v1.26/containers/x/attach/ws?stream=1"})
	hung := s.db.InsertContainer(t, testenv.Container{Token: "tok-hung", WebsocketURL: "ws://" + blackhole(t) + "/v1.26/containers/x/attach/ws?stream=1"})
	execID, execToken := s.db.NewExec(t, s.docker, good, "")

	q := func(token, uuid string) string { return "/?token=" + token + "&uuid=" + uuid }
	self := "http://" + s.proxy.addr()
	cases := []struct {
		name   string
		target string
		header http.Header
		status int
	}{
		{"attach by uuid", q(good.Token, good.UUID), nil, 101},
		{"attach by upper-case uuid", q(good.Token, strings.ToUpper(good.UUID)), nil, 101},
		{"attach by name", q(named.Token, "my-console"), nil, 101},
		{"exec", q(execToken, good.UUID) + "&exec_id=" + execID, nil, 101},
		{"wrong token", q("wrong", good.UUID), nil, 401},
		{"other container's token", q(named.Token, good.UUID), nil, 401},
		{"missing token", "/?uuid=" + good.UUID, nil, 401},
		{"unknown container uuid", q(good.Token, testenv.NewUUID()), nil, 401},
		{"unknown container name", q(good.Token, "no-such-console"), nil, 401},
		{"container never attached", q("", never.UUID), nil, 401},
		{"empty token vs no token", q("%20", never.UUID), nil, 401},
		{"shared name, one's token", q("t2", "twin"), nil, 101},
		{"shared name, wrong token", q("wrong", "twin"), nil, 401},
		{"shared name and token", q("t3", "clone"), nil, 409},
		{"exec with attach token", q(good.Token, good.UUID) + "&exec_id=" + execID, nil, 401},
		{"unknown exec", q(execToken, good.UUID) + "&exec_id=nope", nil, 401},
		{"missing uuid", "/?token=" + good.Token, nil, 400},
		{"repeated token", q(good.Token, good.UUID) + "&token=x", nil, 400},
		{"no origin (CLI)", q(good.Token, good.UUID), nil, 101},
		{"same-host origin", q(good.Token, good.UUID), http.Header{"Origin": {self}}, 101},
		{"allowed origin", q(good.Token, good.UUID), http.Header{"Origin": {"http://dashboard.example.org"}}, 101},
		{"evil origin", q(good.Token, good.UUID), http.Header{"Origin": {"http://evil.example"}}, 403},
		{"evil origin, bad token too", q("wrong", good.UUID), http.Header{"Origin": {"http://evil.example"}}, 403},
		{"null origin", q(good.Token, good.UUID), http.Header{"Origin": {"null"}}, 403},
		{"https origin on a ws:// proxy", q(good.Token, good.UUID), http.Header{"Origin": {"https://127.0.0.1"}}, 403},
		{"X-Forwarded-Proto https on a ws:// proxy", q(good.Token, good.UUID), http.Header{"Origin": {self}, "X-Forwarded-Proto": {"https"}}, 403},
		{"X-Forwarded-Proto http replaces the origin's scheme", q(good.Token, good.UUID), http.Header{"Origin": {"https://127.0.0.1"}, "X-Forwarded-Proto": {"http"}}, 101},
		{"runtime unreachable", q("tok-down", down.UUID), nil, 502},
		{"runtime timeout", q("tok-hung", hung.UUID), nil, 504},
		{"other path", "/console" + q(good.Token, good.UUID), nil, 404},
		{"open redirect path", "//evil.example/%2F..", nil, 404},
		{"websocket version 8", q(good.Token, good.UUID), http.Header{"Sec-Websocket-Version": {"8"}}, 426},
	}
	var unauthorizedBody string
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body, header := handshake(t, s.proxy.addr(), c.target, c.header)
			if status != c.status {
				t.Fatalf("status %d (%q), want %d", status, body, c.status)
			}
			if loc := header.Get("Location"); loc != "" {
				t.Errorf("answer redirects to %q", loc)
			}
			if status == 401 {
				// One answer for wrong tokens and unknown containers alike.
				if unauthorizedBody == "" {
					unauthorizedBody = body
				} else if body != unauthorizedBody {
					t.Errorf("401 body %q differs from %q", body, unauthorizedBody)
				}
			}
			if status != 101 && (strings.Contains(body, good.Token) || strings.Contains(body, "127.0.0.1:1")) {
				t.Errorf("answer leaks a secret or an address: %q", body)
			}
		})
	}
	// A plain HTTP GET (no upgrade) is refused, not redirected.
	resp, err := http.Get("http://" + s.proxy.addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("plain GET /: %d, want 400", resp.StatusCode)
	}
	// The log names why, and never a token.
	s.proxy.logs.WaitLine(t, `request refused.*status=409`, settle)
	for _, secret := range []string{good.Token, named.Token, execToken, "tok-down", "tok-hung"} {
		if strings.Contains(s.proxy.logs.String(), secret) {
			t.Errorf("the log contains token %s", secret)
		}
	}
}

// With the database down, requests get 503 quickly; the process stays up.
func TestDatabaseDown(t *testing.T) {
	p := startProxy(t, baseConf(nil), "")
	start := time.Now()
	status, body, _ := handshake(t, p.addr(), "/?token=t&uuid="+testenv.NewUUID(), nil)
	if status != 503 {
		t.Fatalf("status %d %q, want 503", status, body)
	}
	// Refused at once: within query_timeout, and 2 s more for a busy
	// machine.
	if d := time.Since(start); d > queryTimeout+2*time.Second {
		t.Errorf("503 took %v", d)
	}
	if status, _, _ := handshake(t, p.addr(), "/?token=t&uuid=name", nil); status != 503 {
		t.Errorf("second request: %d", status)
	}
}

// A malformed zun.conf stops start-up with one line naming the file, the
// section and the option.
func TestBadConfigStopsStartup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cases := []struct{ conf, want string }{
		{"[websocket_proxy]\nwsproxy_port = abc\n", `[websocket_proxy] wsproxy_port: invalid port "abc" (want 0-65535)`},
		{"[websocket_proxy]\ncert = /nonexistent.pem\n", `[websocket_proxy] cert: unreadable: /nonexistent.pem: no such file or directory`},
		{"[database]\nconnection = postgresql://zun@db/zun\n", `[database] connection: unsupported database "postgresql"`},
		{"[database]\nconnection = mysql+pymysql://zun:s3cret@db/zun?charset=utf8&foo=1\n", `[database] connection: unknown option "foo"`},
		{"[database]\nconnection = mysql+pymysql://zun:s3cret@db/zun?ssl_ca=/nonexistent/ca.pem\n", `[database] connection: ssl_ca: unreadable: /nonexistent/ca.pem: no such file or directory`},
	}
	for _, c := range cases {
		path := filepath.Join(dir, "zun.conf")
		os.WriteFile(path, []byte(c.conf), 0o600)
		out, err := exec.Command(binary, "--config-file", path).CombinedOutput()
		if err == nil {
			t.Errorf("%q: started", c.conf)
			continue
		}
		got := strings.TrimSpace(string(out))
		if strings.Count(got, "\n") != 0 || !strings.HasPrefix(got, "zun-wsproxy: "+path+": "+c.want) || strings.Contains(got, "s3cret") {
			t.Errorf("output %q, want one line starting with %q", got, "zun-wsproxy: "+path+": "+c.want)
		}
	}
}

// A WebSocket version other than 13, or none, gets 426 with
// Sec-WebSocket-Version: 13, the one the proxy speaks (RFC 6455 section
// 4.4). The version is checked before the database is asked: with it down,
// version 13 gets 503.
func TestUnsupportedVersion(t *testing.T) {
	t.Parallel()
	p := startProxy(t, baseConf(nil), "")
	cases := []struct {
		name     string
		versions []string // the request's Sec-WebSocket-Version lines
		status   int
	}{
		{"8", []string{"8"}, 426},
		{"12", []string{"12"}, 426},
		{"14", []string{"14"}, 426},
		{"missing", nil, 426},
		{"empty", []string{""}, 426},
		{"13 and 8 in one line", []string{"13, 8"}, 426},
		{"13 twice", []string{"13", "13"}, 426},
		{"13 (control)", []string{"13"}, 503},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body, header := handshake(t, p.addr(), "/?token=t&uuid="+testenv.NewUUID(), http.Header{"Sec-Websocket-Version": c.versions})
			if status != c.status {
				t.Fatalf("status %d (%q), want %d", status, body, c.status)
			}
			if got := header.Values("Sec-Websocket-Version"); status == 426 && (len(got) != 1 || got[0] != "13") {
				t.Errorf("426 with Sec-WebSocket-Version %q, want 13", got)
			}
		})
	}
}
