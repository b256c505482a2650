package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// Behind HAProxy every client's TCP peer is HAProxy. These tests run the
// binary behind Debian's HAProxy in both modes of
// deploy/haproxy/haproxy.cfg, with clients on loopback addresses of their
// own, and check that the failed-authorization limit, the log lines and
// the audit records name each client, and that what a peer other than
// HAProxy claims is not believed.

// from is an HTTP client whose connections leave from ip (any of 127/8
// is on lo); local, when not nil, receives each connection's local
// address.
func from(ip string, local *string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err == nil && local != nil {
				*local = c.LocalAddr().String()
			}
			return c, err
		},
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
}

// openConsole opens url through client and returns the answer's status
// (101: the console is open).
func openConsole(ctx context.Context, client *http.Client, url string, header http.Header) (*websocket.Conn, int) {
	conn, status, _ := testenv.Open(ctx, url, &websocket.DialOptions{HTTPClient: client, HTTPHeader: header, Subprotocols: []string{"binary"}})
	return conn, status
}

// lockOut sends wrong tokens until the proxy answers 429 and fails
// unless the first 20 were 401s (auth_failure_limit's default).
func lockOut(ctx context.Context, t *testing.T, client *http.Client, url string, header http.Header) {
	t.Helper()
	var got []int
	for len(got) < 25 {
		_, code := openConsole(ctx, client, url, header)
		if got = append(got, code); code == http.StatusTooManyRequests {
			break
		}
	}
	if want := "[" + strings.Repeat("401 ", 20) + "429]"; fmt.Sprint(got) != want {
		t.Fatalf("wrong tokens: answers %v, want 20 times 401, then 429", got)
	}
}

// echoConsole opens url through client and checks that the console works.
func echoConsole(ctx context.Context, t *testing.T, client *http.Client, url string, header http.Header, word string) {
	t.Helper()
	conn, code := openConsole(ctx, client, url, header)
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("console for %s: %d, want 101", word, code)
	}
	defer conn.CloseNow()
	conn.Write(ctx, websocket.MessageBinary, []byte(word+"\r"))
	testenv.ReadUntil(ctx, t, conn, word)
	conn.Close(websocket.StatusNormalClosure, "")
}

// auditClient waits for the nth record of the audit log at path and
// returns its client.
func auditClient(t *testing.T, path string, n int) string {
	t.Helper()
	return fmt.Sprint(auditOf(t, path, n)["client"])
}

// wantLines waits for n log lines matching re (log lines arrive through a
// pipe, after the answers they tell of) and fails if there are more or
// fewer.
func wantLines(t *testing.T, l *testenv.LogBuffer, re string, n int) {
	t.Helper()
	l.WaitLines(t, re, n, settle)
}

// HTTP mode: HAProxy's option forwardfor names each client in
// X-Forwarded-For, believed from HAProxy's address only.
func TestRealAddressHTTPMode(t *testing.T) {
	t.Parallel()
	db := testenv.NewZunDB(t, "realaddr")
	s := &session{db: db, docker: testenv.NewDocker(t)}
	dir := t.TempDir()
	auditFile := filepath.Join(dir, "audit.log")
	trusting := func(list string) string {
		return fmt.Sprintf("[websocket_proxy]\ntrusted_proxies = %s\n[audit]\nfile = %s\n", list, auditFile)
	}
	args := confArgs(t, baseConf(db), trusting("127.0.0.1"))
	override := args[3]
	s.proxy = startProxyArgs(t, args...)
	conf := filepath.Join(dir, "haproxy.cfg")
	fronts := haFronts(t, 1)
	haproxyConf(t, conf, map[string]any{"MaxConn": 200, "Bind": fronts[0].Bind,
		"CheckInterval": "300ms", "Servers": []haServer{{"replica0", s.proxy.addr()}}})
	startHAProxy(t, conf, fronts)
	haproxy := fronts[0].Addr
	waitReady(t, http.DefaultClient, "http://"+haproxy+"/readyz")
	c := s.attachable(t, "cat")
	ctx := ctxTimeout(t, 60*time.Second)
	console := func(host, token string) string { return fmt.Sprintf("ws://%s/?token=%s&uuid=%s", host, token, c.UUID) }

	// 127.0.0.2 guesses tokens through HAProxy, claiming to be 127.0.0.3:
	// it alone is locked out, and the refusals name it.
	lockOut(ctx, t, from("127.0.0.2", nil), console(haproxy, "wrong"), http.Header{"X-Forwarded-For": {"127.0.0.3"}})
	wantLines(t, s.proxy.logs, `msg="request refused" .* client=127\.0\.0\.2 `, 21)
	// 127.0.0.3 opens a console at once; its audit record names it.
	echoConsole(ctx, t, from("127.0.0.3", nil), console(haproxy, c.Token), nil, "from-3")
	if got := auditClient(t, auditFile, 1); got != "127.0.0.3" {
		t.Errorf("audit record's client %q, want 127.0.0.3", got)
	}
	wantLines(t, s.proxy.logs, `msg="session ended" .* client=127\.0\.0\.3 `, 1)

	// Straight to the proxy, 127.0.0.4 is not a trusted proxy: what it
	// claims to be (127.0.0.5) is not believed.
	lockOut(ctx, t, from("127.0.0.4", nil), console(s.proxy.addr(), "wrong"), http.Header{"X-Forwarded-For": {"127.0.0.5"}})
	wantLines(t, s.proxy.logs, `msg="request refused" .* client=127\.0\.0\.4:\d+ `, 21)
	echoConsole(ctx, t, from("127.0.0.5", nil), console(haproxy, c.Token), nil, "from-5")
	if got := auditClient(t, auditFile, 2); got != "127.0.0.5" {
		t.Errorf("audit record's client %q, want 127.0.0.5", got)
	}
	var local string
	echoConsole(ctx, t, from("127.0.0.6", &local), console(s.proxy.addr(), c.Token), http.Header{"X-Forwarded-For": {"127.0.0.3"}}, "from-6")
	if got := auditClient(t, auditFile, 3); got != local {
		t.Errorf("audit record's client %q, want the peer %s", got, local)
	}

	// SIGHUP: trusted_proxies now names 127.0.0.6, not HAProxy.
	if err := os.WriteFile(override, []byte(trusting("127.0.0.6")), 0o600); err != nil {
		t.Fatal(err)
	}
	s.proxy.cmd.Process.Signal(syscall.SIGHUP)
	s.proxy.logs.WaitLine(t, `configuration reloaded.*trusted_proxies="?\[127\.0\.0\.6/32\]`, settle)
	echoConsole(ctx, t, from("127.0.0.6", nil), console(s.proxy.addr(), c.Token), http.Header{"X-Forwarded-For": {"127.0.0.7"}}, "from-7")
	if got := auditClient(t, auditFile, 4); got != "127.0.0.7" {
		t.Errorf("after the reload, the audit record names %q, want 127.0.0.7 (named by 127.0.0.6)", got)
	}
	echoConsole(ctx, t, from("127.0.0.3", nil), console(haproxy, c.Token), nil, "from-3-again")
	if got := auditClient(t, auditFile, 5); !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("after the reload, a client through HAProxy is named %q, want HAProxy's 127.0.0.1:port", got)
	}
}

// TCP mode: TLS passes through HAProxy to the proxy, and each connection
// starts with a PROXY header (send-proxy-v2, or version 1 with
// send-proxy) naming the client.
func TestRealAddressTCPMode(t *testing.T) {
	t.Parallel()
	db := testenv.NewZunDB(t, "realaddr")
	s := &session{db: db, docker: testenv.NewDocker(t)}
	c := s.attachable(t, "cat")
	certFile, keyFile, _ := testenv.SelfSignedCert(t)
	for _, sendProxy := range []string{"send-proxy-v2", "send-proxy"} {
		t.Run(sendProxy, func(t *testing.T) {
			dir := t.TempDir()
			auditFile := filepath.Join(dir, "audit.log")
			fronts := haFronts(t, 1)
			haproxy := fronts[0].Addr
			p := startProxy(t, baseConf(db), fmt.Sprintf(`[websocket_proxy]
cert = %s
key = %s
ssl_only = true
base_url = wss://%s/
proxy_protocol = true
trusted_proxies = 127.0.0.1
[audit]
file = %s
[metrics]
listen = 127.0.0.1:0
`, certFile, keyFile, haproxy, auditFile))
			metricsAddr := p.sideAddr(t, "metrics")
			conf := filepath.Join(dir, "haproxy.cfg")
			haproxyConf(t, conf, map[string]any{"MaxConn": 200, "Bind": fronts[0].Bind, "TCP": true,
				"SendProxy": sendProxy, "CheckInterval": "300ms", "Servers": []haServer{{"replica0", p.addr()}}})
			startHAProxy(t, conf, fronts)
			// HAProxy's own checks (PROXY headers, then TLS) mark it up.
			waitReady(t, from("127.0.0.1", nil), "https://"+haproxy+"/readyz")
			ctx := ctxTimeout(t, 60*time.Second)
			console := func(host, token string) string { return fmt.Sprintf("wss://%s/?token=%s&uuid=%s", host, token, c.UUID) }

			lockOut(ctx, t, from("127.0.0.2", nil), console(haproxy, "wrong"), nil)
			wantLines(t, p.logs, `msg="request refused" .* client=127\.0\.0\.2:\d+ `, 21)
			var local string
			echoConsole(ctx, t, from("127.0.0.3", &local), console(haproxy, c.Token), nil, "from-3")
			if got := auditClient(t, auditFile, 1); got != local {
				t.Errorf("audit record's client %q, want %s (address and port)", got, local)
			}

			// A client straight to the proxy sends no header, and one it
			// sends is bytes, not TLS: 400.
			direct, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 4)}}).Dial("tcp", p.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer direct.Close()
			direct.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(direct, "PROXY TCP4 127.0.0.3 127.0.0.1 40000 6784\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp, err := http.ReadResponse(bufio.NewReader(direct), nil); err != nil || resp.StatusCode != 400 {
				t.Errorf("a PROXY header from 127.0.0.4: %v %v, want 400", resp, err)
			}
			echoConsole(ctx, t, from("127.0.0.4", &local), console(p.addr(), c.Token), nil, "from-4")
			if got := auditClient(t, auditFile, 2); got != local {
				t.Errorf("direct client's audit record names %q, want %s", got, local)
			}

			// HAProxy's address without a header: refused, logged, counted.
			refused := func() int {
				n, _ := strconv.Atoi(metrics(t, metricsAddr)[`zun_wsproxy_handshakes_refused_total{reason="proxy_header"}`])
				return n
			}
			before := refused()
			tc, err := tls.Dial("tcp", p.addr(), &tls.Config{InsecureSkipVerify: true})
			if err == nil {
				tc.Close()
				t.Fatal("a TLS connection from the trusted proxy's address without a PROXY header was served")
			}
			if after := refused(); after != before+1 {
				t.Errorf("refused connections (proxy_header): %d before one without a header, %d after", before, after)
			}
			p.logs.WaitLine(t, `"connection refused: no valid PROXY protocol header from a trusted proxy" client=127\.0\.0\.1:`, settle)
		})
	}
}
