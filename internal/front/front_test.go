package front

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serveFront serves h on a loopback port through the front and net/http,
// as the proxy does, and returns the address and the front.
func serveFront(t *testing.T, h http.Handler, opts Options) (string, *Listener, *http.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.Takes == nil {
		opts.Takes = consoleOnly
	}
	fl := New(ln, h, opts)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 1 << 10}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(fl) }()
	t.Cleanup(func() {
		srv.Close()
		fl.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := fl.Wait(ctx); err != nil {
			t.Errorf("Wait: %v", err)
		}
	})
	return ln.Addr().String(), fl, srv
}

// upgrader answers WebSocket handshakes with 101 and then echoes what it
// reads, the bytes sent with the head first; anything else gets "who"
// (front or net/http: only net/http's ResponseWriter flushes) and a body.
func upgrader() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who := "front"
		if _, ok := w.(http.Flusher); ok {
			who = "net/http"
		}
		if r.Header.Get("Upgrade") != "websocket" || r.URL.Query().Get("refuse") != "" {
			w.Header().Set("X-Who", who)
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, "403 Forbidden: "+r.URL.Path+"\n")
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		go func() {
			defer conn.Close()
			io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nX-Who: "+who+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			io.Copy(conn, rw.Reader)
		}()
	}
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func readResponse(t *testing.T, br *bufio.Reader) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestFrontUpgradesAndHandsTheRestOn(t *testing.T) {
	addr, _, _ := serveFront(t, upgrader(), Options{})
	const upgrade = "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
	for _, tc := range []struct {
		name, send string
		who        string
		status     int
		echo       string // sent after the head, and echoed back after 101
		path       string // named in a 403's body
	}{
		{name: "handshake", send: "GET /?token=t HTTP/1.1\r\n" + upgrade, who: "front", status: 101},
		{name: "handshake with bytes behind it", send: "GET /websockify HTTP/1.1\r\n" + upgrade + "early", who: "front", status: 101, echo: "early"},
		{name: "handshake net/http must judge", send: "GET / HTTP/1.1\r\nX-A: \xc3\xa9\r\n" + upgrade, who: "net/http", status: 101},
		{name: "refused by the handler", send: "GET /?refuse=1 HTTP/1.1\r\n" + upgrade, who: "front", status: 403, path: "/"},
		{name: "not a handshake", send: "GET / HTTP/1.1\r\nHost: h\r\n\r\n", who: "net/http", status: 403, path: "/"},
		{name: "another path", send: "GET /healthz HTTP/1.1\r\n" + upgrade, who: "net/http", status: 101},
		{name: "head too long for the front and net/http", send: "GET / HTTP/1.1\r\nX-Long: " + strings.Repeat("a", 8000) + "\r\n" + upgrade, status: 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial(t, addr)
			if _, err := io.WriteString(c, tc.send); err != nil {
				t.Fatal(err)
			}
			resp := readResponse(t, br)
			if resp.StatusCode != tc.status || resp.Header.Get("X-Who") != tc.who {
				t.Fatalf("%s (X-Who %q), want %d from %q", resp.Status, resp.Header.Get("X-Who"), tc.status, tc.who)
			}
			if tc.status == 101 {
				io.WriteString(c, "late")
				want := tc.echo + "late"
				got := make([]byte, len(want))
				if _, err := io.ReadFull(br, got); err != nil || string(got) != want {
					t.Fatalf("echo %q (%v), want %q", got, err, want)
				}
				return
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.status == 403 && (string(body) != "403 Forbidden: "+tc.path+"\n" || !resp.Close || resp.Header.Get("Date") == "") {
				t.Errorf("body %q, close %v, Date %q", body, resp.Close, resp.Header.Get("Date"))
			}
			// Connection: close, and closed: nothing more comes.
			if n, err := br.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("after the response: %d bytes, %v; want EOF", n, err)
			}
		})
	}
}

// A connection net/http gets from the front keeps net/http's keep-alive:
// a console handshake after a health check on it is still served.
func TestFrontHandOffKeepsTheConnection(t *testing.T) {
	addr, _, _ := serveFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			io.WriteString(w, "ok\n")
			return
		}
		upgrader()(w, r)
	}), Options{})
	c, br := dial(t, addr)
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp := readResponse(t, br); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")
	if resp := readResponse(t, br); resp.StatusCode != 101 || resp.Header.Get("X-Who") != "net/http" {
		t.Fatalf("%s from %q", resp.Status, resp.Header.Get("X-Who"))
	}
}

// A head that arrives in pieces, its end split across reads, is read
// whole; one that never ends is closed at the header timeout.
func TestFrontReadsHeadsInPieces(t *testing.T) {
	addr, _, _ := serveFront(t, upgrader(), Options{HeaderTimeout: 300 * time.Millisecond})
	c, br := dial(t, addr)
	for _, piece := range []string{"GET / HT", "TP/1.1\r\nHost: h\r\nUpgrade: websocket\r", "\n\r", "\n"} {
		io.WriteString(c, piece)
		time.Sleep(20 * time.Millisecond) // separate segments
	}
	if resp := readResponse(t, br); resp.StatusCode != 101 {
		t.Fatal(resp.Status)
	}

	slow, sbr := dial(t, addr)
	io.WriteString(slow, "GET / HTTP/1.1\r\nHost: h\r\n")
	start := time.Now()
	if n, err := sbr.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a head that never ends: %d bytes, %v; want EOF", n, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed after %v, want the 300ms header timeout", d)
	}
}

// Close stops accepting, yet a head still arriving is served; Wait
// returns once it is, and cuts short one that is not done by its end.
func TestFrontCloseAndWait(t *testing.T) {
	addr, fl, _ := serveFront(t, upgrader(), Options{})
	pending, pbr := dial(t, addr)
	silent, sbr := dial(t, addr)
	io.WriteString(pending, "GET / HTTP/1.1\r\n")
	time.Sleep(50 * time.Millisecond) // both accepted
	fl.Close()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("still accepting after Close")
	}
	io.WriteString(pending, "Host: h\r\nUpgrade: websocket\r\n\r\n")
	if resp := readResponse(t, pbr); resp.StatusCode != 101 {
		t.Fatal(resp.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := fl.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with a silent connection: %v", err)
	}
	if n, err := sbr.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the silent connection: %d bytes, %v; want EOF", n, err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := fl.Wait(ctx2); err != nil {
		t.Fatalf("Wait once the silent connection is cut: %v", err)
	}
	silent.Close()
}

// A hijacked connection has no deadline left from reading its head, as
// net/http's Hijack leaves none: a session outlives the header timeout.
func TestFrontHijackClearsTheHeadDeadline(t *testing.T) {
	const timeout = 200 * time.Millisecond
	addr, _, _ := serveFront(t, upgrader(), Options{HeaderTimeout: timeout})
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")
	if resp := readResponse(t, br); resp.StatusCode != 101 || resp.Header.Get("X-Who") != "front" {
		t.Fatalf("%s from %q", resp.Status, resp.Header.Get("X-Who"))
	}
	time.Sleep(3 * timeout) // the session idles past the head's deadline
	io.WriteString(c, "late")
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "late" {
		t.Fatalf("echo after the header timeout: %q, %v", got, err)
	}
}

// Heads the front leaves to net/http at once, not at the header timeout:
// lines ending in a bare LF, which net/http reads, and part of a head and
// then the end of the stream (a client that shuts its side down too
// soon), which net/http answers 400, as it did before the front.
func TestFrontHandsUnusualHeadsOn(t *testing.T) {
	addr, _, _ := serveFront(t, upgrader(), Options{HeaderTimeout: 3 * time.Second})
	for _, c := range []struct {
		head string
		eof  bool // the client shuts its writing side after the head
		want int
	}{
		{head: "GET / HTTP/1.1\nHost: h\nUpgrade: websocket\n\n", want: 101},
		{head: "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\n", want: 101},
		{head: "GET / HTTP/1.1\r\nHost: h\nUpgrade: websocket\r\n\r\n", want: 101},
		{head: "GET /console HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n", eof: true, want: 400},
		{head: "GET /console HTTP/1.1\r\nHo", eof: true, want: 400},
		{head: "GET /cons", eof: true, want: 400},
	} {
		conn, br := dial(t, addr)
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(conn, c.head)
		if c.eof {
			conn.(*net.TCPConn).CloseWrite()
		}
		resp := readResponse(t, br)
		if resp.StatusCode != c.want || c.want == 101 && resp.Header.Get("X-Who") != "net/http" {
			t.Fatalf("%q (end of stream after it: %v): %s from %q, want %d from net/http", c.head, c.eof, resp.Status, resp.Header.Get("X-Who"), c.want)
		}
	}
}
