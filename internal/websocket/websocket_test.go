package websocket

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestMaskMatchesBytewise(t *testing.T) {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	for _, n := range []int{0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 39, 40, 63, 64, 65, 100, 4099} {
		for pos := 0; pos < 4; pos++ {
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(i * 7)
			}
			want := append([]byte(nil), p...)
			for i := range want {
				want[i] ^= key[(pos+i)&3]
			}
			next := mask(key, pos, p)
			if !bytes.Equal(p, want) {
				t.Fatalf("n=%d pos=%d: got %x want %x", n, pos, p, want)
			}
			if next != (pos+n)&3 {
				t.Fatalf("n=%d pos=%d: next %d", n, pos, next)
			}
		}
	}
}

// frameBuf returns a buffer with header room in front of payload.
func frameBuf(payload []byte) ([]byte, int, int) {
	buf := make([]byte, MaxHeaderLen+len(payload))
	copy(buf[MaxHeaderLen:], payload)
	return buf, MaxHeaderLen, len(buf)
}

func TestRoundTrip(t *testing.T) {
	for _, clientRole := range []bool{false, true} {
		for _, n := range []int{0, 1, 125, 126, 65535, 65536, 200000} {
			var wire bytes.Buffer
			w := NewWriter(&wire, clientRole)
			payload := bytes.Repeat([]byte("αβγ"), n/6+1)[:n]
			buf, off, end := frameBuf(payload)
			if err := w.WriteFrame(true, OpBinary, buf, off, end); err != nil {
				t.Fatal(err)
			}
			r := NewReader(&wire, ReaderOptions{FromClient: clientRole})
			h, err := r.NextFrame()
			if err != nil {
				t.Fatalf("client=%v n=%d: %v", clientRole, n, err)
			}
			if h.Op != OpBinary || !h.Fin || h.Length != int64(n) || h.Masked != clientRole {
				t.Fatalf("client=%v n=%d: header %+v", clientRole, n, h)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("client=%v n=%d: payload differs", clientRole, n)
			}
		}
	}
}

func TestReaderRejects(t *testing.T) {
	// masked builds a masked frame header with extended length bytes ext
	// and a one-byte payload.
	masked := func(b0, b1 byte, ext ...byte) []byte {
		h := append([]byte{b0, b1 | 0x80}, ext...)
		return append(h, 1, 2, 3, 4, 'a')
	}
	cases := []struct {
		name string
		wire []byte
		code int
	}{
		{"unmasked from client", []byte{0x82, 0x01, 'a'}, CloseProtocolError},
		{"reserved bit", masked(0xC2, 0x01), CloseProtocolError},
		{"unknown opcode", masked(0x83, 0x00), CloseProtocolError},
		{"fragmented ping", masked(0x09, 0x00), CloseProtocolError},
		{"long ping", masked(0x89, 126, 0, 200), CloseProtocolError},
		{"non-minimal 16-bit length", masked(0x82, 126, 0, 10), CloseProtocolError},
		{"64-bit length with top bit", masked(0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0), CloseProtocolError},
		{"too big", masked(0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0), CloseTooBig},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(c.wire), ReaderOptions{FromClient: true, MaxPayload: 1 << 20})
			_, err := r.NextFrame()
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Code != c.code {
				t.Fatalf("got %v, want ProtocolError %d", err, c.code)
			}
		})
	}
}

func TestReaderBufferedPrefixAndSplitReads(t *testing.T) {
	var wire bytes.Buffer
	w := NewWriter(&wire, true)
	for _, s := range []string{"one", strings.Repeat("x", 300), "three"} {
		buf, off, end := frameBuf([]byte(s))
		w.WriteFrame(true, OpText, buf, off, end)
	}
	all := wire.Bytes()
	// The first 5 bytes were read during the handshake; the rest arrives a
	// byte at a time.
	r := NewReader(&oneByteReader{all[5:]}, ReaderOptions{FromClient: true, Buffered: all[:5]})
	for _, want := range []string{"one", strings.Repeat("x", 300), "three"} {
		if _, err := r.NextFrame(); err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(r)
		if string(got) != want {
			t.Fatalf("got %q want %q", got, want)
		}
	}
	if _, err := r.NextFrame(); err != io.EOF {
		t.Fatalf("after last frame: %v, want EOF", err)
	}
}

// Bytes read along with the handshake are the Reader's until returned, so
// Buffered counts them: a relay that waits on the socket only when
// Buffered is 0 must not wait with a frame in hand, however many bytes
// came with the handshake.
func TestReaderBufferedCountsHandshakeBytes(t *testing.T) {
	// A 250-byte frame and a pong fill the 256-byte read-ahead exactly.
	var wire bytes.Buffer
	w := NewWriter(&wire, true)
	var ends []int // where each frame ends on the wire
	for _, n := range []int{242, -1, 300, 5} {
		if n < 0 {
			w.WriteControl(OpPong, nil)
		} else {
			buf, off, end := frameBuf(bytes.Repeat([]byte{'x'}, n))
			w.WriteFrame(true, OpBinary, buf, off, end)
		}
		ends = append(ends, wire.Len())
	}
	all := wire.Bytes()
	for _, early := range []int{10, 256, 300, len(all)} {
		t.Run(fmt.Sprintf("early=%d", early), func(t *testing.T) {
			src := &byteCounter{r: &stepReader{r: bytes.NewReader(all[early:]), step: 100}}
			r := NewReader(src, ReaderOptions{FromClient: true, Buffered: all[:early]})
			if got := r.Buffered(); got != early {
				t.Fatalf("Buffered() = %d before any read, want the %d bytes of the handshake", got, early)
			}
			buf := make([]byte, 300+ReadAhead)
			for i, end := range ends {
				h, err := r.NextFrame()
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if n, err := r.ReadChunk(buf, int(h.Length)); n != int(h.Length) || err != nil {
					t.Fatalf("frame %d: read %d of %d bytes, %v", i, n, h.Length, err)
				}
				// Held: what was read, from the handshake and the
				// connection, past the frames returned.
				if got, want := r.Buffered(), early+src.n-end; got != want {
					t.Fatalf("after frame %d Buffered() = %d, want %d", i, got, want)
				}
			}
		})
	}
}

type byteCounter struct {
	r io.Reader
	n int
}

func (c *byteCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

type oneByteReader struct{ b []byte }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(o.b) == 0 {
		return 0, io.EOF
	}
	p[0] = o.b[0]
	o.b = o.b[1:]
	return 1, nil
}

func TestCloseFrames(t *testing.T) {
	var wire bytes.Buffer
	w := NewWriter(&wire, false)
	long := strings.Repeat("€", 60) // 180 bytes: must be cut at a character
	if err := w.WriteClose(CloseNormal, long); err != nil {
		t.Fatal(err)
	}
	buf, off, end := frameBuf([]byte("late"))
	if err := w.WriteFrame(true, OpBinary, buf, off, end); !errors.Is(err, ErrCloseSent) {
		t.Fatalf("write after close: %v", err)
	}
	r := NewReader(&wire, ReaderOptions{})
	h, err := r.NextFrame()
	if err != nil || h.Op != OpClose {
		t.Fatalf("%v %+v", err, h)
	}
	var ctrl [125]byte
	p, err := r.ReadControl(ctrl[:])
	if err != nil {
		t.Fatal(err)
	}
	code, reason, err := ParseClosePayload(p)
	if err != nil || code != CloseNormal || !strings.HasPrefix(long, reason) || len(reason) != 123 {
		t.Fatalf("code %d reason %d bytes err %v", code, len(reason), err)
	}
	for _, bad := range [][]byte{{0x03}, {0x03, 0xed}, {0x03, 0xe8, 0xff}} {
		if _, _, err := ParseClosePayload(bad); err == nil {
			t.Errorf("ParseClosePayload(%x) accepted", bad)
		}
	}
}

func TestCheckRequest(t *testing.T) {
	good := func() *http.Request {
		r := httptest.NewRequest("GET", "/?token=x", nil)
		r.Header.Set("Upgrade", "websocket")
		r.Header.Set("Connection", "keep-alive, Upgrade")
		r.Header.Set("Sec-WebSocket-Version", "13")
		r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		return r
	}
	cases := []struct {
		name   string
		mutate func(*http.Request)
		status int
	}{
		{"valid", func(*http.Request) {}, 0},
		{"POST", func(r *http.Request) { r.Method = "POST" }, 405},
		{"HTTP/1.0", func(r *http.Request) { r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.0", 1, 0 }, 400},
		{"HTTP/0.9", func(r *http.Request) { r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/0.9", 0, 9 }, 400},
		{"HTTP/2", func(r *http.Request) { r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0 }, 0},
		{"no upgrade", func(r *http.Request) { r.Header.Del("Upgrade") }, 400},
		{"no connection upgrade", func(r *http.Request) { r.Header.Set("Connection", "keep-alive") }, 400},
		{"version 8", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Version", "8") }, 426},
		{"no key", func(r *http.Request) { r.Header.Del("Sec-WebSocket-Key") }, 400},
		{"short key", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Key", "c2hvcnQ=") }, 400},
		{"garbage key", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Key", "!!!!") }, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := good()
			c.mutate(r)
			key, err := CheckRequest(r)
			if c.status == 0 {
				if err != nil || key != "dGhlIHNhbXBsZSBub25jZQ==" {
					t.Fatalf("key %q err %v", key, err)
				}
				return
			}
			var he *HandshakeError
			if !errors.As(err, &he) || he.Status != c.status {
				t.Fatalf("got %v, want status %d", err, c.status)
			}
		})
	}
	// RFC 6455 section 1.3's example.
	if got := AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("AcceptKey = %s", got)
	}
}

// frames reads every frame of wire: headers and payloads, until an error.
// The first early bytes come as read with the handshake. With chunk > 0
// payloads are read with ReadChunk(chunk) (ReadChunkMasked with masked,
// unmasked here) from a source that returns at most step bytes a read;
// else with Read.
func frames(wire []byte, early int, fromClient bool, chunk, step int, masked bool) (out []string) {
	var src io.Reader = bytes.NewReader(wire[early:])
	if step > 0 {
		src = &stepReader{r: src, step: step}
	}
	r := NewReader(src, ReaderOptions{FromClient: fromClient, MaxPayload: 1 << 16, Buffered: wire[:early]})
	buf := make([]byte, chunk+ReadAhead)
	for i := 0; i < 100; i++ {
		h, err := r.NextFrame()
		if err != nil {
			return append(out, "end")
		}
		var payload []byte
		if chunk > 0 {
			for {
				var n int
				var err error
				if masked {
					var key [4]byte
					n, key, err = r.ReadChunkMasked(buf, chunk)
					mask(key, 0, buf[:n])
				} else {
					n, err = r.ReadChunk(buf, chunk)
				}
				payload = append(payload, buf[:n]...)
				if err != nil || n == 0 {
					break
				}
			}
		} else {
			payload, _ = io.ReadAll(r)
		}
		out = append(out, fmt.Sprintf("%v %d %q", h.Op, h.Length, payload))
	}
	return out
}

type stepReader struct {
	r    io.Reader
	step int
}

func (s *stepReader) Read(p []byte) (int, error) {
	return s.r.Read(p[:min(len(p), s.step)])
}

func TestReadChunkReadsAhead(t *testing.T) {
	// Two binary frames of 300 bytes, then a close frame.
	var wire []byte
	for _, b := range []byte{'a', 'b'} {
		wire = append(wire, 0x82, 0x7e, 0x01, 0x2c)
		wire = append(wire, bytes.Repeat([]byte{b}, 300)...)
	}
	wire = append(wire, 0x88, 0x02, 0x03, 0xe8)
	src := &countingReader{r: bytes.NewReader(wire)}
	r := NewReader(src, ReaderOptions{})
	buf := make([]byte, 1024+ReadAhead)
	for _, b := range []byte{'a', 'b'} {
		if h, err := r.NextFrame(); err != nil || h.Length != 300 {
			t.Fatalf("frame: %+v %v", h, err)
		}
		n, err := r.ReadChunk(buf, 1024)
		if err != nil || n != 300 || !bytes.Equal(buf[:n], bytes.Repeat([]byte{b}, 300)) {
			t.Fatalf("payload: %d %v", n, err)
		}
	}
	if h, err := r.NextFrame(); err != nil || h.Op != OpClose {
		t.Fatalf("close frame: %+v %v", h, err)
	}
	// The first read takes 256 bytes (header and the start of the payload),
	// the second the rest of the frame and the next frame's header and
	// start; the third the rest of that frame and the close frame.
	if src.reads != 3 {
		t.Errorf("%d reads for three frames, want 3", src.reads)
	}
}

// maskedFrame is a client's (masked) text frame carrying plain.
func maskedFrame(t *testing.T, plain []byte) []byte {
	var out bytes.Buffer
	b := make([]byte, MaxHeaderLen+len(plain))
	copy(b[MaxHeaderLen:], plain)
	if err := NewWriter(&out, true).WriteFrame(true, OpText, b, MaxHeaderLen, len(b)); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// A client frame relayed without unmasking it first arrives as the same
// payload: masked with the relay's key towards a server, plain towards a
// client.
func TestRelayRemasks(t *testing.T) {
	plain := []byte("paste of a long line, relayed as it came")
	for _, toServer := range []bool{true, false} {
		r := NewReader(bytes.NewReader(maskedFrame(t, plain)), ReaderOptions{FromClient: true})
		if _, err := r.NextFrame(); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		w := NewWriter(&out, toServer)
		buf := make([]byte, MaxHeaderLen+len(plain)+ReadAhead)
		// Two chunks, the second starting at an odd key position.
		for i, want := range []int{7, len(plain) - 7} {
			n, key, err := r.ReadChunkMasked(buf[MaxHeaderLen:], want)
			if err != nil || n != want {
				t.Fatalf("chunk %d: %d %v", i, n, err)
			}
			if err := w.WriteFrameRemask(i == 1, []Opcode{OpText, OpContinuation}[i], buf, MaxHeaderLen, MaxHeaderLen+n, key); err != nil {
				t.Fatal(err)
			}
		}
		got := NewReader(&out, ReaderOptions{FromClient: toServer})
		var msg []byte
		for i := 0; i < 2; i++ {
			if _, err := got.NextFrame(); err != nil {
				t.Fatal(err)
			}
			p, _ := io.ReadAll(got)
			msg = append(msg, p...)
		}
		if string(msg) != string(plain) {
			t.Errorf("toServer %v: relayed %q, want %q", toServer, msg, plain)
		}
	}
}

type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// ReadChunk returns what Read returns, whatever the chunk size, however
// the bytes arrive and however many came with the handshake.
func FuzzReadChunk(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'h' ^ 1, 'e' ^ 2, 'l' ^ 3, 'l' ^ 4, 'o' ^ 1, 0x82, 0x80, 9, 9, 9, 9}, true, uint16(3), uint8(2), uint16(0))
	f.Add([]byte{0x82, 0x03, 'a', 'b', 'c', 0x02, 0x02, 'd', 'e', 0x88, 0x00}, false, uint16(2), uint8(0), uint16(7))
	f.Fuzz(func(t *testing.T, wire []byte, fromClient bool, chunk uint16, step uint8, early uint16) {
		c := int(chunk%4096) + 1
		e := int(early) % (len(wire) + 1)
		want := frames(wire, 0, fromClient, 0, 0, false)
		for _, masked := range []bool{false, true} {
			got := frames(wire, e, fromClient, c, int(step), masked)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("ReadChunk(%d) (masked %v), %d bytes with the handshake, %d bytes a read:\n%s\nRead:\n%s", c, masked, e, step, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		}
	})
}

// cutWriter takes half of the first write, then fails, as a write
// deadline does when the peer stops reading.
type cutWriter struct{ writes int }

func (c *cutWriter) Write(p []byte) (int, error) {
	c.writes++
	return len(p) / 2, errors.New("i/o timeout")
}

func TestWriterStopsAfterACutFrame(t *testing.T) {
	cw := &cutWriter{}
	w := NewWriter(cw, false)
	buf := make([]byte, MaxHeaderLen+100)
	if err := w.WriteFrame(true, OpBinary, buf, MaxHeaderLen, len(buf)); err == nil {
		t.Fatal("a cut write reported no error")
	}
	if err := w.WriteClose(CloseNormal, "bye"); !errors.Is(err, ErrBroken) {
		t.Fatalf("close after a cut frame: %v, want ErrBroken", err)
	}
	if cw.writes != 1 {
		t.Fatalf("%d writes reached the connection, want 1: nothing may follow a cut frame", cw.writes)
	}
}

// A heartbeat to a peer that takes nothing gives up within its bound, and
// leaves no deadline behind for the unbounded writes that follow.
func TestTryWriteControlIsBounded(t *testing.T) {
	// net.Pipe: a write waits until the peer reads, as one to a full
	// socket buffer does.
	local, remote := net.Pipe()
	defer local.Close()
	defer remote.Close()
	w := NewWriter(local, false)
	w.SetTimeout(local, 0)
	if w.TryWriteControl(OpPing, nil, 50*time.Millisecond) {
		t.Fatal("a ping to a peer that reads nothing was written")
	}
	// The ping's deadline has passed: were it left, the next write would
	// fail at once.
	read := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(remote, 7))
		read <- b
	}()
	buf, off, end := frameBuf([]byte("hello"))
	if err := w.WriteFrame(true, OpBinary, buf, off, end); err != nil {
		t.Fatalf("a write after the bounded ping: %v", err)
	}
	if b := <-read; string(b[2:]) != "hello" {
		t.Fatalf("peer read %q", b)
	}
}
