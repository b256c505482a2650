package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// replica is one zun-wsproxy of several sharing a database.
type replica struct {
	*proxy
	admin string // token API base URL; "" if none
}

// onPort rewrites a console URL to reach another replica.
func onPort(raw string, port int) string {
	u, _ := url.Parse(raw)
	u.Host = "127.0.0.1:" + strconv.Itoa(port)
	return u.String()
}

// adminCall calls a token API (key "" sends none) and decodes its JSON
// answer: an object, or an array.
func adminCall(t *testing.T, base, key, method, path, body string) (int, map[string]any, []any) {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var obj map[string]any
	var arr []any
	var raw json.RawMessage
	json.NewDecoder(resp.Body).Decode(&raw)
	if json.Unmarshal(raw, &obj) != nil {
		json.Unmarshal(raw, &arr)
	}
	return resp.StatusCode, obj, arr
}

// TestReplicasShareTokens runs three standalone replicas on one MariaDB
// store: a token minted through one replica's API opens consoles on the
// others, a single-use token opens exactly one session however many
// replicas are asked at once, and a revocation on one holds on all.
func TestReplicasShareTokens(t *testing.T) {
	t.Parallel()
	d := testenv.NewDocker(t)
	db := testenv.NewEmptyDB(t, "rep")
	dir := t.TempDir()
	key := "admin-key-" + testenv.NewUUID()
	keyFile := filepath.Join(dir, "admin.key")
	if err := os.WriteFile(keyFile, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	// auth_failure_limit = 0: the test counts every 401 rather than having
	// the rate limit answer 429 after 20 of them.
	conf := strings.Replace(standaloneConf(), "[websocket_proxy]\n", "[websocket_proxy]\nmode = standalone\nauth_failure_limit = 0\n", 1) +
		fmt.Sprintf("[database]\nconnection = mysql+pymysql://%s:%s@%s/%s\n[admin]\nlisten = 127.0.0.1:0\nkey_file = %s\n",
			testenv.MySQLUser, testenv.MySQLPass, testenv.MySQLAddr, db.Name, keyFile)
	var reps []replica
	for i := 0; i < 3; i++ {
		p := startProxy(t, conf, "")
		reps = append(reps, replica{proxy: p, admin: "http://" + p.sideAddr(t, "token API")})
	}
	name := "rep-" + testenv.NewUUID()[:8]
	d.RunNamed(name, "sh")
	ctx := ctxTimeout(t, 60*time.Second)

	// Minted on replica 0, used on 1 and 2.
	code, tok, _ := adminCall(t, reps[0].admin, key, "POST", "/v1/tokens", `{"container":"`+name+`","ttl":"2m","uses":2}`)
	if code != 201 {
		t.Fatalf("mint on replica 0: %d %v", code, tok)
	}
	wsURL, _ := tok["websocket_url"].(string)
	for i, r := range reps[1:] {
		conn := open(ctx, t, onPort(wsURL, r.port), nil)
		testenv.Echo(t, conn, fmt.Sprintf("replica%d", i+1))
		conn.Close(websocket.StatusNormalClosure, "")
		r.logs.WaitLine(t, `session started`, settle)
	}

	// One single-use token, 100 simultaneous attempts over the 3 replicas.
	code, tok, _ = adminCall(t, reps[1].admin, key, "POST", "/v1/tokens", `{"container":"`+name+`","ttl":"2m","uses":1}`)
	if code != 201 {
		t.Fatalf("mint: %d %v", code, tok)
	}
	wsURL, _ = tok["websocket_url"].(string)
	var sessions, refused, other atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	var conns sync.Map
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			conn, status, err := testenv.Open(ctx, onPort(wsURL, reps[i%3].port), dialOptions(nil))
			switch status {
			case http.StatusSwitchingProtocols:
				sessions.Add(1)
				conns.Store(i, conn)
			case http.StatusUnauthorized:
				refused.Add(1)
			default:
				other.Add(1)
				t.Logf("attempt %d: %d %v", i, status, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	conns.Range(func(_, c any) bool { c.(*websocket.Conn).Close(websocket.StatusNormalClosure, ""); return true })
	t.Logf("100 attempts with one single-use token over 3 replicas: %d session, %d refused (401), %d other", sessions.Load(), refused.Load(), other.Load())
	if sessions.Load() != 1 || refused.Load() != 99 {
		t.Fatalf("%d sessions and %d refusals, want 1 and 99", sessions.Load(), refused.Load())
	}

	// Revoked on replica 2, refused on replica 0.
	code, tok, _ = adminCall(t, reps[0].admin, key, "POST", "/v1/tokens", `{"container":"`+name+`","ttl":"2m","uses":5}`)
	if code != 201 {
		t.Fatalf("mint: %d", code)
	}
	id, _ := tok["id"].(string)
	if code, _, _ := adminCall(t, reps[2].admin, key, "DELETE", "/v1/tokens/"+id, ""); code != 204 {
		t.Fatalf("revoke on replica 2: %d", code)
	}
	// The URL replica 0 handed out names replica 0.
	wsURL, _ = tok["websocket_url"].(string)
	if status := refusal(ctx, wsURL, nil); status != 401 {
		t.Fatalf("a token revoked on replica 2 on replica 0: %d, want 401", status)
	}
}

// haproxyConf renders deploy/haproxy/haproxy.cfg.
func haproxyConf(t *testing.T, path string, data any) {
	t.Helper()
	tmpl, err := template.ParseFiles(filepath.Join(testenv.RepoRoot(), "deploy", "haproxy", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tmpl.Execute(f, data); err != nil {
		t.Fatal(err)
	}
}

type haServer struct{ Name, Addr string }

// haFront is a socket listening on a free loopback port for HAProxy,
// which cannot be asked for one: it serves the socket it inherits (bind
// fd@N) from the test, which knows the port before HAProxy starts.
type haFront struct {
	Addr string // host:port
	Bind string // what haproxy.cfg binds: fd@N
	file *os.File
}

// haFronts makes n sockets for HAProxy, to pass to startHAProxy in order.
func haFronts(t *testing.T, n int) []haFront {
	t.Helper()
	var fronts []haFront
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File() // a copy: the socket stays open
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		fronts = append(fronts, haFront{Addr: ln.Addr().String(), Bind: fmt.Sprintf("fd@%d", 3+i), file: f})
	}
	return fronts
}

// startHAProxy runs Debian's haproxy in the foreground, serving fronts,
// until the test ends; its log (server state changes among it) is
// returned.
func startHAProxy(t *testing.T, conf string, fronts []haFront) *testenv.LogBuffer {
	t.Helper()
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Fatal("haproxy is not installed: run scripts/test-env.sh")
	}
	var files []*os.File
	for _, f := range fronts {
		files = append(files, f.file)
	}
	check := exec.Command("haproxy", "-c", "-q", "-f", conf)
	check.ExtraFiles = files // the check opens them too
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("haproxy config check: %v\n%s", err, out)
	}
	cmd := exec.Command("haproxy", "-db", "-f", conf)
	cmd.ExtraFiles = files
	logs := &testenv.LogBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy:\n%s", logs)
		}
	})
	return logs
}

// waitReady waits for a replica behind HAProxy to answer url (its
// /readyz) with 200: HAProxy's health check has marked it up.
func waitReady(t *testing.T, client *http.Client, url string) {
	t.Helper()
	if !testenv.WaitFor(settle, func() bool {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	}) {
		t.Fatalf("HAProxy did not answer %s", url)
	}
}

// TestHAProxyFailover runs two replicas behind HAProxy: sessions spread
// over both; when one replica is killed, its sessions end, the other's
// keep working, and new sessions all go to the survivor. TLS can end at
// HAProxy, with the Origin check honouring X-Forwarded-Proto.
func TestHAProxyFailover(t *testing.T) {
	t.Parallel()
	s := newDeployment(t)
	fronts := haFronts(t, 2)
	front, tlsFront := fronts[0], fronts[1]
	var reps []*proxy
	var servers []haServer
	for i := 0; i < 2; i++ {
		// base_url is what clients are given: HAProxy's wss:// address.
		// The Origin check compares the scheme a browser used (told by
		// X-Forwarded-Proto) with it.
		p := startProxy(t, baseConf(s.db), fmt.Sprintf("[websocket_proxy]\nbase_url = wss://%s/\n", tlsFront.Addr))
		reps = append(reps, p)
		servers = append(servers, haServer{fmt.Sprintf("replica%d", i), p.addr()})
	}
	dir := t.TempDir()
	pem := filepath.Join(dir, "haproxy.pem")
	certFile, keyFile, _ := testenv.SelfSignedCert(t)
	certPEM, _ := os.ReadFile(certFile)
	keyPEM, _ := os.ReadFile(keyFile)
	os.WriteFile(pem, append(certPEM, keyPEM...), 0o600)
	conf := filepath.Join(dir, "haproxy.cfg")
	haproxyConf(t, conf, map[string]any{
		"MaxConn": 2000, "Bind": front.Bind, "TLSBind": tlsFront.Bind, "TLSCert": pem,
		"CheckInterval": "300ms", "Servers": servers,
	})
	haLog := startHAProxy(t, conf, fronts)
	base := front.Addr
	waitReady(t, http.DefaultClient, "http://"+base+"/readyz")

	c := s.attachable(t, "cat")
	ctx := ctxTimeout(t, 90*time.Second)
	consoleURL := func(host string) string {
		return fmt.Sprintf("ws://%s/?token=%s&uuid=%s", host, c.Token, c.UUID)
	}
	const n = 20
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		conn := open(ctx, t, consoleURL(base), nil)
		conn.Write(ctx, websocket.MessageBinary, []byte(fmt.Sprintf("first-%d\r", i)))
		testenv.ReadUntil(ctx, t, conn, fmt.Sprintf("first-%d", i))
		conns[i] = conn
	}
	started := func(p *proxy) int { return len(p.logs.Matching("session started")) }
	var on0, on1 int
	testenv.WaitFor(settle, func() bool { on0, on1 = started(reps[0]), started(reps[1]); return on0+on1 >= n })
	t.Logf("%d sessions through HAProxy: %d on replica 0, %d on replica 1", n, on0, on1)
	if on0+on1 != n || on0 == 0 || on1 == 0 {
		t.Fatalf("sessions not spread over both replicas: %d and %d", on0, on1)
	}

	// Replica 0 dies. Before HAProxy's checks notice, a new session sent
	// to it is refused at connect and redispatched to the survivor
	// (haproxy.cfg's retries and option redispatch): none fails.
	reps[0].kill()
	early := make(chan error, 10)
	for i := 0; i < cap(early); i++ {
		go func() {
			conn, status, err := testenv.Open(ctx, consoleURL(base), nil)
			if err != nil {
				early <- fmt.Errorf("session %d right after replica 0 died: status %d: %v", i, status, err)
				return
			}
			defer conn.CloseNow()
			early <- nil
		}()
	}
	for range cap(early) {
		if err := <-early; err != nil {
			t.Error(err)
		}
	}
	if strings.Contains(haLog.String(), "replica0 is DOWN") {
		t.Logf("HAProxy marked replica 0 down before the new sessions were opened: redispatch not exercised")
	}
	var ended, alive int
	for i, conn := range conns {
		readCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		marker := fmt.Sprintf("after-%d", i)
		err := conn.Write(readCtx, websocket.MessageBinary, []byte(marker+"\r"))
		var got string
		for err == nil && !strings.Contains(got, marker) {
			var data []byte
			_, data, err = conn.Read(readCtx)
			got += string(data)
		}
		cancel()
		switch {
		case err == nil:
			alive++
		case errors.Is(err, context.DeadlineExceeded):
			t.Fatalf("session %d hung after the replica died", i)
		default:
			ended++
		}
	}
	t.Logf("after replica 0 was killed: %d sessions ended, %d still work", ended, alive)
	if ended != on0 || alive != on1 {
		t.Fatalf("%d ended and %d alive, want the %d of the dead replica ended and the %d of the other alive", ended, alive, on0, on1)
	}

	// Once HAProxy's checks mark it down, every new session succeeds, on
	// the survivor.
	haLog.WaitLine(t, `Server replicas/replica0 is DOWN`, settle)
	for i := 0; i < 10; i++ {
		conn := open(ctx, t, consoleURL(base), nil)
		conn.Write(ctx, websocket.MessageBinary, []byte(fmt.Sprintf("new-%d\r", i)))
		testenv.ReadUntil(ctx, t, conn, fmt.Sprintf("new-%d", i))
		conn.Close(websocket.StatusNormalClosure, "")
	}
	reps[1].logs.WaitLines(t, "session started", on1+cap(early)+10, settle)

	// TLS ends at HAProxy: a page served over https may open the console;
	// another site may not.
	tlsHost := tlsFront.Addr
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	wss := strings.Replace(consoleURL(tlsHost), "ws://", "wss://", 1)
	conn, _, err := websocket.Dial(ctx, wss, &websocket.DialOptions{HTTPClient: client, HTTPHeader: http.Header{"Origin": {"https://" + tlsHost}}, Subprotocols: []string{"binary"}})
	if err != nil {
		t.Fatalf("wss:// through HAProxy with an https Origin: %v", err)
	}
	conn.Write(ctx, websocket.MessageBinary, []byte("over-tls\r"))
	testenv.ReadUntil(ctx, t, conn, "over-tls")
	conn.Close(websocket.StatusNormalClosure, "")
	if status := testenv.Refused(ctx, wss, &websocket.DialOptions{HTTPClient: client, HTTPHeader: http.Header{"Origin": {"https://evil.example"}}}); status != 403 {
		t.Fatalf("foreign Origin through HAProxy: %d, want 403", status)
	}
}
