package websocket

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coder "github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// The Reader against another implementation: github.com/coder/websocket
// reads the same bytes, as a server (client frames) or as a client
// (server frames), and both must see the same messages and the same end.

// message is a data message, reassembled from its frames.
type message struct {
	op   Opcode
	data string
}

func (m message) String() string { return fmt.Sprintf("%v %q", m.op, m.data) }

// ends of a stream of frames
const (
	endError = "error" // a protocol error, or the bytes ran out
)

func closeEnd(code int, reason string) string { return fmt.Sprintf("close %d %q", code, reason) }

// stream is what readMessages makes of a stream of frames.
type stream struct {
	msgs []message
	end  string
	// strict: the end is by a rule of RFC 6455 that
	// github.com/coder/websocket does not enforce (lengths in minimal
	// form, no masked frames from servers, UTF-8 close reasons).
	strict bool
	// cut is the message an error ended the stream in, as far as it came.
	cut *message
}

// readMessages reads wire with a Reader and reassembles its messages as
// RFC 6455 section 5.4 has them (what the proxy's pumps do with frames),
// until a close frame or an error.
func readMessages(wire []byte, fromClient bool) (s stream) {
	r := NewReader(bytes.NewReader(wire), ReaderOptions{FromClient: fromClient})
	var cur *message
	var ctrl [125]byte
	s.end = endError
	for {
		h, err := r.NextFrame()
		if err != nil {
			var pe *ProtocolError
			s.strict = errors.As(err, &pe) && (strings.Contains(pe.Reason, "minimal form") || pe.Reason == "masked frame from a server")
			s.cut = cur
			return s
		}
		if h.Op.IsControl() {
			p, err := r.ReadControl(ctrl[:])
			switch {
			case err != nil:
				s.cut = cur
				return s
			case h.Op != OpClose:
				continue
			}
			code, reason, err := ParseClosePayload(p)
			if err != nil {
				s.strict = strings.Contains(err.Error(), "not UTF-8")
				return s
			}
			s.end = closeEnd(code, reason)
			return s
		}
		switch {
		case h.Op == OpContinuation && cur == nil:
			return s // a continuation with no message to continue
		case h.Op != OpContinuation && cur != nil:
			return s // a new message inside a fragmented one
		case cur == nil:
			cur = &message{op: h.Op}
		}
		data, err := io.ReadAll(r)
		cur.data += string(data)
		if err != nil {
			s.cut = cur
			return s
		}
		if h.Fin {
			s.msgs = append(s.msgs, *cur)
			cur = nil
		}
	}
}

// wireConn is a connection whose peer sends wire and then nothing (EOF);
// what is written to it is dropped. As a client's connection it first
// answers the opening handshake.
type wireConn struct {
	mu        sync.Mutex
	rd        io.Reader
	handshake chan struct{} // closed once the client's request is written
	req       bytes.Buffer
}

func (c *wireConn) Read(p []byte) (int, error) {
	if c.handshake != nil {
		<-c.handshake
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rd.Read(p)
}

func (c *wireConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.handshake != nil {
		select {
		case <-c.handshake:
		default:
			c.req.Write(p)
			if r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(c.req.Bytes()))); err == nil {
				c.rd = io.MultiReader(strings.NewReader("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
					"Sec-WebSocket-Accept: "+AcceptKey(r.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n"), c.rd)
				close(c.handshake)
			}
		}
	}
	return len(p), nil
}

func (*wireConn) Close() error                     { return nil }
func (*wireConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (*wireConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (*wireConn) SetDeadline(time.Time) error      { return nil }
func (*wireConn) SetReadDeadline(time.Time) error  { return nil }
func (*wireConn) SetWriteDeadline(time.Time) error { return nil }

// coderMessages reads wire with github.com/coder/websocket: as the server
// when fromClient, else as the client.
func coderMessages(t *testing.T, wire []byte, fromClient bool) (msgs []message, end string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := &wireConn{rd: bytes.NewReader(wire)}
	var c *coder.Conn
	var err error
	if fromClient {
		r := httptest.NewRequest("GET", "/", nil)
		testenv.UpgradeHeaders(r.Header)
		c, err = coder.Accept(hijackable{ResponseWriter: httptest.NewRecorder(), conn: conn}, r, nil)
	} else {
		conn.handshake = make(chan struct{})
		client := &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }}}
		c, _, err = coder.Dial(ctx, "ws://peer/", &coder.DialOptions{HTTPClient: client})
	}
	if err != nil {
		t.Fatalf("github.com/coder/websocket takes no connection: %v", err)
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			var ce coder.CloseError
			if errors.As(err, &ce) {
				return msgs, closeEnd(int(ce.Code), ce.Reason)
			}
			if ctx.Err() != nil {
				t.Fatalf("github.com/coder/websocket hung on %q", wire)
			}
			return msgs, endError
		}
		msgs = append(msgs, message{op: Opcode(typ), data: string(data)})
	}
}

// FuzzReader: the messages the Reader's frames make, and how the stream
// ends (a close frame's code and reason, or an error), are
// github.com/coder/websocket's on the same bytes, but where the Reader
// holds to a rule the other does not (the messages before are the same),
// and where the stream ends with an error inside a message: the other may
// return that message as if it were whole, as far as it came (it takes
// the connection's EOF, met at the start of a read, or inside a header it
// reads whole before it judges it, for the message's end). Control frames are never longer than 125 bytes, and no
// more payload is read than a frame holds.
func FuzzReader(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'h' ^ 1, 'e' ^ 2, 'l' ^ 3, 'l' ^ 4, 'o' ^ 1}, true)
	f.Add([]byte{0x82, 0x7e, 0x01, 0x00}, false)
	f.Add([]byte{0x88, 0x02, 0x03, 0xe8}, false)
	f.Add([]byte{0x01, 0x81, 0, 0, 0, 0, 'a', 0x89, 0x80, 0, 0, 0, 0, 0x80, 0x81, 0, 0, 0, 0, 'b', 0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8}, true)
	f.Fuzz(func(t *testing.T, wire []byte, fromClient bool) {
		s := readMessages(wire, fromClient)
		other, otherEnd := coderMessages(t, wire, fromClient)
		want, wantEnd := s.msgs, s.end
		if s.cut != nil && len(other) == len(s.msgs)+1 {
			want = append(want, *s.cut)
		}
		if s.strict {
			other, want = other[:min(len(other), len(s.msgs))], s.msgs
			otherEnd, wantEnd = "", ""
		}
		if fmt.Sprint(other) != fmt.Sprint(want) || otherEnd != wantEnd {
			t.Fatalf("%q (from a client: %v): messages %v, end %s (cut short: %v, strict: %v); github.com/coder/websocket: %v, end %s",
				wire, fromClient, s.msgs, s.end, s.cut, s.strict, other, otherEnd)
		}

		r := NewReader(bytes.NewReader(wire), ReaderOptions{FromClient: fromClient, MaxPayload: 1 << 16})
		var ctrl [125]byte
		for i := 0; i < 100; i++ {
			h, err := r.NextFrame()
			if err != nil {
				return
			}
			if h.Op.IsControl() {
				if h.Length > 125 {
					t.Fatalf("control frame of %d bytes accepted", h.Length)
				}
				if _, err := r.ReadControl(ctrl[:]); err != nil {
					return
				}
				continue
			}
			n, _ := io.Copy(io.Discard, r)
			if n > h.Length {
				t.Fatalf("read %d bytes of a %d-byte frame", n, h.Length)
			}
		}
	})
}

// FuzzUpgradeHead holds the plain head reader to net/http's: a head it
// takes, net/http takes too, with the same status and the same values for
// the fields a handshake looks at; and ReadUpgradeResponse answers as
// net/http does, whichever reader it used, with the bytes past the head
// left to the caller (rest, then the connection) as net/http leaves them.
func FuzzUpgradeHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi"))
	f.Add([]byte("HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 200 OK\r\nupgrade:  WebSocket , h2c\r\nX-Folded: a\r\n b\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!"))
	f.Add([]byte("HTTP/1.1 101\n\n"))
	f.Add([]byte("HTTP/1.1 101 X\r\nTransfer-Encoding: gzip\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 101 X\r\nTrailer: Content-Length\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 403 X\r\n\r\nbody"))
	names := []string{"Upgrade", "Connection", "Sec-WebSocket-Accept", "Content-Type"}
	f.Fuzz(func(t *testing.T, wire []byte) {
		upgraded := func(code int) bool { return code == 101 || code == 200 }
		hr := bytes.NewReader(wire)
		br := bufio.NewReader(hr)
		want, wantErr := http.ReadResponse(br, nil)
		wantLeft := ""
		if wantErr == nil {
			wantLeft = string(wire[len(wire)-br.Buffered()-hr.Len():])
		}
		r := bytes.NewReader(wire)
		got, rest, err := ReadUpgradeResponse(headConn{Reader: r}, upgraded)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("%q: %v, net/http %v", wire, err, wantErr)
		}
		if err != nil {
			return
		}
		if got.StatusCode != want.StatusCode || got.Status != want.Status {
			t.Fatalf("%q: status %d %q, net/http %d %q", wire, got.StatusCode, got.Status, want.StatusCode, want.Status)
		}
		for _, n := range names {
			if got.Get(n) != want.Header.Get(n) {
				t.Fatalf("%q: %s %q, net/http %q", wire, n, got.Get(n), want.Header.Get(n))
			}
		}
		for _, tok := range []string{"websocket", "upgrade", "tcp"} {
			if got.HasToken("Upgrade", tok) != headerHasToken(want.Header, "Upgrade", tok) || got.HasToken("Connection", tok) != headerHasToken(want.Header, "Connection", tok) {
				t.Fatalf("%q: token %q read differently", wire, tok)
			}
		}
		if !upgraded(got.StatusCode) {
			if rest != nil {
				t.Fatalf("%q: rest %q after a status that does not upgrade", wire, rest)
			}
			return
		}
		left, _ := io.ReadAll(r)
		if string(rest)+string(left) != wantLeft {
			t.Fatalf("%q: rest %q and %q unread, net/http leaves %q", wire, rest, left, wantLeft)
		}
	})
}

// headConn is a connection that reads from Reader.
type headConn struct {
	net.Conn
	io.Reader
}

func (c headConn) Read(p []byte) (int, error) { return c.Reader.Read(p) }
