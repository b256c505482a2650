package proxy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/loop"
	"github.com/zun-wsproxy/zun-wsproxy/internal/rawsock"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// The event-loop engine (Options.Loop). A session of plain sockets is in
// one of two modes, and in the session's states (state.go: running, parked,
// closing, closed) the mode says who does its work:
//
//   - on the loop (s.onLoop): both sockets are registered with one
//     internal/loop Loop, level-triggered, and are out of Go's network
//     poller (rawsock's Unpoll: there they would wake the poller's idle
//     thread at each readiness; leaving the loop puts them back, Repoll,
//     for the waits off it). When one is readable the loop
//     runs that direction's pump inline (serve): it reads once what is
//     ready, frames and regroups it as the goroutine engine does (the
//     same pump code), writes it on inline, and returns at the next frame
//     boundary with nothing left to read (no read that finds the socket
//     empty: epoll says when there is more). Heartbeats and timeouts are
//     posted to the loop by the timer, and Stop takes the session off the
//     loop from there, so on the loop only the loop goroutine reads,
//     writes or moves deadlines; no pump goroutine exists. A session
//     waiting for input holds no goroutine and no buffer.
//   - on goroutines: the goroutine engine (run.go), parking on the Poller.
//
// Transitions:
//
//   - start → loop: Start registers both sockets; bytes read with the
//     handshakes are served by a posted function.
//   - loop → goroutines (detach), on the loop: when a read inside a frame
//     or any write would wait (rawsock's wait hook), the session leaves
//     the loop: the direction being served goes on as a pump goroutine
//     (the loop's goroutine itself; the loop hands its work to a new
//     goroutine, loop.Handoff), with the idle deadline armed, and the
//     other direction parks on the Poller. Nothing on a loop ever waits.
//   - loop → goroutines (shed), on the loop: a socket found ready while
//     the loop is behind (a pass over 100 ms, Loop.Behind) is not served
//     inline; its session leaves the loop as in a detach, the direction
//     found readable as a pump goroutine.
//   - goroutines → loop: a direction that parks while the other is parked
//     too (and no heartbeat is being sent) takes the session back to the
//     loop.
//   - loop → closing: an end found on the loop (a pump's, a heartbeat's
//     or a timeout's) takes the session off the loop and finishes it on a
//     goroutine of its own (close frames, lingering close); Stop does the
//     same from outside through a posted function.
//
// Sessions with a Tap (recording writes to disk) stay on goroutines.

// Loop is an event loop that serves sessions (internal/loop).
type Loop interface {
	Add(rc syscall.RawConn, ready func(loop.Events)) (*loop.Reg, error)
	Post(fn func())
	Handoff()
	// Behind: the loop's sockets wait too long for their turn (shed).
	Behind() bool
}

// errWouldBlock: on the loop, a direction at a frame boundary has nothing
// more to read now.
var errWouldBlock = errors.New("nothing to read now")

// useLoop sets the session up for the loop engine, if it can use it.
func (s *Session) useLoop(clientIO, backendIO any) {
	o := s.opts
	if o.Loop == nil || o.Poller == nil || o.Tap != nil || s.fromClient.rc == nil || s.fromContainer.rc == nil {
		return
	}
	c, ok1 := clientIO.(*rawsock.Conn)
	b, ok2 := backendIO.(*rawsock.Conn)
	if !ok1 || !ok2 {
		return
	}
	s.lp = o.Loop
	s.clientIn.raw, s.backendIn.raw = c, b
	s.clientOut.raw, s.backendOut.raw = c, b

	c.SetWaitHook(s.beforeWait)
	b.SetWaitHook(s.beforeWait)
}

// startOnLoop registers the session with its loop (s.mu is held); false
// if it must run on goroutines.
func (s *Session) startOnLoop() bool {
	if s.lp == nil {
		return false
	}
	// Looked at before the loop may serve the session.
	s.early = s.clientR.Buffered() > 0 || len(s.pending) > 0 || (s.backendR != nil && s.backendR.Buffered() > 0)
	if err := s.enterLoopLocked(); err != nil {
		s.lp = nil
		return false
	}
	return true
}

// serveEarly serves, on the loop, bytes read with the handshakes.
func (s *Session) serveEarly() {
	if s.early {
		// Posted apart: if serving the first leaves the loop, this
		// goroutine is its pump, and the loop's next owner serves the
		// second.
		s.lp.Post(s.fromClient.serve)
		s.lp.Post(s.fromContainer.serve)
	}
}

// enterLoopLocked registers both sockets with the loop; s.mu is held and
// no pump goroutine runs.
func (s *Session) enterLoopLocked() error {
	// Out of Go's poller while the loop serves them (rawsock.Unpoll).
	c, b := s.clientOut.raw, s.backendOut.raw
	if err := c.Unpoll(); err != nil {
		return err
	}
	if err := b.Unpoll(); err != nil {
		c.Repoll()
		return err
	}
	rc, err := s.lp.Add(s.fromClient.rc, s.fromClient.ready)
	if err != nil {
		c.Repoll()
		b.Repoll()
		return err
	}
	rb, err := s.lp.Add(s.fromContainer.rc, s.fromContainer.ready)
	if err != nil {
		rc.Remove()
		c.Repoll()
		b.Repoll()
		return err
	}
	s.fromClient.reg, s.fromContainer.reg = rc, rb
	s.onLoop = true
	return nil
}

// leaveLoopLocked takes the session off the loop; s.mu is held. For
// pumps (repoll), the sockets go back into Go's poller at once: off the
// loop, Stop or finish may close a socket while a pump reads it, and only
// a polled socket's close waits for the reads under way. A session that
// is ending, with nothing else using its sockets, closes them without,
// unless it has to wait (rawsock puts a socket back for its first wait).
func (s *Session) leaveLoopLocked(repoll bool) {
	if !s.onLoop {
		return
	}
	s.onLoop = false
	if s.wtimer != nil {
		s.wtimer.Stop() // off the loop, writes wait within their bounds
		s.wdue.Store(0)
	}
	s.fromClient.reg.Remove()
	s.fromContainer.reg.Remove()
	s.fromClient.reg, s.fromContainer.reg = nil, nil
	if repoll {
		// One that fails leaves its socket unable to wait: a read or
		// write that must wait fails, which ends the session.
		s.clientOut.raw.Repoll()
		s.backendOut.raw.Repoll()
	}
}

// serve runs on the loop when d's socket is readable.
func (d *direction) serve() {
	s := d.s
	s.mu.Lock()
	if !s.onLoop || s.st.ending() {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.serving = d
	s.inline.Store(true)
	d.in.loopReads, d.in.drained = 0, false
	e := d.pump()
	if !s.inline.Load() {
		// The session left the loop while the pump waited: this goroutine
		// is the direction's pump goroutine now.
		if !d.after(e) {
			d.run()
		}
		return
	}
	s.inline.Store(false)
	s.serving = nil
	if e.park {
		if d.mid {
			d.lateFrame()
		}
		d.release()
		return
	}
	s.endOnLoop(e)
}

// shed takes the session off a loop that is behind (Loop.Behind) onto
// goroutines of its own, on the loop, between its functions; false if it
// stays. A loop is one goroutine to Go's scheduler: when the process has
// many goroutines ready, its sessions share one goroutine's turn, and a
// loop preempted in a long pass most likely waits in the scheduler's
// global queue behind them (seen: sessions stalled for 15 s under the
// race detector, among a test's 600 goroutines). So a socket found ready
// while the loop is behind is not served inline: its session goes to
// goroutines, each direction with a turn of its own, and the pass goes
// on at the cost of a goroutine start. Once both directions are idle
// (IdleAfter), park takes the session back to a loop.
//
// readable is the direction whose socket was found readable (nil if
// none): it goes on as a pump goroutine at once, not through the Poller.
func (s *Session) shed(readable *direction) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.onLoop || s.st.ending() {
		return false
	}
	s.leaveLoopLocked(true)
	shedCount.Add(1)
	s.fromClient.offLoopLocked(&s.fromClient == readable)
	s.fromContainer.offLoopLocked(&s.fromContainer == readable)
	return true
}

// offLoopLocked sends d on, as its session leaves the loop (s.mu held):
// as a pump goroutine when told to (now), when it has work in hand
// (bytes its sink holds, a frame begun, input read ahead) or when it
// cannot park; else parked on the Poller.
func (d *direction) offLoopLocked(now bool) {
	if now || d.out.holding() || d.mid || d.readAhead() || !d.waitPollerLocked() {
		d.s.pumpsLocked(1)
		go d.run()
	}
}

// shedCount counts the sessions shed from loops, in the process.
var shedCount atomic.Uint64

// SessionsShed is how many times a session left a loop that was behind
// (shed), in the process: loops too busy, or given too little time.
func SessionsShed() uint64 { return shedCount.Load() }

// dropChunk gives back the bulk buffer of a chunk begun inside a frame
// when the session ends there.
func (d *direction) dropChunk() {
	if bp := d.chunk; bp != nil {
		d.chunk = nil
		bufPool.Put(bp)
	}
}

// takeChunk returns the bulk buffer of the chunk d began before it parked
// inside a frame, the part of it the chunk is laid out in (bulkAt), how
// many bytes it holds and the key that unmasks them; else a pooled buffer
// and its part for a chunk whose first pre bytes the reader holds.
func (d *direction) takeChunk(pre int) (*[]byte, []byte, int, [4]byte) {
	if bp := d.chunk; bp != nil {
		d.chunk = nil
		return bp, (*bp)[d.chunkShift:], d.chunkN, d.chunkKey
	}
	bp := bufPool.Get().(*[]byte)
	return bp, bulkAt(bp, pre), 0, [4]byte{}
}

// keepChunk keeps bp, n bytes of a chunk laid out in buf (a part of it),
// until the frame goes on.
func (d *direction) keepChunk(bp *[]byte, buf []byte, n int, key [4]byte) {
	d.chunk, d.chunkN, d.chunkKey = bp, n, key
	d.chunkShift = len(*bp) - len(buf)
}

// lateFrame is called on the loop when d's pump stopped inside a frame:
// its bytes must keep coming, each within FrameTimeout of the one before.
// Not while the frame's data cannot go on (the other socket takes none):
// then the proxy is what stopped reading it, and the sink's timeout
// bounds the wait, as a blocked write does on goroutines; the frame's
// clock starts again when reading does.
func (d *direction) lateFrame() {
	if d.out.holding() {
		d.midMark = -1
		return
	}
	if d.in.n != d.midMark {
		d.midMark, d.midSince = d.in.n, time.Now()
	}
	if t := d.s.opts.FrameTimeout; t > 0 {
		d.s.armCheck(t - time.Since(d.midSince))
	}
}

// endOnLoop finishes the session from the loop, on a worker (off the loop).
func (s *Session) endOnLoop(e end) {
	s.mu.Lock()
	if !s.closingLocked() {
		s.mu.Unlock()
		return
	}
	// A failed loop runs posted functions (a heartbeat's ping) at once, on
	// their callers' goroutines, while it hands its sockets Failed: the
	// sockets go back into the poller, whose close waits for their writes.
	s.leaveLoopLocked(e.end == EndLoopFailed)
	s.mu.Unlock()
	s.opts.Workers.Go(func() { s.finish(e) })
}

// beforeWait is rawsock's wait hook: a read or write of the session is
// about to wait. On the loop, the session leaves it first.
func (s *Session) beforeWait() {
	if !s.inline.Load() {
		return // not on the loop (only the loop goroutine sets inline)
	}
	s.inline.Store(false)
	cur := s.serving
	s.serving = nil
	s.mu.Lock()
	s.leaveLoopLocked(true)
	if cur == nil {
		// A heartbeat's ping waits: no return to the loop meanwhile.
		s.ticking = true
	}
	for _, d := range []*direction{&s.fromClient, &s.fromContainer} {
		if d == cur {
			s.pumpsLocked(1)
			continue
		}
		// A direction stopped inside a frame goes on with it (and its
		// frame's deadlines); an ending one runs to its end.
		d.offLoopLocked(s.st.ending())
	}
	s.mu.Unlock()
	if cur != nil {
		// The idle deadline, as a pump goroutine has it.
		cur.dl.SetReadDeadline(time.Now().Add(s.opts.IdleAfter))
	}
	s.lp.Handoff()
}

// readAhead reports whether d holds input already read (with the
// handshakes): a Poller would not wake it for those bytes. On the loop.
func (d *direction) readAhead() bool {
	if d.r != nil && d.r.Buffered() > 0 {
		return true
	}
	return d == &d.s.fromContainer && len(d.s.pending) > 0
}

// tickOnLoop applies heartbeats and timeouts on the loop.
func (s *Session) tickOnLoop() {
	s.mu.Lock()
	if !s.onLoop || s.st.ending() {
		s.mu.Unlock()
		go s.tick() // it left the loop meanwhile
		return
	}
	s.mu.Unlock()
	s.inline.Store(true)
	s.serving = nil
	e, stop := s.check(s.opts.Clock.Now(), s.started)
	if !s.inline.Load() {
		// A ping waited: this goroutine left the loop.
		s.mu.Lock()
		s.ticking = false
		s.mu.Unlock()
		s.afterCheck(e, stop)
		return
	}
	s.inline.Store(false)
	if stop {
		s.endOnLoop(e)
		return
	}
	s.resetTimer()
}

// stopFromOutside takes the session off its loop, from the loop, and
// reports whether the caller is the one to finish it.
func (s *Session) stopFromOutside() bool {
	won := make(chan bool, 1)
	s.lp.Post(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.closingLocked() {
			won <- false
			return
		}
		s.leaveLoopLocked(false)
		won <- true
	})
	return <-won
}

// pendCap bounds what a sink keeps while its socket takes nothing: the
// largest frame a session writes (a chunk's output as base64, with its
// header) and room for control frames behind it.
const pendCap = room + (chunk+3+2)/3*4 + 1024

// pendPool holds sinks' pending bytes; a sink has a buffer only while its
// socket's buffer is full.
var pendPool = sync.Pool{New: func() any { return new([pendCap]byte) }}

// sink is a socket as the session writes to it: every write to it goes
// through here (the Writer's frames, an exec stream's bytes). Off the loop
// (and on the goroutine engine) a write waits as a socket's write does.
// On the loop a write never waits: what the socket's buffer does not take
// is kept (pending), the loop watches the socket for room and stops
// reading the socket whose data comes here (backpressure; the session's
// other reads go on), and the next writes queue behind it, up to pendCap.
// A write that does not fit takes the session off the loop first.
type sink struct {
	s       *Session
	sd      side          // whose socket it is
	conn    io.Writer     // the socket as rawsock wraps it
	raw     *rawsock.Conn // on the loop engine
	dl      *deadlines
	timeout time.Duration // a write's bound while it waits (0: none)

	mu       sync.Mutex
	buf      *[pendCap]byte // pending bytes: buf[off:end]
	off, end int
	since    time.Time // the socket last took bytes while some were pending
	err      error     // a pending write failed: the stream is cut
	// A write deadline asked for on the loop, where writes do not wait:
	// set on the socket only if a write is to wait after all.
	deadline    time.Time
	deadlineSet bool
}

func (k *sink) init(s *Session, sd side, conn io.Writer, dl *deadlines) {
	k.s, k.sd, k.conn, k.dl = s, sd, conn, dl
}

// Write writes all of p (see sink).
func (k *sink) Write(p []byte) (int, error) {
	if k.raw == nil {
		return k.conn.Write(p)
	}
	s := k.s
	k.mu.Lock()
	if k.err != nil {
		k.mu.Unlock()
		return 0, k.err
	}
	if s.inline.Load() {
		if k.buf == nil {
			n, err := k.raw.WriteNoWait(p)
			if err != rawsock.ErrWouldBlock {
				k.mu.Unlock()
				return n, err
			}
			k.buf = pendPool.Get().(*[pendCap]byte)
			k.off, k.end = 0, copy(k.buf[:], p[n:])
			k.since = time.Now()
			k.mu.Unlock()
			s.blocked(k)
			return len(p), nil
		}
		if k.end+len(p) > pendCap && k.off > 0 {
			k.end = copy(k.buf[:], k.buf[k.off:k.end])
			k.off = 0
		}
		if k.end+len(p) <= pendCap {
			k.end += copy(k.buf[k.end:], p)
			k.mu.Unlock()
			return len(p), nil
		}
		// More than a sink keeps: wait, off the loop.
		k.mu.Unlock()
		s.beforeWait()
		k.mu.Lock()
	}
	defer k.mu.Unlock()
	if err := k.flushLocked(false); err != nil {
		return 0, err
	}
	k.applyDeadline()
	return k.conn.Write(p)
}

// errHeld: a heartbeat's ping skips its beat rather than wait behind
// bytes kept on the loop (see TryWrite).
var errHeld = errors.New("output kept on the loop is not yet written")

// TryWrite is Write, unless the sink keeps bytes on the loop: then a
// heartbeat's ping writes nothing and skips its beat. Off the loop, the
// pump that left it is about to write them within the data's bound, and
// the ping would write them within its own short one, cutting the stream
// when the peer is slow; on the loop it would wait behind them, and its
// answer with it. Meanwhile the peer's progress through them is what
// tells it is alive (liveness). (Between the look and the write no bytes
// can be kept: only writes through the sink's Writer keep them, and its
// lock is held here; an exec stream's raw writes are never pinged.)
func (k *sink) TryWrite(p []byte) (int, error) {
	if k.raw != nil {
		k.mu.Lock()
		held := k.buf != nil
		k.mu.Unlock()
		if held {
			return 0, errHeld
		}
	}
	return k.Write(p)
}

// SetWriteDeadline is the Writer's bound on a write: on the loop, where a
// write never waits, it is only noted (a system call and a timer change
// per message saved).
func (k *sink) SetWriteDeadline(t time.Time) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.raw != nil && k.s.inline.Load() {
		k.deadline, k.deadlineSet = t, true
		return nil
	}
	k.deadlineSet = false
	return k.dl.SetWriteDeadline(t)
}

// applyDeadline sets the deadline noted on the loop; k.mu is held.
func (k *sink) applyDeadline() {
	if k.deadlineSet {
		k.deadlineSet = false
		k.dl.SetWriteDeadline(k.deadline)
	}
}

// holding reports whether the sink has pending bytes.
func (k *sink) holding() bool {
	if k.raw == nil {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.buf != nil
}

// flush writes the pending bytes, waiting (off the loop) within the
// sink's timeout.
func (k *sink) flush() error {
	if k.raw == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.flushLocked(true)
}

// flushPending writes what k kept on the loop, waiting, before a pump goes
// on off the loop. It holds the lock of k's Writer meanwhile, as a
// frame's write does: a heartbeat's ping, which only tries that lock,
// then skips this beat instead of waiting for k (and the session's
// checks with it) until the bytes are taken.
func (s *Session) flushPending(k *sink) error {
	var w *websocket.Writer
	switch k {
	case &s.clientOut:
		w = s.clientW
	case &s.backendOut:
		w = s.backendW
	}
	if w == nil {
		return k.flush()
	}
	return w.Locked(k.flush)
}

// flushLocked writes the pending bytes, waiting; bound: within the sink's
// timeout, or with no deadline if it has none (a deadline noted on the
// loop was a control frame's, not the data's); else the caller's
// deadline stands. k.mu is held.
func (k *sink) flushLocked(bound bool) error {
	if k.err != nil {
		return k.err
	}
	if k.buf == nil {
		return nil
	}
	if bound {
		k.deadlineSet = false
		var dl time.Time
		if k.timeout > 0 {
			dl = time.Now().Add(k.timeout)
		}
		k.dl.SetWriteDeadline(dl)
	} else {
		k.applyDeadline()
	}
	_, err := k.conn.Write(k.buf[k.off:k.end])
	k.drop()
	if err != nil {
		k.err = websocket.ErrBroken
		return err
	}
	return nil
}

func (k *sink) drop() {
	pendPool.Put(k.buf)
	k.buf, k.off, k.end = nil, 0, 0
}

// flushNoWait writes what the socket takes of the pending bytes, on the
// loop; done: none are left.
func (k *sink) flushNoWait() (done bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.buf == nil {
		return true, nil
	}
	n, err := k.raw.WriteNoWait(k.buf[k.off:k.end])
	if n > 0 {
		k.off += n
		k.since = time.Now()
	}
	switch {
	case err == rawsock.ErrWouldBlock:
		return false, nil
	case err != nil:
		k.drop()
		k.err = websocket.ErrBroken
		return false, err
	}
	k.drop()
	return true, nil
}

// stalled reports how long the sink has held bytes without the socket
// taking any (0: it holds none).
func (k *sink) stalled(now time.Time) time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.buf == nil {
		return 0
	}
	return max(now.Sub(k.since), 1)
}

// failure is how the session ends when a write to the sink's socket fails.
func (k *sink) failure(err error) end {
	if k.sd == clientSide {
		return end{side: clientSide, err: fmt.Errorf("write to client: %w", err)}
	}
	return end{side: containerSide, err: fmt.Errorf("write to container: %w", err)}
}

// blocked is called on the loop when k starts holding bytes.
func (s *Session) blocked(k *sink) {
	s.rewatch()
	if k.timeout > 0 {
		s.armCheck(k.timeout)
	}
}

// armCheck has the loop look at the session's stalls after d, or sooner
// if a check is due sooner already: on the loop, a peer that stops
// reading or stops inside a frame does not hold up a read or a write with
// a deadline, so a timer bounds it. (A frame trickling in a byte at a
// time re-arms its check at every byte; it must not put off the check of
// output the client has stopped taking.)
func (s *Session) armCheck(d time.Duration) {
	d = max(d, time.Millisecond)
	at := time.Now().Add(d).UnixNano()
	if s.wtimer == nil {
		s.wdue.Store(at)
		s.wtimer = time.AfterFunc(d, s.stallTimer)
		return
	}
	if due := s.wdue.Load(); due != 0 && due <= at {
		return
	}
	s.wdue.Store(at)
	s.wtimer.Reset(d)
}

// stallTimer has the loop look at the session's stalls.
func (s *Session) stallTimer() {
	s.wdue.Store(0) // checkStalls arms the next check
	s.lp.Post(s.checkStalls)
}

// checkStalls ends the session, on the loop, when a socket took none of
// its sink's bytes for the sink's timeout, or a peer sent none of a
// frame's bytes for FrameTimeout (the ends the goroutine engine's
// deadlines give); else it looks again when the next one would be due.
func (s *Session) checkStalls() {
	s.mu.Lock()
	if !s.onLoop || s.st.ending() {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	now := time.Now()
	var next time.Duration
	due := func(timeout, stalled time.Duration) bool {
		if timeout <= 0 || stalled <= 0 {
			return false
		}
		left := timeout - stalled
		if left <= 0 {
			return true
		}
		if next == 0 || left < next {
			next = left
		}
		return false
	}
	for _, k := range [...]*sink{&s.clientOut, &s.backendOut} {
		if due(k.timeout, k.stalled(now)) {
			s.endOnLoop(k.failure(os.ErrDeadlineExceeded))
			return
		}
	}
	for _, d := range [...]*direction{&s.fromClient, &s.fromContainer} {
		if d.mid && !d.out.holding() && due(s.opts.FrameTimeout, max(now.Sub(d.midSince), 1)) {
			s.endOnLoop(end{side: d.side, err: errStalled})
			return
		}
	}
	if next > 0 {
		s.armCheck(next)
	}
}

// rewatch has the loop watch each socket for what the session needs of
// it now: input, unless the socket that input goes to holds bytes (the
// client's sends pongs too, but those do not hold up keystrokes), and
// room, while its sink holds bytes. On the loop.
func (s *Session) rewatch() {
	toClient, toBackend := s.clientOut.holding(), s.backendOut.holding()
	var c, b loop.Events
	if !toBackend {
		c |= loop.Readable
	}
	if toClient {
		c |= loop.Writable
	}
	if !toClient {
		b |= loop.Readable
	}
	if toBackend {
		b |= loop.Writable
	}
	s.mu.Lock()
	rc, rb := s.fromClient.reg, s.fromContainer.reg
	s.mu.Unlock()
	if rc == nil || rb == nil {
		return
	}
	// An epoll_ctl that fails (out of kernel memory) costs backpressure,
	// or leaves bytes pending until the sink's timeout: nothing to do
	// about it here.
	rc.Watch(c)
	rb.Watch(b)
}

// ready runs on the loop when d's socket is ready: readable (d reads it)
// or writable (the sink on it, the other direction's, holds bytes).
func (d *direction) ready(ev loop.Events) {
	if ev&loop.Failed != 0 {
		// The loop serves the session no more: it ends (1011), released.
		d.s.endOnLoop(end{side: proxySide, why: "event loop failed", end: EndLoopFailed, code: websocket.CloseInternalError})
		return
	}
	s := d.s
	if s.lp.Behind() {
		var readable *direction
		if ev&loop.Readable != 0 {
			readable = d
		}
		if s.shed(readable) {
			return
		}
	}
	if ev&loop.Writable == 0 {
		d.serve()
		return
	}
	s.mu.Lock()
	ok := s.onLoop && !s.st.ending()
	s.mu.Unlock()
	if !ok {
		return
	}
	o := d.other()
	done, err := o.out.flushNoWait()
	if err != nil {
		s.endOnLoop(o.out.failure(err))
		return
	}
	if done {
		s.rewatch()
		// What o's reader holds, and one read: its socket is watched again.
		// (d's input, if any, is served at the next wait: serve may leave
		// the loop, and this goroutine with it.)
		o.serve()
	}
}
