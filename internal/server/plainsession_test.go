package server

import (
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/proxy"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// A plain ws:// session runs on the socket itself on every kind of
// listener, a port with a certificate (which tells TLS from plain by the
// first byte) and a PROXY-protocol one included: it parks while idle
// (holding no goroutine), its pumps make raw system calls, and its
// lingering close half-closes (the client sees FIN right after the close
// frame, while the proxy still reads what the client sends).
func TestPlainSessionOnEveryListener(t *testing.T) {
	cases := listenerKinds(t)
	trusted := cases[2].listen.Trusted
	// One server serves a listener of each kind; the first is
	// serveShell's, the others are served here and waited for after its
	// Shutdown (cleanups run last first).
	var served []chan error
	t.Cleanup(func() {
		for _, ch := range served {
			<-ch
		}
	})
	srv, url := serveShell(t, "plainsession", func(o *Options, l *ListenOptions) {
		o.TrustedProxies = trusted
		// A close that cannot half-close would wait for the client up
		// to 30s.
		o.Session = proxy.Options{IdleAfter: 500 * time.Millisecond, CloseTimeout: 30 * time.Second}
		*l = cases[0].listen
	})
	u, _ := neturl.Parse(url)
	addrs := []string{u.Host}
	for _, c := range cases[1:] {
		ln, err := Listen("127.0.0.1:0", c.listen)
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan error, 1)
		go func() { ch <- srv.Serve(ln) }()
		served = append(served, ch)
		addrs = append(addrs, ln.Addr().String())
	}
	open := func(addr string, header []byte) (net.Conn, *websocket.Reader, *websocket.Writer) {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		conn.Write(header)
		rest, err := websocket.ClientHandshake(conn, u, http.Header{"Sec-WebSocket-Protocol": {"binary"}})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		r, w := websocket.NewReader(conn, websocket.ReaderOptions{Buffered: rest}), websocket.NewWriter(conn, true)
		send(t, w, websocket.OpBinary, []byte("echo ok-$((40+2))\n"))
		var out strings.Builder
		for !strings.Contains(out.String(), "ok-42") {
			h, err := r.NextFrame()
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			data, _ := io.ReadAll(r)
			if h.Op == websocket.OpBinary {
				out.Write(data)
			}
		}
		return conn, r, w
	}
	// A first session warms the pools up before the baseline.
	conn, _, _ := open(addrs[0], nil)
	conn.Close()
	testenv.WaitFor(5*time.Second, func() bool { return srv.Sessions() == 0 })
	baseG := countGoroutines(0)

	// Subtests would run on goroutines of their own: the cases run here.
	for i, c := range cases {
		conn, r, w := open(addrs[i], c.header)
		if engine() == "loop" {
			// On the loop engine the session's sockets are the loop's
			// from the start (served with raw reads, no pump goroutine).
			srv.loopsOnce.Do(func() {}) // Serve started them: seen from here
			if !testenv.WaitFor(5*time.Second, func() bool { return srv.loops != nil && srv.loops.Registered() == 2 }) {
				t.Errorf("%s: the session's sockets are not served on a loop", c.name)
			}
		} else {
			var stack string
			if !testenv.WaitFor(time.Second, func() bool {
				stack = clientPumpStack()
				return strings.Contains(stack, "rawsock.(*Conn).Read")
			}) {
				t.Errorf("%s: the client side is not read with raw system calls:\n%s", c.name, stack)
			}
			if !testenv.WaitFor(5*time.Second, func() bool { return srv.poller.Parked() == 2 }) {
				t.Errorf("%s: %d directions parked while idle, want 2", c.name, srv.poller.Parked())
			}
		}
		if g := countGoroutines(baseG); g > baseG {
			t.Errorf("%s: %d goroutines while idle, baseline %d", c.name, g, baseG)
		}

		send(t, w, websocket.OpClose, []byte{0x03, 0xe8})
		for {
			h, err := r.NextFrame()
			if err != nil {
				t.Fatalf("%s: no close frame: %v", c.name, err)
			}
			io.ReadAll(r)
			if h.Op == websocket.OpClose {
				break
			}
		}
		// The client keeps its socket open: only a half-close ends
		// what it reads now.
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := conn.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s: after the close frame: %d bytes, %v; want EOF (FIN)", c.name, n, err)
		}
		conn.Close()
		testenv.WaitFor(5*time.Second, func() bool { return srv.Sessions() == 0 })
	}
}

// send writes one client frame.
func send(t *testing.T, w *websocket.Writer, op websocket.Opcode, p []byte) {
	t.Helper()
	buf := append(make([]byte, websocket.MaxHeaderLen), p...)
	if err := w.WriteFrame(true, op, buf, websocket.MaxHeaderLen, len(buf)); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// clientPumpStack is the stack of the goroutine reading a session's
// client, if one is.
func clientPumpStack() string {
	buf := make([]byte, 1<<20)
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "proxy.(*Session).pumpClient") {
			return g
		}
	}
	return ""
}
