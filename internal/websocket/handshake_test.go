package websocket

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"
)

// The close codes a close frame may carry (RFC 6455 section 7.4 and the
// IANA registry): 1000-1003, 1007-1014 and 3000-4999; never 1004-1006,
// 1015 or anything else.
func TestCloseCodeSendable(t *testing.T) {
	for code := range 6000 {
		want := code >= 1000 && code <= 1003 || code >= 1007 && code <= 1014 || code >= 3000 && code <= 4999
		if got := CloseCodeSendable(code); got != want {
			t.Errorf("CloseCodeSendable(%d) = %v, want %v", code, got, want)
		}
	}
}

func TestSubprotocols(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Add("Sec-WebSocket-Protocol", " binary , ,base64")
	r.Header.Add("Sec-WebSocket-Protocol", "chat")
	if got, want := Subprotocols(r), []string{"binary", "base64", "chat"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Subprotocols = %q, want %q", got, want)
	}
	if got := Subprotocols(httptest.NewRequest("GET", "/", nil)); got != nil {
		t.Errorf("no Sec-WebSocket-Protocol: %q", got)
	}
}

// hijackable is a ResponseWriter whose connection is conn, with buffered
// the bytes its server read past the request.
type hijackable struct {
	http.ResponseWriter
	conn     net.Conn
	buffered string
}

func (h hijackable) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	br := bufio.NewReader(io.MultiReader(strings.NewReader(h.buffered), h.conn))
	if h.buffered != "" {
		br.Peek(len(h.buffered))
	}
	return h.conn, bufio.NewReadWriter(br, bufio.NewWriter(h.conn)), nil
}

// recordConn is a connection that records what is written to it, or fails
// every write.
type recordConn struct {
	net.Conn
	wrote  bytes.Buffer
	fail   bool
	closed bool
}

func (c *recordConn) Write(p []byte) (int, error) {
	if c.fail {
		return 0, errors.New("connection reset")
	}
	return c.wrote.Write(p)
}
func (c *recordConn) Read([]byte) (int, error) { return 0, io.EOF }
func (c *recordConn) Close() error             { c.closed = true; return nil }

// Upgrade answers 101 with the accept key and the subprotocol chosen (none
// when empty), and hands over the bytes the client sent past its request.
func TestUpgrade(t *testing.T) {
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	for _, c := range []struct {
		subprotocol, buffered string
	}{{"", ""}, {"binary", ""}, {"", "\x81\x80abcd"}} {
		conn := &recordConn{}
		got, buffered, err := Upgrade(hijackable{httptest.NewRecorder(), conn, c.buffered}, key, c.subprotocol)
		if err != nil || got != conn {
			t.Fatalf("Upgrade: %v", err)
		}
		if string(buffered) != c.buffered || c.buffered == "" && buffered != nil {
			t.Errorf("buffered %q, want %q", buffered, c.buffered)
		}
		want := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
		if c.subprotocol != "" {
			want += "Sec-WebSocket-Protocol: " + c.subprotocol + "\r\n"
		}
		if want += "\r\n"; conn.wrote.String() != want {
			t.Errorf("answered %q, want %q", conn.wrote.String(), want)
		}
	}
	if _, _, err := Upgrade(httptest.NewRecorder(), key, ""); err == nil || !strings.Contains(err.Error(), "hijack") {
		t.Errorf("a connection that cannot be hijacked: %v", err)
	}
	conn := &recordConn{fail: true}
	if _, _, err := Upgrade(hijackable{httptest.NewRecorder(), conn, ""}, key, ""); err == nil || !conn.closed {
		t.Errorf("a failed answer: %v, connection closed %v", err, conn.closed)
	}
}

// ClientHandshake sends an RFC 6455 request, accepts only a 101 with the
// Upgrade and Connection headers and the right accept key, and returns the
// bytes the server sent past its answer.
func TestClientHandshake(t *testing.T) {
	ok := func(req *http.Request) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + AcceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
	}
	cases := []struct {
		name   string
		answer func(req *http.Request) string
		rest   string
		err    string // "": accepted
	}{
		{"accepted", ok, "", ""},
		{"accepted, a frame after", func(req *http.Request) string { return ok(req) + "\x81\x02hi" }, "\x81\x02hi", ""},
		{"refused", func(*http.Request) string { return "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n" }, "", "unexpected HTTP status 403 Forbidden"},
		{"no Upgrade", func(req *http.Request) string { return strings.Replace(ok(req), "Upgrade: websocket\r\n", "", 1) }, "", "lacks Upgrade/Connection"},
		{"no Connection", func(req *http.Request) string { return strings.Replace(ok(req), "Connection: Upgrade\r\n", "", 1) }, "", "lacks Upgrade/Connection"},
		{"wrong accept key", func(req *http.Request) string {
			return strings.Replace(ok(req), AcceptKey(req.Header.Get("Sec-WebSocket-Key")), AcceptKey("x"), 1)
		}, "", "wrong Sec-WebSocket-Accept"},
		{"not HTTP", func(*http.Request) string { return "SSH-2.0-OpenSSH\r\n" }, "", "read websocket handshake response"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			reqc := make(chan *http.Request, 1)
			go func() {
				defer server.Close()
				req, err := http.ReadRequest(bufio.NewReader(server))
				if err != nil {
					reqc <- nil
					return
				}
				reqc <- req
				io.WriteString(server, c.answer(req))
			}()
			u, _ := url.Parse("ws://docker.example:2375/containers/abc/attach/ws?stream=1")
			rest, err := ClientHandshake(client, u, http.Header{"Origin": {"http://docker.example"}})
			req := <-reqc
			if req == nil || req.Method != "GET" || req.URL.RequestURI() != "/containers/abc/attach/ws?stream=1" || req.Host != "docker.example:2375" ||
				req.Header.Get("Upgrade") != "websocket" || req.Header.Get("Connection") != "Upgrade" || req.Header.Get("Sec-WebSocket-Version") != "13" ||
				req.Header.Get("Origin") != "http://docker.example" {
				t.Fatalf("request %+v", req)
			}
			if _, err := CheckRequest(req); err != nil {
				t.Fatalf("the request is not a valid handshake: %v", err)
			}
			if c.err == "" {
				if err != nil || string(rest) != c.rest || c.rest == "" && rest != nil {
					t.Fatalf("rest %q, %v; want %q", rest, err, c.rest)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("%v, want an error saying %q", err, c.err)
			}
			var se *StatusError
			if errors.As(err, &se) != strings.Contains(c.err, "status") {
				t.Fatalf("%v: StatusError %v", err, se)
			}
		})
	}
	client, server := net.Pipe()
	server.Close()
	u, _ := url.Parse("ws://docker.example/")
	if _, err := ClientHandshake(client, u, nil); err == nil || !strings.Contains(err.Error(), "send websocket handshake") {
		t.Errorf("to a closed connection: %v", err)
	}
}

// ReadUpgradeResponse returns the status, the fields and the bytes past
// the head however the head arrives: in pieces, longer than its buffer, in
// a form only net/http reads.
func TestReadUpgradeResponse(t *testing.T) {
	long := "X-Long: " + strings.Repeat("a", 2*headBufferSize) + "\r\n"
	cases := []struct {
		name, wire string
		oneByte    bool
		status     int
		accept     string
		rest       string
	}{
		{"docker's attach", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: k=\r\n\r\n\x81\x02hi", false, 101, "k=", "\x81\x02hi"},
		{"byte by byte", "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: k=\r\n\r\n", true, 101, "k=", ""},
		{"a long head", "HTTP/1.1 101 Switching Protocols\r\n" + long + "Sec-WebSocket-Accept: k=\r\n\r\n\x81\x02hi", false, 101, "k=", "\x81\x02hi"},
		{"a folded field", "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: k=\r\nX-A: b\r\n c\r\n\r\nrest", false, 101, "k=", "rest"},
		{"bare line feeds", "HTTP/1.1 101 Switching Protocols\nSec-WebSocket-Accept: k=\n\nrest", false, 101, "k=", "rest"},
		{"a refusal with a body", "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope", false, 404, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r io.Reader = strings.NewReader(c.wire)
			if c.oneByte {
				r = iotest.OneByteReader(r)
			}
			resp, rest, err := ReadUpgradeResponse(headConn{Reader: r}, func(code int) bool { return code == 101 })
			if err != nil || resp.StatusCode != c.status || resp.Get("Sec-WebSocket-Accept") != c.accept || string(rest) != c.rest {
				t.Fatalf("%+v, rest %q, %v", resp, rest, err)
			}
		})
	}
	if _, _, err := ReadUpgradeResponse(headConn{Reader: strings.NewReader("")}, func(int) bool { return true }); err != io.ErrUnexpectedEOF {
		t.Errorf("nothing at all: %v, want net/http's %v", err, io.ErrUnexpectedEOF)
	}
	// A reset is reported once; the connection reads as ended after it.
	reset := io.MultiReader(strings.NewReader("HTTP/1.1 101 Swi"), &onceErr{err: syscall.ECONNRESET})
	if _, _, err := ReadUpgradeResponse(headConn{Reader: reset}, func(int) bool { return true }); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("a reset inside the head: %v, want the reset", err)
	}
	if _, _, err := ReadUpgradeResponse(headConn{Reader: zeroReader{}}, func(int) bool { return true }); err != io.ErrNoProgress {
		t.Errorf("reads that return nothing: %v, want %v", err, io.ErrNoProgress)
	}

	// rest is the caller's: the next answer read does not overwrite it.
	first := "HTTP/1.1 101 Switching Protocols\r\n\r\nfirst"
	_, rest, _ := ReadUpgradeResponse(headConn{Reader: strings.NewReader(first)}, func(int) bool { return true })
	ReadUpgradeResponse(headConn{Reader: strings.NewReader("HTTP/1.1 101 Switching Protocols\r\n\r\nXXXXX")}, func(int) bool { return true })
	if string(rest) != "first" {
		t.Errorf("rest %q after another answer, want %q", rest, "first")
	}
}

// A backend that answers what is not a plain head and then waits gets
// net/http's error at once, not at the deadline.
func TestReadUpgradeResponseFailsAtTheBadLine(t *testing.T) {
	for _, wire := range []string{"SSH-2.0-OpenSSH_9.2\r\n", "HTTP/1.1 101 X\r\nbad line\r\n"} {
		client, server := net.Pipe()
		go io.WriteString(server, wire) // and then nothing, with the connection open
		client.SetDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		_, _, err := ReadUpgradeResponse(client, func(int) bool { return true })
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() || time.Since(start) > 2*time.Second {
			t.Errorf("%q: %v after %v, want net/http's error at once", wire, err, time.Since(start))
		}
		client.Close()
		server.Close()
	}
}

// zeroReader's reads return nothing and no error.
type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

// onceErr's first read fails with err, the next ones with io.EOF.
type onceErr struct {
	err  error
	seen bool
}

func (r *onceErr) Read([]byte) (int, error) {
	if r.seen {
		return 0, io.EOF
	}
	r.seen = true
	return 0, r.err
}
