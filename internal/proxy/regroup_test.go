package proxy

import (
	"bytes"
	"encoding/base64"
	"io"
	"testing"
	"unicode/utf8"
	"unsafe"

	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// FuzzRegroup feeds container output, cut at arbitrary places, through
// the pump's own code (sendToClient for each read, flushHeld at the end
// of the stream) and reads the client's messages back: the bytes are
// never changed, reordered or lost, no message is empty, and when the
// output is valid UTF-8 every message is too, under the binary and the
// base64 subprotocol alike.
func FuzzRegroup(f *testing.F) {
	f.Add([]byte("€€€€ héllo 😀"), uint8(3))
	f.Add([]byte{0xE2, 0x82, 0xAC, 0xFF, 0xE2}, uint8(1))
	f.Add([]byte("\xf0\x9f\x98\x80 base64"), uint8(0x82))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		size := int(step&0x0f) + 1 // bytes a read
		encoding := Binary
		if step&0x80 != 0 {
			encoding = Base64
		}
		var wire bytes.Buffer
		s := &Session{clientW: websocket.NewWriter(&wire, false), opts: Options{Encoding: encoding, Clock: systemClock{}}}
		buf := make([]byte, room+smallChunk)
		for i := 0; i < len(in); i += size {
			n := copy(buf[room:], in[i:min(i+size, len(in))])
			if _, ok := s.sendToClient(buf, n); !ok {
				t.Fatal("sendToClient failed")
			}
		}
		s.flushHeld()

		r := websocket.NewReader(&wire, websocket.ReaderOptions{})
		var out []byte
		for {
			h, err := r.NextFrame()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("the client's frames: %v", err)
			}
			m, _ := io.ReadAll(r)
			if encoding == Base64 {
				if h.Op != websocket.OpText {
					t.Fatalf("a %v message under base64", h.Op)
				}
				if m, err = base64.StdEncoding.DecodeString(string(m)); err != nil {
					t.Fatalf("message %q: %v", m, err)
				}
			} else if h.Op != websocket.OpBinary {
				t.Fatalf("a %v message under binary", h.Op)
			}
			if !h.Fin || len(m) == 0 {
				t.Fatalf("message %x: fin %v", m, h.Fin)
			}
			if utf8.Valid(in) && !utf8.Valid(m) {
				t.Fatalf("message %x of valid output %x is not UTF-8", m, in)
			}
			out = append(out, m...)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("bytes changed: %x -> %x", in, out)
		}
	})
}

// A bulk read starts on a readAlign boundary whatever the reader held,
// and the part of the buffer still has room, a whole chunk and the
// reader's read-ahead.
func TestBulkReadsAreAligned(t *testing.T) {
	for _, pre := range []int{0, 1, 3, 7, 14, 63, 64, 242, 246, websocket.ReadAhead, chunk} {
		bp := bufPool.Get().(*[]byte)
		b := bulkAt(bp, pre)
		if at := uintptr(unsafe.Pointer(&b[room+pre])); at%readAlign != 0 {
			t.Errorf("pre %d: the read starts at %#x, not on a %d-byte boundary", pre, at, readAlign)
		}
		if len(b) < room+chunk+websocket.ReadAhead {
			t.Errorf("pre %d: %d bytes left, want at least %d", pre, len(b), room+chunk+websocket.ReadAhead)
		}
		if &b[len(b)-1] != &(*bp)[len(*bp)-1] {
			t.Errorf("pre %d: the part is not the buffer's own tail", pre)
		}
		bufPool.Put(bp)
	}
}
