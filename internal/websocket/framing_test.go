package websocket

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// pieces is a connection that delivers the bytes of each piece in reads of
// their own, and its last bytes together with io.EOF, as io.Reader allows
// (a tls.Conn does so when close_notify follows the data).
type pieces [][]byte

func (c *pieces) Read(p []byte) (int, error) {
	for len(*c) > 0 && len((*c)[0]) == 0 {
		*c = (*c)[1:]
	}
	if len(*c) == 0 {
		return 0, io.EOF
	}
	n := copy(p, (*c)[0])
	(*c)[0] = (*c)[0][n:]
	if len((*c)[0]) == 0 && len(*c) == 1 {
		*c = nil
		return n, io.EOF
	}
	return n, nil
}

// header is the wire form of a frame header: FIN and opcode, the length
// in the form given (7 bits, or 126 or 127 and the extended length), and
// the mask bit.
func header(b0 byte, masked bool, length byte, ext ...byte) []byte {
	b1 := length
	if masked {
		b1 |= 0x80
	}
	h := append([]byte{b0, b1}, ext...)
	if masked {
		h = append(h, 1, 2, 3, 4)
	}
	return h
}

func ext16(n uint16) []byte { return binary.BigEndian.AppendUint16(nil, n) }
func ext64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// within runs f, failing the test if it has not returned after 5 seconds
// (a reader that loops or waits for bytes that are already there).
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not return within 5s", what)
	}
}

// RFC 6455 section 5.2: the payload length is 7 bits (0-125), or 126 and 16
// bits, or 127 and 64 bits with the most significant bit 0, in the shortest
// form that holds it; control frames carry at most 125 bytes and are not
// fragmented; RSV1-3 are 0 without an extension; the opcodes 0x3-0x7 and
// 0xB-0xF are reserved; a client masks every frame and a server none.
func TestReaderFramingRules(t *testing.T) {
	type want struct {
		length int64
		code   int // 0: accepted
	}
	cases := []struct {
		name       string
		wire       []byte
		fromClient bool
		maxPayload int64
		want       want
	}{
		{"7-bit 0", header(0x82, false, 0), false, 0, want{0, 0}},
		{"7-bit 125", header(0x82, false, 125), false, 0, want{125, 0}},
		{"16-bit 125 (not minimal)", header(0x82, false, 126, ext16(125)...), false, 0, want{0, CloseProtocolError}},
		{"16-bit 126", header(0x82, false, 126, ext16(126)...), false, 0, want{126, 0}},
		{"16-bit 65535", header(0x82, false, 126, ext16(65535)...), false, 0, want{65535, 0}},
		{"64-bit 125 (not minimal)", header(0x82, false, 127, ext64(125)...), false, 0, want{0, CloseProtocolError}},
		{"64-bit 65535 (not minimal)", header(0x82, false, 127, ext64(65535)...), false, 0, want{0, CloseProtocolError}},
		{"64-bit 65536", header(0x82, false, 127, ext64(65536)...), false, 0, want{65536, 0}},
		{"64-bit 2^63-1", header(0x82, false, 127, ext64(1<<63-1)...), false, 0, want{1<<63 - 1, 0}},
		{"64-bit 2^63", header(0x82, false, 127, ext64(1<<63)...), false, 0, want{0, CloseProtocolError}},
		{"64-bit 2^64-1", header(0x82, false, 127, ext64(1<<64-1)...), false, 0, want{0, CloseProtocolError}},
		{"at MaxPayload", header(0x82, true, 100), true, 100, want{100, 0}},
		{"past MaxPayload", header(0x82, true, 101), true, 100, want{0, CloseTooBig}},
		{"64-bit past MaxPayload", header(0x82, true, 127, ext64(1<<40)...), true, 1 << 20, want{0, CloseTooBig}},
		{"ping of 125", header(0x89, false, 125), false, 0, want{125, 0}},
		{"pong of 125", header(0x8A, false, 125), false, 0, want{125, 0}},
		{"close of 125", header(0x88, false, 125), false, 0, want{125, 0}},
		{"ping of 126", header(0x89, false, 126, ext16(126)...), false, 0, want{0, CloseProtocolError}},
		{"close of 126", header(0x88, true, 126, ext16(126)...), true, 0, want{0, CloseProtocolError}},
		{"pong of 65536", header(0x8A, false, 127, ext64(65536)...), false, 0, want{0, CloseProtocolError}},
		{"fragmented ping", header(0x09, false, 0), false, 0, want{0, CloseProtocolError}},
		{"fragmented close", header(0x08, true, 2), true, 0, want{0, CloseProtocolError}},
		{"fragmented text", header(0x01, true, 3), true, 0, want{3, 0}},
		{"continuation", header(0x00, true, 3), true, 0, want{3, 0}},
		{"RSV1", header(0xC2, true, 1), true, 0, want{0, CloseProtocolError}},
		{"RSV2", header(0xA2, true, 1), true, 0, want{0, CloseProtocolError}},
		{"RSV3", header(0x92, true, 1), true, 0, want{0, CloseProtocolError}},
		{"masked from a client", header(0x81, true, 5), true, 0, want{5, 0}},
		{"unmasked from a client", header(0x81, false, 5), true, 0, want{0, CloseProtocolError}},
		{"masked from a server", header(0x81, true, 5), false, 0, want{0, CloseProtocolError}},
		{"unmasked from a server", header(0x81, false, 5), false, 0, want{5, 0}},
	}
	for op := range 16 {
		known := op <= 2 || op >= 8 && op <= 0xA
		w := want{0, CloseProtocolError}
		if known {
			w = want{0, 0}
		}
		cases = append(cases, struct {
			name       string
			wire       []byte
			fromClient bool
			maxPayload int64
			want       want
		}{fmt.Sprintf("opcode %#x", op), header(0x80|byte(op), true, 0), true, 0, w})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(c.wire), ReaderOptions{FromClient: c.fromClient, MaxPayload: c.maxPayload})
			var h Header
			var err error
			within(t, "NextFrame", func() { h, err = r.NextFrame() })
			if c.want.code != 0 {
				var pe *ProtocolError
				if !errors.As(err, &pe) || pe.Code != c.want.code {
					t.Fatalf("header %+v, %v; want a ProtocolError with code %d", h, err, c.want.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if h.Length != c.want.length || h.Op != Opcode(c.wire[0]&0x0f) || h.Fin != (c.wire[0]&0x80 != 0) || h.Masked != c.fromClient {
				t.Fatalf("header %+v, want length %d", h, c.want.length)
			}
			if h.Masked && h.Mask != [4]byte{1, 2, 3, 4} {
				t.Fatalf("masking key %x, want 01020304", h.Mask)
			}
		})
	}
}

// The Writer writes each length in its shortest form (section 5.2), and in
// client role sets the mask bit and masks the payload with the key it
// sends.
func TestWriterLengthEncodings(t *testing.T) {
	cases := []struct {
		n      int
		length byte // the 7-bit length field
		ext    int  // bytes of extended length
	}{{0, 0, 0}, {1, 1, 0}, {125, 125, 0}, {126, 126, 2}, {65535, 126, 2}, {65536, 127, 8}, {70000, 127, 8}}
	for _, c := range cases {
		for _, toServer := range []bool{false, true} {
			payload := bytes.Repeat([]byte{'p'}, c.n)
			var wire bytes.Buffer
			buf, off, end := frameBuf(payload)
			if err := NewWriter(&wire, toServer).WriteFrame(true, OpBinary, buf, off, end); err != nil {
				t.Fatal(err)
			}
			b := wire.Bytes()
			if b[0] != 0x82 || b[1]&0x7f != c.length || (b[1]&0x80 != 0) != toServer {
				t.Fatalf("%d bytes (masked %v): header %x, want length field %d", c.n, toServer, b[:2], c.length)
			}
			var got uint64
			switch c.ext {
			case 2:
				got = uint64(binary.BigEndian.Uint16(b[2:]))
			case 8:
				got = binary.BigEndian.Uint64(b[2:])
			default:
				got = uint64(b[1] & 0x7f)
			}
			hl := 2 + c.ext
			if toServer {
				hl += 4
			}
			if got != uint64(c.n) || len(b) != hl+c.n {
				t.Fatalf("%d bytes (masked %v): length %d and %d bytes on the wire, want %d", c.n, toServer, got, len(b), hl+c.n)
			}
			p := b[hl:]
			if toServer {
				key := b[hl-4 : hl]
				for i := range p {
					p[i] ^= key[i&3]
				}
			}
			if !bytes.Equal(p, payload) {
				t.Fatalf("%d bytes (masked %v): payload %q after unmasking", c.n, toServer, p)
			}
		}
	}
}

// A stream that ends between frames is io.EOF; one that ends inside a
// frame, header or payload, is io.ErrUnexpectedEOF however the payload is
// read or skipped; a frame that ends with the stream is whole, even when
// its last bytes come with io.EOF.
func TestReaderStreamEnds(t *testing.T) {
	frame := append(header(0x82, false, 3), 'a', 'b', 'c')
	readers := map[string]func(r *Reader) ([]byte, error){
		"Read": func(r *Reader) ([]byte, error) {
			var got []byte
			p := make([]byte, 2)
			for {
				n, err := r.Read(p)
				got = append(got, p[:n]...)
				if err == io.EOF {
					return got, nil
				}
				if err != nil {
					return got, err
				}
			}
		},
		"ReadChunk": func(r *Reader) ([]byte, error) {
			p := make([]byte, 10+ReadAhead)
			n, err := r.ReadChunk(p, 10)
			return p[:n], err
		},
		"ReadControl": func(r *Reader) ([]byte, error) {
			var ctrl [125]byte
			return r.ReadControl(ctrl[:])
		},
		"skipped": func(r *Reader) ([]byte, error) {
			_, err := r.NextFrame()
			if err == io.EOF {
				err = nil
			}
			return []byte("abc"), err
		},
	}
	for name, read := range readers {
		cases := []struct {
			name string
			src  io.Reader
			want error // reading the payload
		}{
			{"whole", bytes.NewReader(frame), nil},
			{"whole, a byte a read", &oneByteReader{frame}, nil},
			{"last bytes with EOF", &pieces{frame[:2], frame[2:]}, nil},
			{"header and payload with EOF", &pieces{frame}, nil},
			{"cut in the payload", bytes.NewReader(frame[:4]), io.ErrUnexpectedEOF},
			{"cut in the payload, with EOF", &pieces{frame[:2], frame[2:4]}, io.ErrUnexpectedEOF},
		}
		for _, c := range cases {
			t.Run(name+"/"+c.name, func(t *testing.T) {
				within(t, name, func() {
					r := NewReader(c.src, ReaderOptions{})
					if _, err := r.NextFrame(); err != nil {
						t.Errorf("header: %v", err)
						return
					}
					got, err := read(r)
					if !errors.Is(err, c.want) || err == nil && string(got) != "abc" {
						t.Errorf("payload %q, %v; want \"abc\", %v", got, err, c.want)
						return
					}
					if err == nil {
						if _, err := r.NextFrame(); err != io.EOF {
							t.Errorf("after the last frame: %v, want io.EOF", err)
						}
					}
				})
			})
		}
	}
	within(t, "the reads at the stream's end", func() {
		for _, cut := range []struct {
			wire       []byte
			fromClient bool
		}{
			{frame[:1], false},
			{header(0x82, false, 126, 1), false},
			{header(0x82, false, 127, 0, 0, 0, 0, 0, 1, 0), false},
			{header(0x82, true, 3)[:5], true},
		} {
			r := NewReader(bytes.NewReader(cut.wire), ReaderOptions{FromClient: cut.fromClient})
			if _, err := r.NextFrame(); err != io.ErrUnexpectedEOF {
				t.Errorf("header cut after %x: %v, want io.ErrUnexpectedEOF", cut.wire, err)
			}
		}
		if _, err := NewReader(bytes.NewReader(nil), ReaderOptions{}).NextFrame(); err != io.EOF {
			t.Errorf("an empty stream: %v, want io.EOF", err)
		}
		// Headers that end the stream, their last bytes with io.EOF.
		for _, last := range [][]byte{header(0x82, false, 0), header(0x82, true, 0), header(0x82, false, 126, ext16(200)...)} {
			r := NewReader(&pieces{last}, ReaderOptions{FromClient: last[1]&0x80 != 0})
			if _, err := r.NextFrame(); err != nil {
				t.Errorf("header %x with io.EOF: %v", last, err)
			}
		}
		// The call that returns a frame's last bytes says so: one Read for a
		// small frame.
		r := NewReader(bytes.NewReader(append(frame, frame...)), ReaderOptions{})
		r.NextFrame()
		p := make([]byte, 10)
		if n, err := r.Read(p); n != 3 || err != io.EOF {
			t.Errorf("Read of a 3-byte frame: %d bytes, %v; want 3, io.EOF", n, err)
		}
	})
}

// Bytes read with the handshake, however many, are the first of the
// stream: every frame arrives, and Buffered counts those the read-ahead
// buffer holds.
func TestReaderHandshakeBytes(t *testing.T) {
	var wire []byte
	for _, n := range []int{250, 0, 300, 5} {
		wire = append(wire, maskedFrame(t, bytes.Repeat([]byte{'x'}, n))...)
	}
	for _, early := range []int{1, 5, 255, 256, 257, 300, len(wire)} {
		r := NewReader(&stepReader{r: bytes.NewReader(wire[early:]), step: 100}, ReaderOptions{FromClient: true, Buffered: wire[:early]})
		if got := r.Buffered(); early <= ReadAhead && got != early {
			t.Errorf("%d bytes with the handshake: Buffered() = %d", early, got)
		}
		var lengths []int
		for {
			h, err := r.NextFrame()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%d bytes with the handshake: frame %d: %v", early, len(lengths), err)
			}
			p, err := io.ReadAll(r)
			if err != nil || len(p) != int(h.Length) || bytes.Count(p, []byte{'x'}) != len(p) {
				t.Fatalf("%d bytes with the handshake: frame %d: %d bytes, %v", early, len(lengths), len(p), err)
			}
			lengths = append(lengths, len(p))
		}
		if fmt.Sprint(lengths) != "[250 0 300 5]" {
			t.Errorf("%d bytes with the handshake: frames of %v bytes", early, lengths)
		}
	}
}

// NextFrame skips what was not read of the frame before, whatever the
// part read and however the bytes arrive.
func TestNextFrameSkipsTheRest(t *testing.T) {
	var wire []byte
	for _, n := range []int{300, 2000, 0, 5} {
		wire = append(wire, maskedFrame(t, bytes.Repeat([]byte{byte('a' + n%26)}, n))...)
	}
	for _, read := range []int{0, 1, 200, 299} {
		for _, step := range []int{0, 1, 7, 4096} {
			var src io.Reader = bytes.NewReader(wire)
			if step > 0 {
				src = &stepReader{r: src, step: step}
			}
			within(t, "NextFrame", func() {
				r := NewReader(src, ReaderOptions{FromClient: true})
				var lengths []int64
				for range 4 {
					h, err := r.NextFrame()
					if err != nil {
						t.Errorf("read %d, step %d: frame %d: %v", read, step, len(lengths), err)
						return
					}
					lengths = append(lengths, h.Length)
					io.ReadFull(r, make([]byte, min(read, int(h.Length))))
				}
				if fmt.Sprint(lengths) != "[300 2000 0 5]" {
					t.Errorf("read %d, step %d: frames of %v bytes", read, step, lengths)
				}
				if _, err := r.NextFrame(); err != io.EOF {
					t.Errorf("read %d, step %d: after the last frame %v", read, step, err)
				}
			})
		}
	}
}

// ReadChunk needs no room past want (the room is for reading ahead only),
// and reads ahead into a buffer of its own again after Release.
func TestReadChunkRoom(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789"), 100)
	next := append(header(0x82, false, 2), 'o', 'k')
	frame := append(header(0x82, false, 126, ext16(1000)...), payload...)
	t.Run("no room", func(t *testing.T) {
		r := NewReader(bytes.NewReader(append(frame, next...)), ReaderOptions{})
		if _, err := r.NextFrame(); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 1000)
		var n int
		var err error
		within(t, "ReadChunk", func() { n, err = r.ReadChunk(p, 1000) })
		if err != nil || !bytes.Equal(p[:n], payload) {
			t.Fatalf("read %d bytes, %v", n, err)
		}
	})
	t.Run("after Release", func(t *testing.T) {
		// The header comes alone; the payload and the next frame in one
		// read after the Reader gave its buffer back.
		r := NewReader(&pieces{frame[:4], append(frame[4:], next...)}, ReaderOptions{})
		if _, err := r.NextFrame(); err != nil {
			t.Fatal(err)
		}
		r.Release()
		p := make([]byte, 1000+ReadAhead)
		var n int
		var err error
		within(t, "ReadChunk", func() { n, err = r.ReadChunk(p, 1000) })
		if err != nil || !bytes.Equal(p[:n], payload) {
			t.Fatalf("read %d bytes, %v", n, err)
		}
		if r.Buffered() != len(next) {
			t.Fatalf("%d bytes kept of the next frame, want %d", r.Buffered(), len(next))
		}
		h, err := r.NextFrame()
		if err != nil || h.Length != 2 {
			t.Fatalf("next frame %+v, %v", h, err)
		}
		if got, err := io.ReadAll(r); err != nil || string(got) != "ok" {
			t.Fatalf("next frame's payload %q, %v", got, err)
		}
	})
}

// A Reader holds its read-ahead buffer only while it has bytes in it: none
// when made without bytes from the handshake, none after Release once it
// has returned them all, its bytes kept when Release is too early.
func TestReaderHoldsNoIdleBuffer(t *testing.T) {
	r := NewReader(bytes.NewReader(nil), ReaderOptions{Buffered: []byte{}})
	if r.small != nil {
		t.Fatal("a new Reader holds a buffer")
	}
	wire := append(append(header(0x82, false, 3), 'a', 'b', 'c'), append(header(0x82, false, 2), 'd', 'e')...)
	r = NewReader(bytes.NewReader(wire), ReaderOptions{})
	if _, err := r.NextFrame(); err != nil {
		t.Fatal(err)
	}
	r.Release() // both frames are in the buffer: too early
	if r.small == nil || r.Buffered() != 7 {
		t.Fatalf("Release with bytes unread: buffer %v, %d bytes kept", r.small != nil, r.Buffered())
	}
	var got []byte
	for {
		p, err := io.ReadAll(r)
		got = append(got, p...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.NextFrame(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if string(got) != "abcde" {
		t.Fatalf("read %q", got)
	}
	r.Release()
	if r.small != nil || r.Buffered() != 0 {
		t.Fatal("Release with every byte read kept the buffer")
	}
}

// Control frames carry at most 125 bytes: WriteControl cuts a longer
// payload there, and WriteClose cuts its reason to 123 bytes at the end of
// a character, whatever the characters' lengths.
func TestWriterControlLimits(t *testing.T) {
	for _, n := range []int{0, 5, 125, 126, 200} {
		var wire bytes.Buffer
		big := make([]byte, 200)
		for i := range big {
			big[i] = byte(i)
		}
		if err := NewWriter(&wire, true).WriteControl(OpPing, big[:n]); err != nil {
			t.Fatal(err)
		}
		r := NewReader(&wire, ReaderOptions{FromClient: true})
		h, err := r.NextFrame()
		if err != nil || h.Op != OpPing || h.Length != int64(min(n, 125)) {
			t.Fatalf("ping of %d bytes: %+v, %v", n, h, err)
		}
		var ctrl [125]byte
		if p, err := r.ReadControl(ctrl[:]); err != nil || !bytes.Equal(p, big[:min(n, 125)]) {
			t.Fatalf("ping of %d bytes: payload %x, %v", n, p, err)
		}
	}
	for _, prefix := range []string{"", "a", "ab", "abc", "é"} {
		for _, char := range []string{"€", "😀", "é", "x"} {
			reason := prefix + strings.Repeat(char, 130)
			var wire bytes.Buffer
			if err := NewWriter(&wire, false).WriteClose(CloseGoingAway, reason); err != nil {
				t.Fatal(err)
			}
			r := NewReader(&wire, ReaderOptions{})
			if _, err := r.NextFrame(); err != nil {
				t.Fatal(err)
			}
			var ctrl [125]byte
			p, err := r.ReadControl(ctrl[:])
			if err != nil {
				t.Fatal(err)
			}
			code, got, err := ParseClosePayload(p)
			longest := reason[:123]
			for !utf8.ValidString(longest) {
				longest = longest[:len(longest)-1]
			}
			if err != nil || code != CloseGoingAway || got != longest {
				t.Fatalf("reason %q…: code %d, reason of %d bytes (%v), want the %d bytes that fit", reason[:8], code, len(got), err, len(longest))
			}
		}
	}
}

// A write that fails before a byte of it left (a deadline passed) leaves
// the stream whole: the next frame may still be written. One that failed
// partway is ErrBroken for everything after it.
func TestWriterFailedBeforeAByte(t *testing.T) {
	fw := &failFirst{}
	w := NewWriter(fw, false)
	buf, off, end := frameBuf([]byte("one"))
	if err := w.WriteFrame(true, OpBinary, buf, off, end); err == nil {
		t.Fatal("the failed write reported no error")
	}
	buf, off, end = frameBuf([]byte("two"))
	if err := w.WriteFrame(true, OpBinary, buf, off, end); err != nil {
		t.Fatalf("a write after one that wrote nothing: %v", err)
	}
	if got := fw.wire.String(); got != "\x82\x03two" {
		t.Fatalf("wire %q", got)
	}
}

type failFirst struct {
	wire  bytes.Buffer
	calls int
}

func (f *failFirst) Write(p []byte) (int, error) {
	if f.calls++; f.calls == 1 {
		return 0, errors.New("i/o timeout")
	}
	return f.wire.Write(p)
}

// deadlines records the write deadlines a Writer sets.
type deadlines []time.Time

func (d *deadlines) SetWriteDeadline(t time.Time) error { *d = append(*d, t); return nil }

// A heartbeat's write is bounded by the shorter of its own bound and the
// Writer's timeout (either alone when the other is 0); a later write
// without a bound clears the deadline it left.
func TestTryWriteControlBound(t *testing.T) {
	const short, long = 50 * time.Millisecond, time.Second
	cases := []struct {
		timeout, within, want time.Duration // want 0: no deadline
	}{
		{0, 0, 0},
		{0, short, short},
		{long, 0, long},
		{long, short, short},
		{short, long, short},
		{short, short, short},
	}
	for _, c := range cases {
		var wire bytes.Buffer
		var set deadlines
		w := NewWriter(&wire, false)
		w.SetTimeout(&set, c.timeout)
		before := time.Now()
		if !w.TryWriteControl(OpPing, nil, c.within) {
			t.Fatalf("timeout %v, within %v: ping not written", c.timeout, c.within)
		}
		after := time.Now()
		switch {
		case c.want == 0 && len(set) != 0:
			t.Errorf("timeout %v, within %v: deadlines %v set, want none", c.timeout, c.within, set)
		case c.want != 0 && (len(set) != 1 || set[0].Before(before.Add(c.want)) || set[0].After(after.Add(c.want))):
			t.Errorf("timeout %v, within %v: deadlines %v, want one %v from now", c.timeout, c.within, set, c.want)
		}
		buf, off, end := frameBuf([]byte("x"))
		if err := w.WriteFrame(true, OpBinary, buf, off, end); err != nil {
			t.Fatal(err)
		}
		if c.timeout == 0 && c.want != 0 && (len(set) != 2 || !set[1].IsZero()) {
			t.Errorf("timeout 0, within %v: deadlines %v, want the ping's cleared by the next write", c.within, set)
		}
	}
}

// holder is a TryWriter that holds earlier bytes until released.
type holder struct {
	wire bytes.Buffer
	held bool
}

func (h *holder) Write(p []byte) (int, error) { h.held = false; return h.wire.Write(p) }

func (h *holder) TryWrite(p []byte) (int, error) {
	if h.held {
		return 0, errors.New("held")
	}
	return h.Write(p)
}

// Only a heartbeat's write goes through TryWrite: refused, it writes
// nothing and leaves the stream whole; pongs, closes and frames wait
// behind held bytes as any write does.
func TestTryWriteControlThroughTryWriter(t *testing.T) {
	h := &holder{held: true}
	w := NewWriter(h, false)
	if w.TryWriteControl(OpPing, nil, time.Second) {
		t.Fatal("a ping was written though the destination holds earlier bytes")
	}
	if err := w.WriteControl(OpPong, nil); err != nil {
		t.Fatalf("a pong after the refused ping: %v", err)
	}
	if !w.TryWriteControl(OpPing, nil, time.Second) {
		t.Fatal("a ping was refused once nothing was held")
	}
	if got, want := h.wire.Bytes(), []byte{0x8a, 0, 0x89, 0}; !bytes.Equal(got, want) {
		t.Fatalf("wire % x, want % x (the pong, then the ping)", got, want)
	}
}
