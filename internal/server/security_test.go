package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/auth"
	"github.com/zun-wsproxy/zun-wsproxy/internal/docker"
	"github.com/zun-wsproxy/zun-wsproxy/internal/proxy"
	"github.com/zun-wsproxy/zun-wsproxy/internal/proxyproto"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store/zunsql"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// The security suite throws hostile inputs at a proxy wired as in
// production (Zun mode on a real MariaDB and Docker engine, TLS sniffing,
// token TTL, single-use tokens, limits) while a legitimate session runs
// beside them, prints what each got, and checks that the session's bytes
// arrived intact and that nothing leaked.

// securityProxy is the proxy under attack.
type securityProxy struct {
	plain, sslOnly string // addresses: TLS-or-plain, and TLS-only
	bare           string // and a port without TLS, where sessions park
	db             *testenv.ZunDB
	victim         testenv.Container
	legit          testenv.Container
	other          testenv.Container
	capsule        testenv.Container
	execID         string
	certPool       bool
	logs           *testenv.LogBuffer
}

// nextIP hands each attack its own loopback source address, so the
// failed-authorization limit of one does not change another's answer.
var nextIP atomic.Int32

func freshIP() net.IP { n := nextIP.Add(1); return net.IPv4(127, 0, byte(1+n/250), byte(1+n%250)) }

func dialFrom(ip net.IP, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// freshToken gives the victim container a new attach token, as an attach
// call to Zun's API does (single-use tokens are cleared by use).
func (p *securityProxy) freshToken(t *testing.T) string {
	tok := testenv.NewUUID()
	if _, err := p.db.Exec(`UPDATE container SET websocket_token = ?, updated_at = UTC_TIMESTAMP() WHERE id = ?`, tok, p.victim.ID); err != nil {
		t.Fatal(err)
	}
	return tok
}

// rawRequest sends raw bytes from ip and returns the answer's status
// line, or what happened instead.
func rawRequest(ip net.IP, addr, req string) string {
	c, err := dialFrom(ip, addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "closed"
	}
	resp.Body.Close()
	out := fmt.Sprintf("HTTP %d", resp.StatusCode)
	if loc := resp.Header.Get("Location"); loc != "" {
		out += " redirect " + loc
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" && resp.StatusCode == 429 {
		out += " retry-after"
	}
	return out
}

// sameAnswer sends two requests, each from a fresh address, and reports
// whether they got the same answer: status, headers (but the request's own
// X-Session-Id and the Date) and body.
func sameAnswer(addr string, a, b string) string {
	var answers [2]string
	for i, req := range []string{a, b} {
		c, err := dialFrom(freshIP(), addr)
		if err != nil {
			return "dial: " + err.Error()
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			return "closed"
		}
		resp.Header.Del("X-Session-Id")
		resp.Header.Del("Date")
		var dump bytes.Buffer
		resp.Write(&dump)
		c.Close()
		answers[i] = dump.String()
	}
	if answers[0] != answers[1] {
		return fmt.Sprintf("%q vs %q", answers[0], answers[1])
	}
	return "same answer"
}

// open opens a valid session on the victim from a fresh address, with
// early (frame bytes) sent in the same write as the handshake, and returns
// the connection (closed when the test ends) and a reader of the proxy's
// frames, or what happened instead.
func (p *securityProxy) open(t *testing.T, addr string, early []byte, extra ...string) (net.Conn, *websocket.Reader, string) {
	c, err := dialFrom(freshIP(), addr)
	if err != nil {
		return nil, nil, "dial: " + err.Error()
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(append([]byte(testenv.Handshake("/?token="+p.freshToken(t)+"&uuid="+p.victim.UUID, extra...)), early...))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		return nil, nil, fmt.Sprintf("no upgrade (%v)", err)
	}
	return c, websocket.NewReader(br, websocket.ReaderOptions{}), ""
}

// afterUpgrade opens a valid session from a fresh address, sends raw
// frame bytes, and returns the close code the proxy answers with.
func (p *securityProxy) afterUpgrade(t *testing.T, frames []byte) string {
	c, r, failed := p.open(t, p.plain, nil)
	if c == nil {
		return failed
	}
	defer c.Close()
	c.Write(frames)
	for {
		h, err := r.NextFrame()
		if err != nil {
			return "closed without a close frame"
		}
		if h.Op == websocket.OpClose {
			var ctrl [125]byte
			pl, _ := r.ReadControl(ctrl[:])
			code, _, _ := websocket.ParseClosePayload(pl)
			return fmt.Sprintf("close %d", code)
		}
	}
}

// shellLine is a line for the victim's shell, padded with spaces to n
// bytes: it prints word-42. It begins with a newline, which ends whatever
// earlier attacks left on the shell's line.
func shellLine(word string, n int) []byte {
	line := "\necho " + word + "-$((6*7))"
	return []byte(line + strings.Repeat(" ", n-len(line)-1) + "\n")
}

// output reads the proxy's frames until what the container printed
// matches re, and returns the last match (nil if the session ended or
// went quiet first).
func output(r *websocket.Reader, screen *strings.Builder, re *regexp.Regexp) []string {
	for {
		if m := re.FindAllStringSubmatch(screen.String(), -1); m != nil {
			return m[len(m)-1]
		}
		h, err := r.NextFrame()
		if err != nil || h.Op == websocket.OpClose {
			return nil
		}
		data, err := io.ReadAll(r)
		if err != nil {
			return nil
		}
		screen.Write(data)
	}
}

// earlyData sends frames in the same write as the handshake, a pong
// among them, and reports whether each reached the container. It uses the
// port without TLS, where a session can park right after a pong.
func (p *securityProxy) earlyData(t *testing.T) string {
	// A 250-byte frame and the pong fill the reader's read-ahead exactly.
	early := append(testenv.Frame(0x82, shellLine("early1", 242), false), testenv.Frame(0x8a, nil, false)...)
	early = append(early, testenv.Frame(0x82, shellLine("early2", 300), false)...)
	c, r, failed := p.open(t, p.bare, early)
	if c == nil {
		return failed
	}
	defer c.Close()
	var screen strings.Builder
	got := 0
	for _, word := range []string{"early1-42", "early2-42"} {
		if output(r, &screen, regexp.MustCompile(word)) != nil {
			got++
		}
	}
	return fmt.Sprintf("%d of 2 frames reached the container", got)
}

// resizeBurst sends 2,000 resizes and a keystroke on the web console's
// subprotocol, and reports whether the keystroke was answered and the
// terminal took the last size.
func (p *securityProxy) resizeBurst(t *testing.T) string {
	var burst []byte
	for i := 0; i < 2000; i++ {
		burst = append(burst, testenv.Frame(0x81, fmt.Appendf(nil, `{"type":"resize","rows":%d,"cols":%d}`, 10+i%50, 20+i%90), false)...)
	}
	burst = append(burst, testenv.Frame(0x81, []byte(`{"type":"resize","rows":37,"cols":101}`), false)...)
	c, r, failed := p.open(t, p.plain, nil, "Sec-WebSocket-Protocol: "+proxy.ConsoleSubprotocol)
	if c == nil {
		return failed
	}
	defer c.Close()
	// What 2,000 resize calls to Docker one after another would take on
	// this machine now, from 20 of them: a keystroke queued behind them
	// would be answered no sooner.
	d := testenv.NewDocker(t)
	start := time.Now()
	for i := range 20 {
		d.Resize(p.victim.DockerID, 10+i, 20+i)
	}
	serial := time.Since(start) * 100
	sent := time.Now()
	c.Write(append(burst, testenv.Frame(0x82, shellLine("resized", 30), false)...))
	var screen strings.Builder
	if output(r, &screen, regexp.MustCompile(`resized-42`)) == nil {
		return "keystroke not answered"
	}
	// The keystroke must not wait for the resizes: answered in under half
	// what they would take one after another (half, so that the machine's
	// noise between the two measurements does not decide; queued behind
	// them, it took longer than all of them here).
	if d := time.Since(sent); d > serial/2 {
		return fmt.Sprintf("keystroke answered after %v, 2,000 resizes take %v", d.Round(100*time.Millisecond), serial.Round(100*time.Millisecond))
	}
	// The last size reaches Docker after the keystroke, in its own time.
	size := regexp.MustCompile(`(?m)^(\d+) (\d+)\r?$`)
	for range 50 {
		screen.Reset()
		c.Write(testenv.Frame(0x82, []byte("stty size\n"), false))
		switch m := output(r, &screen, size); {
		case m == nil:
			return "keystroke answered, stty size unanswered"
		case m[1] == "37" && m[2] == "101":
			return "keystroke answered, terminal 37x101"
		}
	}
	return "keystroke answered, terminal not at the last size asked"
}

// timedClose reports how long the proxy took to close a connection that
// sent pre (and then nothing more).
func timedClose(addr, pre string) string {
	c, err := dialFrom(freshIP(), addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	start := time.Now()
	io.WriteString(c, pre)
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	io.Copy(io.Discard, c)
	limit := 4 * time.Second // twice header_timeout
	if pre == "" {
		limit += deferAccept * time.Second // held by the kernel first (TCP_DEFER_ACCEPT)
	}
	if d := time.Since(start); d < limit {
		return "closed within header_timeout"
	} else {
		return fmt.Sprintf("held open %v", d.Round(time.Second))
	}
}

// runs sums answers up in runs of equal ones: "HTTP 401 x20, then HTTP
// 429 retry-after x10".
func runs(got []string) string {
	var out []string
	for i := 0; i < len(got); {
		j := i
		for j < len(got) && got[j] == got[i] {
			j++
		}
		out = append(out, fmt.Sprintf("%s x%d", got[i], j-i))
		i = j
	}
	return strings.Join(out, ", then ")
}

func tlsHandshake(addr string, cfg *tls.Config) string {
	c, err := dialFrom(freshIP(), addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tls.Client(c, cfg).Handshake(); err != nil {
		return "TLS refused"
	}
	return "TLS ok"
}

func TestSecuritySuite(t *testing.T) {
	db := testenv.NewZunDB(t, "security")
	d := testenv.NewDocker(t)
	p := &securityProxy{db: db, logs: &testenv.LogBuffer{}}
	// Attacks target the victim; the legitimate session has a container of
	// its own (attach output goes to every attached client), running cat on
	// a raw terminal: what goes in comes back.
	p.victim = db.InsertContainer(t, testenv.Container{DockerID: d.Run("sh"), Token: testenv.NewUUID()})
	p.legit = db.InsertContainer(t, testenv.Container{DockerID: d.Run("stty raw -echo; cat"), Token: testenv.NewUUID()})
	p.other = db.InsertContainer(t, testenv.Container{DockerID: d.Run("sh"), Token: testenv.NewUUID()})
	// A capsule's row (container_type 1) with a valid token, and the same
	// row as a plain container (type 0), whose console opens: what refuses
	// the capsule is its type.
	mustExec := func(query string, args ...any) {
		t.Helper()
		res, err := db.Exec(query, args...)
		if err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		if n, err := res.RowsAffected(); n != 1 {
			t.Fatalf("%s: %d rows (%v), want 1", query, n, err)
		}
	}
	capsuleID, capsuleTwin := testenv.NewUUID(), testenv.NewUUID()
	const capsuleRow = `INSERT INTO container (uuid, name, container_type, websocket_token, websocket_url, updated_at) VALUES (?, 'pod', ?, ?, ?, UTC_TIMESTAMP())`
	mustExec(capsuleRow, capsuleID, 1, "capsule-token", testenv.AttachURL(p.other.DockerID))
	mustExec(capsuleRow, capsuleTwin, 0, "capsule-twin-token", testenv.AttachURL(p.other.DockerID))
	stale := db.InsertContainer(t, testenv.Container{DockerID: p.other.DockerID, Token: testenv.NewUUID()})
	mustExec(`UPDATE container SET updated_at = UTC_TIMESTAMP() - INTERVAL 2 HOUR WHERE id = ?`, stale.ID)
	p.execID = d.Exec(p.other.DockerID, "sh")
	db.InsertExec(t, p.other.ID, p.execID, "exec-token", "tcp://"+testenv.DockerAddr)
	// Two containers with one name (Zun allows it), both consoles of the
	// other container's engine; the second has an exec instance too.
	twinA := db.InsertContainer(t, testenv.Container{Name: "twin", DockerID: p.other.DockerID, Token: testenv.NewUUID()})
	twinB := db.InsertContainer(t, testenv.Container{Name: "twin", DockerID: p.other.DockerID, Token: testenv.NewUUID()})
	twinExec := d.Exec(p.other.DockerID, "sh")
	db.InsertExec(t, twinB.ID, twinExec, "twin-exec-token", "tcp://"+testenv.DockerAddr)

	zdb, err := zunsql.Open(db.DSN(), zunsql.Options{Workers: testWorkers})
	if err != nil {
		t.Fatal(err)
	}
	defer zdb.Close()
	certFile, keyFile, _ := testenv.SelfSignedCert(t)
	cert, err := LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var readyChecks atomic.Int64
	// A load balancer on 127.0.200.1 sends PROXY headers to the plain
	// port; every other peer is a client.
	proxyIP := net.IPv4(127, 0, 200, 1)
	trusted := NewTrustedProxies(prefixes("127.0.200.1/32"))
	dialer := docker.NewDialer(docker.Options{APIVersion: testenv.APIVersion, Timeout: 5 * time.Second})
	srv := New(Options{
		Ready: func(ctx context.Context) error {
			readyChecks.Add(1)
			return zdb.Ping(ctx)
		},
		TrustedProxies:          trusted,
		Resolver:                auth.NewAuthorizer(zdb, auth.Options{TokenTTL: time.Hour, SingleUse: true}),
		Dialer:                  dialer,
		Origin:                  auth.OriginPolicy{BaseScheme: "ws", Allowed: []string{"dashboard.example.org"}},
		Logger:                  slog.New(slog.NewTextHandler(p.logs, nil)),
		Resizer:                 dialer,
		Session:                 proxy.Options{MaxMessage: 1 << 20, FrameTimeout: 2 * time.Second},
		ReadHeaderTimeout:       2 * time.Second,
		MaxHeaderBytes:          16 << 10,
		MaxSessions:             1000,
		MaxSessionsPerContainer: 1000,
		AuthFailureLimit:        20,
		Engine:                  engine(),
		AuthFailureWindow:       time.Minute,
		Workers:                 testWorkers,
	})
	ln, err := Listen("127.0.0.1:0", ListenOptions{TLS: cert.TLSConfig(), FirstByteTimeout: 2 * time.Second, ProxyProtocol: true, Trusted: trusted, Workers: testWorkers})
	if err != nil {
		t.Fatal(err)
	}
	lnTLS, err := Listen("127.0.0.1:0", ListenOptions{TLS: cert.TLSConfig(), SSLOnly: true, FirstByteTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lnBare, err := Listen("127.0.0.1:0", ListenOptions{FirstByteTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p.plain, p.sslOnly, p.bare = ln.Addr().String(), lnTLS.Addr().String(), lnBare.Addr().String()
	served := make(chan error, 3)
	go func() { served <- srv.Serve(ln) }()
	go func() { served <- srv.Serve(lnTLS) }()
	go func() { served <- srv.Serve(lnBare) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
		<-served
		<-served
	}()
	// A first lookup starts the pool's housekeeping before the baseline,
	// and an answer from each listener shows Serve has started (and with
	// it the poller of idle sessions).
	zdb.ContainerByUUID(context.Background(), p.victim.UUID)
	for _, addr := range []string{p.plain, p.sslOnly} {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if got := rawRequest(freshIP(), p.bare, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); got != "HTTP 200" {
		t.Fatalf("the port without TLS answered %s", got)
	}
	baseG, baseFD, basePool := countGoroutines(0), countFDs(t), zdb.Stats().OpenConnections

	// The legitimate session: random text through cat, checked at the end.
	legit := startLegit(t, p)

	victim := p.victim.UUID
	q := func(token, uuid string) string { return "/?token=" + token + "&uuid=" + uuid }
	type row struct {
		class, input, want string
		do                 func() string
	}
	req := func(path string, extra ...string) func() string {
		return func() string { return rawRequest(freshIP(), p.plain, testenv.Handshake(path, extra...)) }
	}
	raw := func(s string) func() string { return func() string { return rawRequest(freshIP(), p.plain, s) } }
	fresh := func(extra ...string) func() string {
		return func() string { return req(q(p.freshToken(t), victim), extra...)() }
	}
	guess := func(i int) string { return fmt.Sprintf("guess-%d", i) }
	guesses := func(n int, try func(i int) string) string {
		var got []string
		for i := 0; i < n; i++ {
			got = append(got, try(i))
		}
		return runs(got)
	}
	// What the load balancer sends first: a PROXY line naming a client,
	// or a LOCAL header (its own request, as an HTTP-mode balancer's
	// X-Forwarded-For would be).
	proxyLine := func(client string) string { return fmt.Sprintf("PROXY TCP4 %s 127.0.0.1 40000 6784\r\n", client) }
	proxyLine6 := func(client string) string { return fmt.Sprintf("PROXY TCP6 %s ::1 40000 6784\r\n", client) }
	// guessFrom sends a wrong token as the client a PROXY line names.
	guessFrom := func(client string, i int) string {
		return rawRequest(proxyIP, p.plain, proxyLine6(client)+testenv.Handshake(q(guess(i), victim)))
	}
	local := string(proxyproto.Header{Version: 2, Command: proxyproto.Local}.Append(nil))
	bigHeader := "X-Junk: " + strings.Repeat("a", 20<<10)
	var manyHeaders []string
	for i := 0; i < 200; i++ {
		manyHeaders = append(manyHeaders, fmt.Sprintf("X-H%d: %s", i, strings.Repeat("b", 100)))
	}
	rows := []row{
		{"handshake", "POST instead of GET", "HTTP 405", raw("POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n")},
		{"handshake", "plain GET, no upgrade", "HTTP 400", raw("GET /?token=x&uuid=y HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"handshake", "Upgrade without Connection", "HTTP 400", raw("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")},
		{"handshake", "version 8", "HTTP 426", req(q("x", victim), "Sec-WebSocket-Version: 8")},
		{"handshake", "no Sec-WebSocket-Key", "HTTP 400", raw("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")},
		{"handshake", "key not base64", "HTTP 400", raw("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: !!!!notbase64!!!!\r\n\r\n")},
		{"handshake", "key of 8 bytes", "HTTP 400", raw("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnRrZXk=\r\n\r\n")},
		{"handshake", "two keys", "HTTP 400", req(q("x", victim), "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")},
		{"handshake", "HTTP/1.0", "HTTP 400", raw("GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")},
		{"handshake", "garbage request line", "HTTP 400", raw("HELLO THERE\r\n\r\n")},
		{"handshake", "header without colon", "HTTP 400", raw("GET / HTTP/1.1\r\nHost: x\r\nbroken header\r\n\r\n")},
		{"handshake", "bad query escape", "HTTP 400", req("/?token=%zz&uuid=" + victim)},
		{"handshake", "missing uuid", "HTTP 400", req("/?token=x")},
		{"handshake", "repeated token", "HTTP 400", req(q("x", victim) + "&token=y")},
		{"handshake", "repeated uuid", "HTTP 400", req(q("x", victim) + "&uuid=" + victim)},

		{"token", "no token", "HTTP 401", req("/?uuid=" + victim)},
		{"token", "empty token", "HTTP 401", req(q("", victim))},
		{"token", "wrong token", "HTTP 401", req(q("wrong", victim))},
		{"token", "other container's token", "HTTP 401", req(q(p.other.Token, victim))},
		{"token", "exec token for attach", "HTTP 401", req(q("exec-token", p.other.UUID))},
		{"token", "attach token with an exec_id", "HTTP 401", req(q(p.other.Token, p.other.UUID) + "&exec_id=" + p.execID)},
		{"token", "unknown exec_id", "HTTP 401", req(q("exec-token", p.other.UUID) + "&exec_id=nope")},
		{"token", "unknown container uuid", "HTTP 401", req(q("x", testenv.NewUUID()))},
		{"token", "unknown container name", "HTTP 401", req(q("x", "no-such-name"))},
		{"token", "SQL injection in uuid", "HTTP 401", req(q("x", "x%27%20OR%20%271%27%3D%271"))},
		{"token", "SQL injection in token", "HTTP 401", req(q("%27%20OR%20%271%27%3D%271", victim))},
		{"token", "10 KB token", "HTTP 401", req(q(strings.Repeat("t", 10<<10), victim))},
		{"token", "NUL in uuid", "HTTP 401", req(q("x", "a%00b"))},
		{"token", "expired token (token_ttl)", "HTTP 401", req(q(stale.Token, stale.UUID))},
		{"token", "replayed single-use token", "HTTP 401", func() string {
			tok := p.freshToken(t)
			first := req(q(tok, victim))()
			return map[bool]string{true: req(q(tok, victim))(), false: "first use failed: " + first}[first == "HTTP 101"]
		}},
		{"token", "capsule with a valid token", "HTTP 401", req(q("capsule-token", capsuleID))},
		{"token", "the capsule's row as a plain container (control)", "HTTP 101", req(q("capsule-twin-token", capsuleTwin))},
		{"token", "token in other case", "HTTP 401", func() string { return req(q(strings.ToUpper(p.freshToken(t)), victim))() }},
		{"token", "token with a trailing space", "HTTP 401", func() string { return req(q(p.freshToken(t)+"%20", victim))() }},

		{"names", "shared name, wrong token", "HTTP 401", req(q("wrong", "twin"))},
		{"names", "shared name, no token", "HTTP 401", req("/?uuid=twin")},
		{"names", "shared name, wrong exec token", "HTTP 401", req(q("wrong", "twin") + "&exec_id=" + twinExec)},
		{"names", "shared vs unknown name, wrong token", "same answer", func() string {
			return sameAnswer(p.plain, testenv.Handshake(q("wrong", "twin")), testenv.Handshake(q("wrong", "no-such-name")))
		}},
		{"names", "shared vs unknown name, other's token", "same answer", func() string {
			return sameAnswer(p.plain, testenv.Handshake(q(p.other.Token, "twin")), testenv.Handshake(q(p.other.Token, "no-such-name")))
		}},
		{"names", "shared name, one twin's token (control)", "HTTP 101", req(q(twinA.Token, "twin"))},
		{"names", "shared name, the other twin's exec (control)", "HTTP 101", req(q("twin-exec-token", "twin") + "&exec_id=" + twinExec)},

		{"origin", "evil origin", "HTTP 403", fresh("Origin: http://evil.example")},
		{"origin", "origin null", "HTTP 403", fresh("Origin: null")},
		{"origin", "file:// origin", "HTTP 403", fresh("Origin: file:///etc/passwd")},
		{"origin", "userinfo trick", "HTTP 403", fresh("Origin: http://127.0.0.1@evil.example")},
		{"origin", "suffix trick", "HTTP 403", fresh("Origin: http://127.0.0.1.evil.example")},
		{"origin", "https origin on a ws:// proxy", "HTTP 403", fresh("Origin: https://127.0.0.1")},
		{"origin", "X-Forwarded-Proto https (from the trusted proxy)", "HTTP 403", func() string {
			return rawRequest(proxyIP, p.plain, local+testenv.Handshake(q(p.freshToken(t), victim), "Origin: http://127.0.0.1", "X-Forwarded-Proto: https"))
		}},
		{"origin", "malformed origin", "HTTP 403", fresh("Origin: http://%zz")},
		{"origin", "two origins in one header", "HTTP 403", fresh("Origin: http://evil.example, http://127.0.0.1")},
		{"origin", "allowed origin (control)", "HTTP 101", fresh("Origin: http://dashboard.example.org")},
		{"origin", "same-host origin (control)", "HTTP 101", fresh("Origin: http://127.0.0.1")},

		{"path", "//evil.example/%2F..", "HTTP 404", req("//evil.example/%2F..")},
		{"path", "/%2F%2Fevil.example", "HTTP 404", req("/%2F%2Fevil.example")},
		{"path", `/\evil.example`, "HTTP 404", req(`/\evil.example`)},
		{"path", "/../../etc/passwd", "HTTP 404", req("/../../etc/passwd")},
		{"path", "/console (Zun mode)", "HTTP 404", req("/console")},

		{"size", "20 KB header", "HTTP 431", req(q("x", victim), bigHeader)},
		{"size", "200 headers", "HTTP 431", req(q("x", victim), manyHeaders...)},
		{"size", "2 MB frame", "close 1009", func() string { return p.afterUpgrade(t, testenv.Frame(0x82, make([]byte, 2<<20), false)) }},
		{"size", "fragments over 1 MB", "close 1009", func() string {
			f := testenv.Frame(0x02, make([]byte, 700<<10), false)
			return p.afterUpgrade(t, append(f, testenv.Frame(0x80, make([]byte, 700<<10), false)...))
		}},
		{"size", "126-byte ping", "close 1002", func() string { return p.afterUpgrade(t, testenv.Frame(0x89, make([]byte, 126), false)) }},

		{"protocol", "unmasked frame", "close 1002", func() string { return p.afterUpgrade(t, testenv.Frame(0x82, []byte("x"), true)) }},
		{"protocol", "RSV1 set", "close 1002", func() string { return p.afterUpgrade(t, testenv.Frame(0xC2, []byte("x"), false)) }},
		{"protocol", "unknown opcode 3", "close 1002", func() string { return p.afterUpgrade(t, testenv.Frame(0x83, []byte("x"), false)) }},
		{"protocol", "fragmented ping", "close 1002", func() string { return p.afterUpgrade(t, testenv.Frame(0x09, nil, false)) }},
		{"protocol", "continuation first", "close 1002", func() string { return p.afterUpgrade(t, testenv.Frame(0x80, []byte("x"), false)) }},
		{"protocol", "new message inside a fragmented one", "close 1002", func() string {
			return p.afterUpgrade(t, append(testenv.Frame(0x02, []byte("a"), false), testenv.Frame(0x82, []byte("b"), false)...))
		}},
		{"protocol", "close with 1-byte payload", "close 1002", func() string { return p.afterUpgrade(t, testenv.Frame(0x88, []byte{3}, false)) }},
		{"protocol", "close code 999", "close 1002", func() string { return p.afterUpgrade(t, testenv.Frame(0x88, []byte{3, 0xe7}, false)) }},
		{"protocol", "close reason not UTF-8", "close 1007", func() string { return p.afterUpgrade(t, testenv.Frame(0x88, []byte{3, 0xe8, 0xff}, false)) }},
		{"protocol", "64-bit length with top bit", "close 1002", func() string {
			return p.afterUpgrade(t, []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4})
		}},
		{"protocol", "non-minimal length", "close 1002", func() string { return p.afterUpgrade(t, []byte{0x82, 0xfe, 0, 5, 1, 2, 3, 4, 1, 2, 3, 4, 5}) }},

		{"slowloris", "stops inside a frame's payload", "close 1008", func() string {
			return p.afterUpgrade(t, testenv.Frame(0x82, make([]byte, 1000), false)[:100])
		}},
		{"slowloris", "stops inside a frame header", "close 1008", func() string { return p.afterUpgrade(t, []byte{0x82, 0xfe}) }},

		{"early data", "250-byte frame, pong, 300-byte frame", "2 of 2 frames reached the container", func() string { return p.earlyData(t) }},
		{"resize", "2,000 resizes, then a keystroke", "keystroke answered, terminal 37x101", func() string { return p.resizeBurst(t) }},

		{"slowloris", "headers never finished", "closed within header_timeout", func() string { return timedClose(p.plain, "GET / HTTP/1.1\r\nHost: x\r\n") }},
		{"slowloris", "no byte at all", "closed within header_timeout", func() string { return timedClose(p.plain, "") }},
		{"slowloris", "TLS hello never sent", "closed within header_timeout", func() string { return timedClose(p.sslOnly, "\x16") }},

		{"readiness", "200 concurrent /readyz", "200 x HTTP 200, a check a second at most", func() string {
			before, start := readyChecks.Load(), time.Now()
			var wg sync.WaitGroup
			var ok atomic.Int64
			for i := 0; i < 200; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if rawRequest(freshIP(), p.plain, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n") == "HTTP 200" {
						ok.Add(1)
					}
				}()
			}
			wg.Wait()
			checks, took := readyChecks.Load()-before, time.Since(start)
			if checks > int64(took/readyFor)+2 {
				return fmt.Sprintf("%d x HTTP 200, %d checks in %v", ok.Load(), checks, took.Round(time.Millisecond))
			}
			return fmt.Sprintf("%d x HTTP 200, a check a second at most", ok.Load())
		}},

		{"brute force", "30 wrong tokens from one address", "HTTP 401 x20, then HTTP 429 retry-after x10", func() string {
			ip := freshIP()
			return guesses(30, func(i int) string { return rawRequest(ip, p.plain, testenv.Handshake(q(guess(i), victim))) })
		}},
		{"brute force", "valid token from a locked-out address", "HTTP 429 retry-after", func() string {
			ip := freshIP()
			for i := 0; i < 20; i++ {
				rawRequest(ip, p.plain, testenv.Handshake(q("guess", victim)))
			}
			return rawRequest(ip, p.plain, testenv.Handshake(q(p.freshToken(t), victim)))
		}},

		{"brute force", "30 bad-Origin handshakes, then the CLI", "HTTP 403 x30, then HTTP 101 x1", func() string {
			ip := freshIP()
			got := make([]string, 0, 31)
			for range 30 {
				got = append(got, rawRequest(ip, p.plain, testenv.Handshake(q(p.freshToken(t), victim), "Origin: http://evil.example")))
			}
			return runs(append(got, rawRequest(ip, p.plain, testenv.Handshake(q(p.freshToken(t), victim)))))
		}},
		{"brute force", "30 wrong tokens from 30 addresses of one /64", "HTTP 401 x20, then HTTP 429 retry-after x10", func() string {
			return guesses(30, func(i int) string { return guessFrom(fmt.Sprintf("2001:db8:ffff:1::%x", i+1), i) })
		}},
		{"flood", "200k /64s fail, then 30 wrong from a new /64", "in <5s; HTTP 401 x20, then HTTP 429 retry-after x10", func() string {
			// The limiter is filled directly: 200,000 real handshakes
			// would take minutes.
			start := time.Now()
			for i := range 200_000 {
				srv.failures.fail(floodClient(i).key())
			}
			filled := "in <5s; "
			if d := time.Since(start); d >= 5*time.Second {
				filled = fmt.Sprintf("in %v; ", d.Round(time.Second))
			}
			return filled + guesses(30, func(i int) string { return guessFrom("2001:db8:ffff:2::1", i) })
		}},
		{"flood", "a valid handshake while fresh /64s fail", "HTTP 101 within 1s", func() string {
			var wg sync.WaitGroup
			var failed atomic.Int64
			stop, underWay := make(chan struct{}), make(chan struct{})
			var once sync.Once
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						guessFrom(fmt.Sprintf("2001:db8:fe%02x:%x::1", w, i), i)
						if failed.Add(1) == 40 {
							once.Do(func() { close(underWay) })
						}
					}
				}()
			}
			<-underWay
			start := time.Now()
			got := rawRequest(freshIP(), p.plain, testenv.Handshake(q(p.freshToken(t), victim)))
			took := time.Since(start)
			close(stop)
			wg.Wait()
			if got == "HTTP 101" && took < time.Second {
				return "HTTP 101 within 1s"
			}
			return fmt.Sprintf("%s after %v", got, took.Round(time.Millisecond))
		}},

		{"forwarded", "client claims 30 X-Forwarded-For, 30 wrong", "HTTP 401 x20, then HTTP 429 retry-after x10", func() string {
			ip := freshIP()
			return guesses(30, func(i int) string {
				return rawRequest(ip, p.plain, testenv.Handshake(q(guess(i), victim), fmt.Sprintf("X-Forwarded-For: 198.51.100.%d", i+1)))
			})
		}},
		{"forwarded", "client named by another's X-Forwarded-For", "HTTP 101", func() string {
			attacker, client := freshIP(), freshIP()
			for i := 0; i < 20; i++ {
				rawRequest(attacker, p.plain, testenv.Handshake(q(guess(i), victim), "X-Forwarded-For: "+client.String()))
			}
			return rawRequest(client, p.plain, testenv.Handshake(q(p.freshToken(t), victim)))
		}},
		{"forwarded", "PROXY v1 header from a client", "HTTP 400", func() string {
			return rawRequest(freshIP(), p.plain, proxyLine("198.51.100.1")+testenv.Handshake(q(p.freshToken(t), victim)))
		}},
		{"forwarded", "PROXY v2 header from a client", "HTTP 400", func() string {
			h := proxyproto.Header{Version: 2, Command: proxyproto.Proxy, Transport: proxyproto.TCP4,
				Source: netip.MustParseAddrPort("198.51.100.1:40000"), Destination: netip.MustParseAddrPort("127.0.0.1:6784")}
			return rawRequest(freshIP(), p.plain, string(h.Append(nil))+testenv.Handshake(q(p.freshToken(t), victim)))
		}},
		{"forwarded", "trusted proxy without a PROXY header", "closed", func() string {
			return rawRequest(proxyIP, p.plain, testenv.Handshake(q(p.freshToken(t), victim)))
		}},
		{"forwarded", "trusted proxy, malformed PROXY header", "closed", func() string {
			return rawRequest(proxyIP, p.plain, "PROXY TCP4 198.51.100.1 127.0.0.1 040000 6784\r\n"+testenv.Handshake(q(p.freshToken(t), victim)))
		}},
		{"forwarded", "30 clients behind a trusted proxy (PROXY)", "HTTP 401 x30", func() string {
			return guesses(30, func(i int) string {
				return rawRequest(proxyIP, p.plain, proxyLine(fmt.Sprintf("198.51.100.%d", 100+i))+testenv.Handshake(q(guess(i), victim)))
			})
		}},
		{"forwarded", "30 clients behind a proxy (X-Forwarded-For)", "HTTP 401 x30", func() string {
			return guesses(30, func(i int) string {
				return rawRequest(proxyIP, p.plain, local+testenv.Handshake(q(guess(i), victim), fmt.Sprintf("X-Forwarded-For: 198.51.100.%d", 150+i)))
			})
		}},
		{"forwarded", "1 client behind a proxy, 30 wrong tokens", "HTTP 401 x20, then HTTP 429 retry-after x10", func() string {
			return guesses(30, func(i int) string {
				return rawRequest(proxyIP, p.plain, local+testenv.Handshake(q(guess(i), victim), "X-Forwarded-For: 198.51.100.200"))
			})
		}},
		{"forwarded", "client behind PROXY forging X-Forwarded-For", "HTTP 401 x20, then HTTP 429 retry-after x10", func() string {
			return guesses(30, func(i int) string {
				return rawRequest(proxyIP, p.plain, proxyLine("198.51.100.201")+testenv.Handshake(q(guess(i), victim), fmt.Sprintf("X-Forwarded-For: 198.51.100.%d", i+1)))
			})
		}},
		{"forwarded", "X-Forwarded-Proto from an untrusted peer", "HTTP 403", fresh("Origin: https://127.0.0.1", "X-Forwarded-Proto: http")},
		{"forwarded", "X-Forwarded-Proto from a trusted proxy (control)", "HTTP 101", func() string {
			return rawRequest(proxyIP, p.plain, local+testenv.Handshake(q(p.freshToken(t), victim), "Origin: https://127.0.0.1", "X-Forwarded-Proto: http"))
		}},
		{"forwarded", "valid token behind the proxy (control)", "HTTP 101", func() string {
			return rawRequest(proxyIP, p.plain, proxyLine("198.51.100.202")+testenv.Handshake(q(p.freshToken(t), victim)))
		}},

		{"tls", "plain HTTP to an ssl_only port", "HTTP 400", func() string { return rawRequest(freshIP(), p.sslOnly, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") }},
		{"tls", "plain WebSocket to an ssl_only port", "HTTP 400", func() string {
			return rawRequest(freshIP(), p.sslOnly, testenv.Handshake(q(p.freshToken(t), victim)))
		}},
		{"tls", "TLS 1.1 client", "TLS refused", func() string {
			return tlsHandshake(p.sslOnly, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		}},
		{"tls", "TLS 1.2 CBC-only client", "TLS refused", func() string {
			return tlsHandshake(p.sslOnly, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}})
		}},
		{"tls", "TLS 1.3 client (control)", "TLS ok", func() string {
			return tlsHandshake(p.sslOnly, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		}},
	}

	var table strings.Builder
	fmt.Fprintf(&table, "%-12s %-44s %-44s %s\n", "CLASS", "INPUT", "EXPECTED", "ACTUAL")
	failures := 0
	for _, r := range rows {
		got := r.do()
		mark := ""
		if got != r.want {
			mark = "  <-- FAIL"
			failures++
		}
		fmt.Fprintf(&table, "%-12s %-44s %-44s %s%s\n", r.class, r.input, r.want, got, mark)
	}
	fmt.Printf("security suite: %d inputs, %d failed\n%s", len(rows), failures, table.String())
	if failures > 0 {
		t.Errorf("%d of %d rows did not get the expected answer", failures, len(rows))
	}

	sent, received := legit.finish(t)
	fmt.Printf("legitimate session: %d bytes sent and received intact beside the attacks\n", sent)
	if sent == 0 || sent != received {
		t.Errorf("legitimate session: sent %d bytes, got back %d", sent, received)
	}
	// Nothing leaked: every attack's goroutines and descriptors are gone.
	// The database pool may have grown (a connection is a descriptor and a
	// driver goroutine); it is bounded and counted apart. The Docker API
	// client's idle connection (resizes) is closed first.
	dialer.CloseIdle()
	pool := zdb.Stats().OpenConnections - basePool
	fmt.Printf("after the suite: database pool %+d connections\n", pool)
	if g := countGoroutines(baseG + pool); g > baseG+pool {
		var dump strings.Builder
		pprof.Lookup("goroutine").WriteTo(&dump, 1)
		t.Errorf("%d goroutines after the suite, %d before (+%d pool):\n%s", g, baseG, pool, dump.String())
	}
	var fds int
	if !testenv.WaitFor(5*time.Second, func() bool { fds = countFDs(t); return fds <= baseFD+pool }) {
		t.Errorf("%d file descriptors after the suite, %d before (+%d pool)", fds, baseFD, pool)
	}
	for _, secret := range []string{p.victim.Token, p.other.Token, "exec-token", "capsule-token"} {
		if strings.Contains(p.logs.String(), secret) {
			t.Errorf("the log holds token %s", secret)
		}
	}
	if os.Getenv("ZUN_WSPROXY_SHOW_LOG") != "" {
		t.Log(p.logs.String())
	}
}

// legitSession streams random printable text through cat in the victim
// container while the attacks run, and compares what came back.
type legitSession struct {
	conn     net.Conn
	stop     chan struct{}
	done     chan struct{}
	sentHash [32]byte
	sent     int
	recvHash [32]byte
	received int
}

func startLegit(t *testing.T, p *securityProxy) *legitSession {
	t.Helper()
	c, err := dialFrom(freshIP(), p.plain)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, testenv.Handshake("/?token="+p.legit.Token+"&uuid="+p.legit.UUID))
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("legitimate session not upgraded: %v", err)
	}
	l := &legitSession{conn: c, stop: make(chan struct{}), done: make(chan struct{})}
	received := make(chan struct{})
	sentTotal := make(chan int, 1)
	go func() { // reader
		defer close(received)
		h := sha256.New()
		r := websocket.NewReader(br, websocket.ReaderOptions{})
		target := -1
		for target < 0 || l.received < target {
			select {
			case n := <-sentTotal:
				target = n
			default:
			}
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			hd, err := r.NextFrame()
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			if err != nil || hd.Op == websocket.OpClose {
				return
			}
			data, err := io.ReadAll(r)
			if err != nil {
				return
			}
			h.Write(data)
			l.received += len(data)
		}
		copy(l.recvHash[:], h.Sum(nil))
	}()
	go func() { // writer
		defer close(l.done)
		h := sha256.New()
		w := websocket.NewWriter(c, true)
		const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 "
		for {
			select {
			case <-l.stop:
				copy(l.sentHash[:], h.Sum(nil))
				sentTotal <- l.sent
				<-received
				return
			case <-time.After(20 * time.Millisecond):
			}
			var rnd [200]byte
			rand.Read(rnd[:])
			buf := make([]byte, websocket.MaxHeaderLen+len(rnd))
			for i, b := range rnd {
				buf[websocket.MaxHeaderLen+i] = alphabet[int(b)%len(alphabet)]
			}
			h.Write(buf[websocket.MaxHeaderLen:])
			l.sent += len(rnd)
			if w.WriteFrame(true, websocket.OpBinary, buf, websocket.MaxHeaderLen, len(buf)) != nil {
				copy(l.sentHash[:], h.Sum(nil))
				sentTotal <- l.sent
				<-received
				return
			}
		}
	}()
	return l
}

func (l *legitSession) finish(t *testing.T) (int, int) {
	close(l.stop)
	select {
	case <-l.done:
	case <-time.After(20 * time.Second):
		t.Error("the legitimate session hung")
	}
	l.conn.Close()
	if l.sentHash != l.recvHash {
		return l.sent, -1
	}
	return l.sent, l.received
}
