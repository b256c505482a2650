package websocket

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// smallBufLen is a Reader's read-ahead: a keystroke frame arrives whole in
// one read. The buffer comes from a pool and goes back with Release, so a
// connection that waits (parked) holds none.
const smallBufLen = 256

var smallPool = sync.Pool{New: func() any { return new([smallBufLen]byte) }}

// Reader reads frames from one side of a connection. NextFrame parses a
// header; Read then returns that frame's payload, unmasked, ending with
// io.EOF. It never reads past the current frame except into its small
// inline buffer, so payloads go straight from the socket into the caller's
// buffer.
type Reader struct {
	src io.Reader
	// fromClient: frames must be masked (server side); else they must not be.
	fromClient bool
	// maxPayload bounds a single frame's length; 0 means no bound.
	maxPayload int64

	small      *[smallBufLen]byte // nil until needed, and after Release
	start, end int                // unread bytes are small[start:end]
	// early holds the bytes read with the handshake that did not fit in
	// small; they come after small's and before src's.
	early []byte

	remaining int64 // payload bytes of the current frame not yet read
	masked    bool
	key       [4]byte
	keyPos    int
}

// ReaderOptions configures a Reader.
type ReaderOptions struct {
	// FromClient is true on the server side: RFC 6455 requires client frames
	// to be masked and server frames not to be.
	FromClient bool
	// MaxPayload is the largest frame payload accepted (0: unbounded);
	// longer frames fail with a ProtocolError carrying CloseTooBig.
	MaxPayload int64
	// Buffered holds bytes already read from src (past the handshake).
	// They are the Reader's from now on, and Buffered counts them until
	// they are returned.
	Buffered []byte
}

// NewReader returns a Reader of frames from src.
func NewReader(src io.Reader, opts ReaderOptions) *Reader {
	r := &Reader{src: src, fromClient: opts.FromClient, maxPayload: opts.MaxPayload}
	if len(opts.Buffered) > 0 {
		r.small = smallPool.Get().(*[smallBufLen]byte)
		r.end = copy(r.small[:], opts.Buffered)
		if r.end < len(opts.Buffered) {
			// Only a peer that pipelines a lot of data behind its handshake
			// gets here; keep its bytes rather than drop them.
			r.early = opts.Buffered[r.end:]
		}
	}
	return r
}

// Buffered reports how many bytes the Reader holds that were read from the
// connection but not yet returned.
func (r *Reader) Buffered() int { return r.end - r.start + len(r.early) }

// Remaining reports how many payload bytes of the current frame are
// still to be read.
func (r *Reader) Remaining() int64 { return r.remaining }

// read reads from the bytes held from the handshake, then from src.
func (r *Reader) read(p []byte) (int, error) {
	if len(r.early) == 0 {
		return r.src.Read(p)
	}
	n := copy(p, r.early)
	if r.early = r.early[n:]; len(r.early) == 0 {
		r.early = nil
	}
	return n, nil
}

// Release gives the read-ahead buffer back to its pool if it holds no
// unread bytes. The Reader takes one again when it next needs it.
func (r *Reader) Release() {
	if r.small != nil && r.start == r.end {
		smallPool.Put(r.small)
		r.small, r.start, r.end = nil, 0, 0
	}
}

// fill makes at least n (<= smallBufLen) bytes available in r.small.
func (r *Reader) fill(n int) error {
	if r.end-r.start >= n {
		return nil
	}
	if r.small == nil {
		r.small = smallPool.Get().(*[smallBufLen]byte)
	}
	if r.start > 0 {
		r.end = copy(r.small[:], r.small[r.start:r.end])
		r.start = 0
	}
	for r.end < n {
		m, err := r.read(r.small[r.end:])
		r.end += m
		if r.end >= n {
			return nil
		}
		if err != nil {
			if err == io.EOF && r.end > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// NextFrame discards what is left of the current frame's payload and reads
// the next frame header. It enforces the framing rules of RFC 6455 section
// 5: reserved bits clear, known opcodes, masking by role, control frames
// unfragmented and at most 125 bytes.
func (r *Reader) NextFrame() (Header, error) {
	if r.remaining > 0 {
		if err := r.discard(); err != nil {
			return Header{}, err
		}
	}
	if err := r.fill(2); err != nil {
		return Header{}, err
	}
	b0, b1 := r.small[r.start], r.small[r.start+1]
	h := Header{Fin: b0&0x80 != 0, Op: Opcode(b0 & 0x0f), Masked: b1&0x80 != 0}
	if b0&0x70 != 0 {
		return Header{}, protocolError("reserved bits set without an extension")
	}
	switch h.Op {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
	default:
		return Header{}, protocolError(fmt.Sprintf("unknown opcode %#x", byte(h.Op)))
	}
	if h.Masked != r.fromClient {
		if r.fromClient {
			return Header{}, protocolError("unmasked frame from a client")
		}
		return Header{}, protocolError("masked frame from a server")
	}
	need := 2
	switch b1 & 0x7f {
	case 126:
		need += 2
	case 127:
		need += 8
	}
	if h.Masked {
		need += 4
	}
	if err := r.fill(need); err != nil {
		return Header{}, err
	}
	p := r.small[r.start+2 : r.start+need]
	switch l := b1 & 0x7f; l {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(p))
		if h.Length < 126 {
			return Header{}, protocolError("frame length not in minimal form")
		}
		p = p[2:]
	case 127:
		u := binary.BigEndian.Uint64(p)
		if u>>63 != 0 {
			return Header{}, protocolError("frame length has the most significant bit set")
		}
		if u < 1<<16 {
			return Header{}, protocolError("frame length not in minimal form")
		}
		h.Length = int64(u)
		p = p[8:]
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], p)
	}
	r.start += need
	if h.Op.IsControl() {
		if !h.Fin {
			return Header{}, protocolError("fragmented control frame")
		}
		if h.Length > maxControlPayload {
			return Header{}, protocolError("control frame longer than 125 bytes")
		}
	} else if r.maxPayload > 0 && h.Length > r.maxPayload {
		return Header{}, &ProtocolError{Code: CloseTooBig, Reason: fmt.Sprintf("frame of %d bytes exceeds the limit of %d", h.Length, r.maxPayload)}
	}
	r.remaining = h.Length
	r.masked, r.key, r.keyPos = h.Masked, h.Mask, 0
	return h, nil
}

// Read reads the current frame's payload into p, unmasked. It returns io.EOF
// once the payload is exhausted.
func (r *Reader) Read(p []byte) (int, error) {
	if r.remaining == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.remaining {
		p = p[:r.remaining]
	}
	var n int
	var err error
	if r.start < r.end {
		n = copy(p, r.small[r.start:r.end])
		r.start += n
	}
	if n < len(p) {
		// The rest of this frame is on its way (its header came first):
		// take what has arrived in the same call, so a frame that straddles
		// the inline buffer is not cut in two.
		var m int
		m, err = r.read(p[n:])
		n += m
		if err == io.EOF && int64(n) < r.remaining { // last bytes may come with EOF
			err = io.ErrUnexpectedEOF
		}
	}
	if r.masked {
		r.keyPos = mask(r.key, r.keyPos, p[:n])
	}
	r.remaining -= int64(n)
	if err == nil && r.remaining == 0 {
		err = io.EOF
	}
	return n, err
}

// ReadAhead is the spare room ReadChunk may use past the bytes it returns.
const ReadAhead = smallBufLen

// ReadChunk reads exactly want bytes of the current frame's payload (all
// that is left of it if less) into p, unmasked, and returns how many. When
// they end the frame, the last read may also take bytes that follow the
// frame into p[want:] (at most ReadAhead): the Reader keeps them, so the
// next frame's header usually costs no read of its own. p[want:] is the
// Reader's scratch space during the call only.
func (r *Reader) ReadChunk(p []byte, want int) (int, error) {
	n, _, err := r.readChunk(p, want, true)
	return n, err
}

// ReadChunkMasked is ReadChunk that leaves a masked frame's bytes masked
// and returns the key that unmasks p[:n] from its first byte on: a relay
// then unmasks and masks again in one pass (Writer.WriteFrameRemask).
func (r *Reader) ReadChunkMasked(p []byte, want int) (int, [4]byte, error) {
	return r.readChunk(p, want, false)
}

func (r *Reader) readChunk(p []byte, want int, unmask bool) (int, [4]byte, error) {
	var key [4]byte
	if int64(want) > r.remaining {
		want = int(r.remaining)
	}
	if want == 0 {
		return 0, key, nil
	}
	n := 0
	if r.start < r.end {
		n = copy(p[:want], r.small[r.start:r.end])
		r.start += n
	}
	limit := want
	if int64(want) == r.remaining && r.start == r.end {
		limit = want + min(len(p)-want, ReadAhead)
	}
	var err error
	for n < want && err == nil {
		var m int
		m, err = r.read(p[n:limit])
		n += m
	}
	if n > want {
		// Bytes of the next frame: the Reader's own, still masked.
		if r.small == nil {
			r.small = smallPool.Get().(*[smallBufLen]byte)
		}
		r.start, r.end = 0, copy(r.small[:], p[want:n])
		n, err = want, nil
	}
	if r.masked {
		if unmask {
			mask(r.key, r.keyPos, p[:n])
		} else {
			for i := range key {
				key[i] = r.key[(r.keyPos+i)&3]
			}
		}
		r.keyPos = (r.keyPos + n) & 3
	}
	r.remaining -= int64(n)
	if n < want {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, key, err
	}
	return n, key, nil
}

// ReadControl reads the whole payload of a control frame into buf (which
// must hold 125 bytes) and returns it.
func (r *Reader) ReadControl(buf []byte) ([]byte, error) {
	n := int(r.remaining)
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// discard skips the rest of the current frame's payload.
func (r *Reader) discard() error {
	var scratch [512]byte
	for r.remaining > 0 {
		if _, err := r.Read(scratch[:]); err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}
