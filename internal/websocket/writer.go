package websocket

import (
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"time"
	"unicode/utf8"
)

// Writer writes frames to one side of a connection. It is safe for
// concurrent use: each frame goes out in one Write under a lock, so control
// frames from one goroutine interleave cleanly with data from another.
type Writer struct {
	mu        sync.Mutex
	dst       io.Writer
	toServer  bool // client role: frames must be masked
	closeSent bool
	// broken: a write failed partway; the peer's stream is cut inside a
	// frame and nothing more may follow it.
	broken bool

	// With a timeout, each write must finish within it (set under the
	// lock, so concurrent writers cannot undo each other's deadline).
	deadliner interface{ SetWriteDeadline(time.Time) error }
	timeout   time.Duration
	bounded   bool // the deadline set last bounds writes
}

// SetTimeout bounds every later write to d, through conn's write deadline;
// a peer that takes nothing for d makes the write fail. 0: writes are not
// bounded (but TryWriteControl's are, through conn).
func (w *Writer) SetTimeout(conn interface{ SetWriteDeadline(time.Time) error }, d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deadliner, w.timeout = conn, d
}

// TryWriter is a destination that can refuse a write that would have to
// wait behind bytes it still holds from earlier writes: it then writes
// nothing and returns an error. TryWriteControl writes through it.
type TryWriter interface {
	TryWrite(p []byte) (int, error)
}

// write sends b within bound (0: unbounded); w.mu is held. try: through
// dst's TryWrite, if it has one.
func (w *Writer) write(b []byte, bound time.Duration, try bool) error {
	switch {
	case w.deadliner == nil:
	case bound > 0:
		w.deadliner.SetWriteDeadline(time.Now().Add(bound))
		w.bounded = true
	case w.bounded:
		w.deadliner.SetWriteDeadline(time.Time{})
		w.bounded = false
	}
	if w.broken {
		return ErrBroken
	}
	if try {
		if tw, ok := w.dst.(TryWriter); ok {
			return w.wrote(tw.TryWrite(b))
		}
	}
	return w.wrote(w.dst.Write(b))
}

// wrote notes a write's outcome: one cut partway breaks the stream.
func (w *Writer) wrote(n int, err error) error {
	if err != nil && n > 0 {
		w.broken = true
	}
	return err
}

// ErrBroken: an earlier write was cut partway, so no frame can follow.
var ErrBroken = errors.New("websocket: connection cut inside a frame")

// NewWriter returns a Writer to dst. toServer is true when this side is the
// client of the connection (the proxy towards Docker), whose frames must be
// masked.
func NewWriter(dst io.Writer, toServer bool) *Writer {
	return &Writer{dst: dst, toServer: toServer}
}

// headerLen is the length of the header for a payload of n bytes.
func (w *Writer) headerLen(n int) int {
	l := 2
	switch {
	case n > 0xffff:
		l += 8
	case n > 125:
		l += 2
	}
	if w.toServer {
		l += 4
	}
	return l
}

// putHeader writes a header into b, which must be exactly headerLen long,
// and returns the masking key (zero when unmasked).
func (w *Writer) putHeader(b []byte, fin bool, op Opcode, n int) (key [4]byte) {
	b[0] = byte(op)
	if fin {
		b[0] |= 0x80
	}
	var i int
	switch {
	case n > 0xffff:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
		i = 10
	case n > 125:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		i = 4
	default:
		b[1] = byte(n)
		i = 2
	}
	if w.toServer {
		b[1] |= 0x80
		binary.LittleEndian.PutUint32(key[:], rand.Uint32())
		copy(b[i:], key[:])
	}
	return key
}

// WriteFrame writes one frame whose payload is buf[off:end]. The header is
// built in buf[off-headerLen:off], so off must be at least MaxHeaderLen; in
// client role the payload is masked in place. Header and payload leave in a
// single Write, without copying or allocating.
func (w *Writer) WriteFrame(fin bool, op Opcode, buf []byte, off, end int) error {
	return w.writeFrame(fin, op, buf, off, end, [4]byte{}, false)
}

// WriteFrameRemask is WriteFrame for a payload still masked with inKey (as
// ReadChunkMasked leaves it): it is unmasked and, in client role, masked
// with this frame's own key in the same pass.
func (w *Writer) WriteFrameRemask(fin bool, op Opcode, buf []byte, off, end int, inKey [4]byte) error {
	return w.writeFrame(fin, op, buf, off, end, inKey, true)
}

func (w *Writer) writeFrame(fin bool, op Opcode, buf []byte, off, end int, inKey [4]byte, remask bool) error {
	n := end - off
	hl := w.headerLen(n)
	frame := buf[off-hl : end]
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closeSent {
		return ErrCloseSent
	}
	key := w.putHeader(frame[:hl], fin, op, n)
	if remask {
		for i := range key {
			key[i] ^= inKey[i]
		}
	}
	if w.toServer || remask {
		mask(key, 0, frame[hl:])
	}
	return w.write(frame, w.timeout, false)
}

// WriteControl writes a ping or pong frame with payload p (at most 125
// bytes, truncated beyond).
func (w *Writer) WriteControl(op Opcode, p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closeSent {
		return ErrCloseSent
	}
	return w.writeControlLocked(op, p, w.timeout, false)
}

// TryWriteControl is WriteControl unless another write is in progress (or
// dst, a TryWriter, holds bytes it would wait behind), in which case it
// writes nothing and reports false: heartbeats must not queue behind a
// write to a peer that stopped reading. The write must
// finish within within (or the Writer's timeout, if shorter), so that a
// peer that takes nothing cannot hold the caller.
func (w *Writer) TryWriteControl(op Opcode, p []byte, within time.Duration) bool {
	if !w.mu.TryLock() {
		return false
	}
	defer w.mu.Unlock()
	if w.closeSent {
		return false
	}
	if w.timeout > 0 && (within <= 0 || w.timeout < within) {
		within = w.timeout
	}
	return w.writeControlLocked(op, p, within, true) == nil
}

// Locked runs fn holding the Writer's lock, as a frame's write does:
// TryWriteControl finds the Writer busy meanwhile and does not wait.
func (w *Writer) Locked(fn func() error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fn()
}

// WriteClose writes a close frame with code and reason (cut to fit 125
// bytes without splitting a character); later writes fail with
// ErrCloseSent. Codes that may not be sent (1005, 1006) produce an empty
// close payload.
func (w *Writer) WriteClose(code int, reason string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closeSent {
		return ErrCloseSent
	}
	w.closeSent = true
	var p [maxControlPayload]byte
	n := 0
	if CloseCodeSendable(code) {
		const maxReason = maxControlPayload - 2
		if len(reason) > maxReason {
			reason = reason[:maxReason]
			for !utf8.ValidString(reason) {
				reason = reason[:len(reason)-1]
			}
		}
		binary.BigEndian.PutUint16(p[:], uint16(code))
		n = 2 + copy(p[2:], reason)
	}
	return w.writeControlLocked(OpClose, p[:n], w.timeout, false)
}

func (w *Writer) writeControlLocked(op Opcode, p []byte, bound time.Duration, try bool) error {
	if len(p) > maxControlPayload {
		p = p[:maxControlPayload]
	}
	hl := w.headerLen(len(p))
	// Control frames are rare: their buffer is pooled, not kept per Writer.
	ctrl := ctrlPool.Get().(*[MaxHeaderLen + maxControlPayload]byte)
	defer ctrlPool.Put(ctrl)
	frame := ctrl[:hl+len(p)]
	copy(frame[hl:], p)
	key := w.putHeader(frame[:hl], true, op, len(p))
	if w.toServer {
		mask(key, 0, frame[hl:])
	}
	return w.write(frame, bound, try)
}

var ctrlPool = sync.Pool{New: func() any { return new([MaxHeaderLen + maxControlPayload]byte) }}

// CloseSent reports whether a close frame has been written.
func (w *Writer) CloseSent() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closeSent
}
