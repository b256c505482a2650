package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/audit"
	"github.com/zun-wsproxy/zun-wsproxy/internal/front"
	"github.com/zun-wsproxy/zun-wsproxy/internal/metrics"
	"github.com/zun-wsproxy/zun-wsproxy/internal/proxyproto"
	"github.com/zun-wsproxy/zun-wsproxy/internal/rawsock"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// refusedProxyHeaders reads the refused-connections metric of PROXY
// headers.
func refusedProxyHeaders(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if v := regexp.MustCompile(`(?m)^zun_wsproxy_handshakes_refused_total\{reason="proxy_header"\} (\S+)$`).FindStringSubmatch(w.Body.String()); v != nil {
		return v[1]
	}
	return "0"
}

// A trusted proxy's connections start with a PROXY header, which names
// the client, and then TLS or plain HTTP as usual; without a valid one
// they are refused. Other peers' bytes are HTTP or TLS, however they
// begin.
func TestListenerProxyProtocol(t *testing.T) {
	certFile, keyFile, _ := testenv.SelfSignedCert(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	proxyIP, clientIP := net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 2)
	v4 := proxyproto.Header{Version: 2, Command: proxyproto.Proxy, Transport: proxyproto.TCP4,
		Source: netip.MustParseAddrPort("192.0.2.7:45678"), Destination: netip.MustParseAddrPort("127.0.0.1:6784")}
	v6 := proxyproto.Header{Version: 2, Command: proxyproto.Proxy, Transport: proxyproto.TCP6,
		Source: netip.MustParseAddrPort("[2001:db8::7]:45678"), Destination: netip.MustParseAddrPort("[::1]:6784")}
	v1 := v4
	v1.Version = 1
	cases := []struct {
		name   string
		from   net.IP
		header string
		want   string // the handler's answer; "refused" when the connection is closed unanswered
	}{
		{"v1 from the proxy", proxyIP, string(v1.Append(nil)), "client 192.0.2.7:45678"},
		{"v2 from the proxy", proxyIP, string(v4.Append(nil)), "client 192.0.2.7:45678"},
		{"v2 IPv6 from the proxy", proxyIP, string(v6.Append(nil)), "client [2001:db8::7]:45678"},
		{"v2 LOCAL (health check)", proxyIP, string(proxyproto.Header{Version: 2, Command: proxyproto.Local}.Append(nil)), "client 127.0.0.1:"},
		{"v1 UNKNOWN", proxyIP, "PROXY UNKNOWN\r\n", "client 127.0.0.1:"},
		{"no header from the proxy", proxyIP, "", "refused"},
		{"malformed header from the proxy", proxyIP, "PROXY TCP4 192.0.2.7 127.0.0.1 045678 6784\r\n", "refused"},
		{"plain client", clientIP, "", "client 127.0.0.2:"},
		{"v1 header from a client", clientIP, string(v1.Append(nil)), "400"},
		{"v2 header from a client", clientIP, string(v4.Append(nil)), "400"},
	}
	for _, withTLS := range []bool{false, true} {
		var logs testenv.LogBuffer
		m := metrics.New()
		opts := ListenOptions{ProxyProtocol: true, Trusted: NewTrustedProxies(prefixes("127.0.0.1/32")),
			FirstByteTimeout: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Metrics: m}
		if withTLS {
			opts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		}
		ln, err := Listen("127.0.0.1:0", opts)
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "client %s tls=%v", r.RemoteAddr, r.TLS != nil)
		}), ErrorLog: slog.NewLogLogger(slog.DiscardHandler, 0)}
		go hs.Serve(ln)
		refused := 0
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s tls=%v", c.name, withTLS), func(t *testing.T) {
				conn, err := dialFrom(c.from, ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(conn, c.header)
				var rw io.ReadWriter = conn
				if withTLS && c.want != "400" {
					tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
					tc.Handshake() // fails when refused; the read below says so
					rw = tc
				}
				io.WriteString(rw, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(rw), nil)
				got := "refused"
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					got = string(body)
					if resp.StatusCode != 200 {
						got = fmt.Sprint(resp.StatusCode)
					}
				}
				if c.want == "refused" {
					refused++
				}
				if !strings.HasPrefix(got, c.want) {
					t.Fatalf("%q", got)
				}
				if c.want != "refused" && c.want != "400" && !strings.HasSuffix(got, fmt.Sprintf("tls=%v", withTLS)) {
					t.Fatalf("%q: the first TLS byte was not seen after the header", got)
				}
			})
		}
		hs.Close()
		ln.Close()
		if got := refusedProxyHeaders(t, m); got != fmt.Sprint(refused) {
			t.Errorf("tls=%v: refused metric %s, want %d", withTLS, got, refused)
		}
		if n := strings.Count(logs.String(), `"connection refused: no valid PROXY protocol header from a trusted proxy" client=127.0.0.1:`); n != refused {
			t.Errorf("tls=%v: %d refusals logged, want %d:\n%s", withTLS, n, refused, logs.String())
		}
	}
}

// A header cut short, or none at all, holds a trusted proxy's connection
// no longer than the first-byte timeout once the listener has it (one
// that sends nothing is held by the kernel for deferAccept first);
// closing the listener ends the wait at once, and is not counted as a
// refusal.
func TestListenerProxyHeaderTimeout(t *testing.T) {
	m := metrics.New()
	ln, err := Listen("127.0.0.1:0", ListenOptions{ProxyProtocol: true, Trusted: NewTrustedProxies(prefixes("127.0.0.1/32")),
		FirstByteTimeout: 300 * time.Millisecond, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for _, partial := range []string{"", "PROXY TCP4 192.0.2.7 "} {
		// From before the dial: the listener's timeout starts after it.
		start := time.Now()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, partial)
		c.SetReadDeadline(time.Now().Add(testenv.Settle))
		io.Copy(io.Discard, c)
		// Not before the timeout; after it, at once (a hang shows long
		// before testenv.Settle, what a busy machine's scheduling may add is far
		// less).
		if d := time.Since(start); d < 300*time.Millisecond || d > testenv.Settle/2 {
			t.Errorf("%q: closed after %v, want the 300ms timeout", partial, d)
		}
		c.Close()
	}
	if got := refusedProxyHeaders(t, m); got != "2" {
		t.Errorf("refused metric %s, want 2", got)
	}

	// Closing ends a wait of 10s at once.
	slow, err := Listen("127.0.0.1:0", ListenOptions{ProxyProtocol: true, Trusted: NewTrustedProxies(prefixes("127.0.0.1/32")),
		FirstByteTimeout: 10 * time.Second, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	silent, err := net.Dial("tcp", slow.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// A byte, for the kernel to hand the connection to the listener
	// (TCP_DEFER_ACCEPT): one that sends none waits in the kernel, where
	// the listener's Close drops it without a word.
	io.WriteString(silent, "PROXY ")
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, silent); close(done) }()
	// Nothing tells when the listener has begun to read the header; if
	// Close comes first, the connection is reset from the backlog, which
	// ends it at once too.
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	slow.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	if d := time.Since(start); d > 5*time.Second { // half the header's timeout
		t.Errorf("Close waited %v for a silent proxy's header", d)
	}
	if got := refusedProxyHeaders(t, m); got != "2" {
		t.Errorf("refused metric %s after Close, want 2", got)
	}
}

// Sessions behind a proxy that sends PROXY headers run as any other, on
// the socket itself (the listener's wrapper, which names the client, is
// dropped), and their audit records and log lines name the client the
// header names.
func TestProxyProtocolSession(t *testing.T) {
	dir := t.TempDir()
	auditLog, err := audit.Open(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer auditLog.Close()
	var logs testenv.LogBuffer
	trusted := NewTrustedProxies(prefixes("127.0.0.1/32"))
	_, url := serveShell(t, "proxyproto", func(o *Options, l *ListenOptions) {
		o.Audit, o.TrustedProxies, o.Logger = auditLog, trusted, slog.New(slog.NewTextHandler(&logs, nil))
		l.ProxyProtocol, l.Trusted = true, trusted
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, h := range []proxyproto.Header{
		{Version: 1, Command: proxyproto.Proxy, Transport: proxyproto.TCP4,
			Source: netip.MustParseAddrPort("192.0.2.7:45678"), Destination: netip.MustParseAddrPort("127.0.0.1:6784")},
		{Version: 2, Command: proxyproto.Proxy, Transport: proxyproto.TCP6,
			Source: netip.MustParseAddrPort("[2001:db8::7]:45679"), Destination: netip.MustParseAddrPort("[::1]:6784")},
	} {
		header := h.Append(nil)
		client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				_, err = c.Write(header)
			}
			return c, err
		}}}
		conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client, Subprotocols: []string{"binary"}})
		if err != nil {
			t.Fatalf("version %d: %v", h.Version, err)
		}
		testenv.Echo(t, conn, fmt.Sprintf("v%d", h.Version))
		conn.Close(websocket.StatusNormalClosure, "")
		want := h.Source.String()
		var rec audit.Record
		if !testenv.WaitFor(5*time.Second, func() bool {
			data, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			return len(lines) == i+1 && json.Unmarshal([]byte(lines[i]), &rec) == nil
		}) {
			t.Fatalf("version %d: no audit record", h.Version)
		}
		if rec.Client != want {
			t.Errorf("version %d: audit record's client %q, want %q", h.Version, rec.Client, want)
		}
		for _, msg := range []string{"session started", "session ended"} {
			if !regexp.MustCompile(`msg="` + msg + `" session=` + rec.Session + ` .*client=` + regexp.QuoteMeta(want) + ` `).MatchString(logs.String()) {
				t.Errorf("version %d: %q not logged with client=%s:\n%s", h.Version, msg, want, logs.String())
			}
		}
	}
}

func TestUnwrap(t *testing.T) {
	dialed, accepted := testenv.SocketPair(t, "tcp")
	defer dialed.Close()
	p := &proxiedConn{Conn: accepted, remote: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 1}}
	if unwrap(p) != accepted || unwrap(accepted) != accepted {
		t.Error("unwrap does not give back the socket")
	}
	// The byte that told plain from TLS, once read again, and the name.
	if unwrap(front.NewReplay(p, nil)) != accepted || unwrap(front.NewReplay(accepted, nil)) != accepted {
		t.Error("unwrap does not give back the socket under the sniffed byte")
	}
	if pending := front.NewReplay(p, []byte("G")); unwrap(pending) != pending {
		t.Error("unwrap drops a byte still to be read")
	}
	if p.RemoteAddr().String() != "192.0.2.7:1" {
		t.Errorf("remote address %s", p.RemoteAddr())
	}
}

// The listener reads the trusted set at each connection: a change (SIGHUP)
// applies to the next one.
func TestListenerTrustedProxiesChange(t *testing.T) {
	trusted := NewTrustedProxies(prefixes("127.0.0.1/32"))
	ln, err := Listen("127.0.0.1:0", ListenOptions{ProxyProtocol: true, Trusted: trusted})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.RemoteAddr) })}
	go hs.Serve(ln)
	defer hs.Close()
	get := func(from net.IP, header string) string {
		c, err := dialFrom(from, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, header+"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "refused"
		}
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	line := "PROXY TCP4 192.0.2.7 127.0.0.1 45678 6784\r\n"
	if got := get(net.IPv4(127, 0, 0, 1), ""); got != "refused" {
		t.Errorf("trusted peer without a header: %q", got)
	}
	trusted.Set(prefixes("127.0.0.9/32"))
	if got := get(net.IPv4(127, 0, 0, 1), ""); !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("no longer trusted, without a header: %q", got)
	}
	if got := get(net.IPv4(127, 0, 0, 9), line); got != "192.0.2.7:45678" {
		t.Errorf("newly trusted, with a header: %q", got)
	}
}

// listenerKind is a kind of listener, and what a client sends on it
// before HTTP.
type listenerKind struct {
	name   string
	listen ListenOptions
	header []byte
}

// proxyHeader is a PROXY protocol header naming client 192.0.2.7:45678.
var proxyHeader = proxyproto.Header{Version: 2, Command: proxyproto.Proxy, Transport: proxyproto.TCP4,
	Source: netip.MustParseAddrPort("192.0.2.7:45678"), Destination: netip.MustParseAddrPort("127.0.0.1:6784")}

// listenerKinds are the kinds of listener plain clients may reach: a plain
// port, a port with a certificate (which tells TLS from plain by the first
// byte), a PROXY-protocol one trusting 127.0.0.1 (whose clients send
// proxyHeader first), and both.
func listenerKinds(t *testing.T) []listenerKind {
	t.Helper()
	certFile, keyFile, _ := testenv.SelfSignedCert(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	withTLS := &tls.Config{Certificates: []tls.Certificate{cert}}
	trusted := NewTrustedProxies(prefixes("127.0.0.1/32"))
	return []listenerKind{
		{"plain port", ListenOptions{}, nil},
		{"port with a certificate", ListenOptions{TLS: withTLS}, nil},
		{"PROXY protocol", ListenOptions{ProxyProtocol: true, Trusted: trusted}, proxyHeader.Append(nil)},
		{"PROXY protocol, port with a certificate", ListenOptions{TLS: withTLS, ProxyProtocol: true, Trusted: trusted}, proxyHeader.Append(nil)},
	}
}

// acceptOne listens as opts says, connects, sends first and returns the
// connection the listener hands on; all are closed when the test ends.
func acceptOne(t *testing.T, opts ListenOptions, first []byte) net.Conn {
	t.Helper()
	ln, err := Listen("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	client.Write(first)
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Every kind of listener hands net/http a plain connection whose reads and
// writes are raw system calls (the request read and the handshake's
// answer), which unwrap then takes off for the session.
func TestListenersHandOutRawConnections(t *testing.T) {
	for _, tc := range listenerKinds(t) {
		t.Run(tc.name, func(t *testing.T) {
			c := acceptOne(t, tc.listen, append(tc.header, "GET / HTTP/1.1\r\n"...))
			under := c
			if p, ok := c.(*proxiedConn); ok {
				under = p.Conn
			}
			if _, ok := under.(*rawsock.Conn); !ok {
				t.Fatalf("accepted a %T, want raw reads and writes", under)
			}
			if _, ok := unwrap(c).(*net.TCPConn); !ok {
				t.Fatalf("unwrap gives a %T, want the socket", unwrap(c))
			}
		})
	}
}

// A request whose headers are too large is answered 431 by net/http,
// which then half-closes the socket before it lets go of it, so that the
// client reads the answer to its end rather than into a reset. It has to
// find the half-close on the connection the listener hands it.
func TestListenerTooLargeHeaderAnswerEnds(t *testing.T) {
	for _, tc := range []listenerKind{
		{"plain port", ListenOptions{}, nil},
		{"PROXY protocol, a direct client", ListenOptions{ProxyProtocol: true, Trusted: NewTrustedProxies(prefixes("127.0.0.2/32"))}, nil},
		{"PROXY protocol, a relayed client", ListenOptions{ProxyProtocol: true, Trusted: NewTrustedProxies(prefixes("127.0.0.1/32"))}, proxyHeader.Append(nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := Listen("127.0.0.1:0", tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			t.Parallel()
			closed := make(chan struct{})
			hs := &http.Server{MaxHeaderBytes: 1 << 10, Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}),
				ConnState: func(_ net.Conn, s http.ConnState) {
					if s == http.StateClosed {
						close(closed)
					}
				}}
			go hs.Serve(ln)
			defer hs.Close()
			// The connection's goroutine is done only once it has closed.
			defer func() { <-closed }()
			client, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			// More than net/http reads of it: the rest is left unread.
			req := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n"
			go client.Write(append(tc.header, req...))
			// Without the half-close the answer ends 500ms later, in the
			// reset of closing with input unread.
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(client)
			if !strings.HasPrefix(string(got), "HTTP/1.1 431 ") || err != nil {
				t.Fatalf("client read %q, then %v; want the 431 answer to its end", got, err)
			}
		})
	}
}
