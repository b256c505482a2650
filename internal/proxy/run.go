package proxy

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/loop"
	"github.com/zun-wsproxy/zun-wsproxy/internal/rawsock"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// A session has no goroutine of its own. Each direction runs a pump
// goroutine while there is something to read; a direction that has read
// nothing for IdleAfter parks on the Poller and its goroutine ends, so an
// idle session is only its memory and two sockets. (A web console session
// also runs one goroutine while a resize is pending: resize.go.) Whoever
// sees the session end first (a pump, the context, the heartbeat timer)
// moves it to closing and finishes it: sends the close frames, stops
// resizing, waits for the running pumps, closes both connections and calls
// done. The states and their transitions are listed in state.go.

// life is the part of a Session that starts, parks, wakes and finishes it.
type life struct {
	mu      sync.Mutex
	st      state // state.go; changed by to only
	running int   // pump goroutines alive: running while > 0, else parked
	stopped chan struct{}
	started time.Time
	timer   Timer
	every   time.Duration
	stopCtx func() bool
	done    func(Result)

	// The loop engine's (engine.go).
	lp      Loop
	onLoop  bool        // both sockets are served on the loop
	ticking bool        // a heartbeat is under way off the loop
	early   bool        // bytes came with the handshakes (set by Start)
	inline  atomic.Bool // the loop goroutine is serving the session
	serving *direction  // the direction it serves, if any (loop goroutine only)
	wtimer  *time.Timer // bounds writes pending on the loop (engine.go)
	// wdue is when wtimer fires (UnixNano; 0: stopped or fired): a later
	// check must not put back a sooner one.
	wdue atomic.Int64
}

// Start runs the session: done is called once, from some goroutine, after
// both connections are closed and every goroutine of the session ended.
// Cancelling ctx ends the session with 1001.
func (s *Session) Start(ctx context.Context, done func(Result)) {
	s.started = s.opts.Clock.Now()
	for _, t := range []*atomic.Int64{&s.clientSeen, &s.backendSeen, &s.dataSeen} {
		t.Store(s.started.UnixNano())
	}
	now := time.Now() // frames' stalls go by the system's time, as deadlines do
	s.clientIn.since, s.backendIn.since = now, now
	s.done = done
	s.stopped = make(chan struct{})
	s.mu.Lock()
	if s.st != admission {
		s.mu.Unlock()
		panic("proxy: Session started twice")
	}
	onLoop := s.startOnLoop()
	if onLoop {
		s.st.to(parked) // until the loop hands a direction over
	} else {
		s.pumpsLocked(2)
	}
	if s.every = s.checkInterval(); s.every > 0 {
		s.timer = s.opts.Clock.AfterFunc(s.every, s.tick)
	}
	s.mu.Unlock()
	if onLoop {
		s.serveEarly()
	} else {
		go s.fromClient.run()
		go s.fromContainer.run()
	}
	if ctx.Done() == nil {
		return // never cancelled: the owner calls Stop instead
	}
	stopCtx := context.AfterFunc(ctx, s.Stop)
	s.mu.Lock()
	s.stopCtx = stopCtx
	s.mu.Unlock()
}

// Stop ends the session as the proxy's shutdown does (1001 to both sides)
// and returns when it has ended; if it is already ending, or was never
// started, at once.
func (s *Session) Stop() { s.stop(end{side: proxySide}) }

// Run is Start that waits for the result.
func (s *Session) Run(ctx context.Context) Result {
	res := make(chan Result, 1)
	s.Start(ctx, func(r Result) { res <- r })
	return <-res
}

// tick applies heartbeats and timeouts (on the loop, for a session
// there).
func (s *Session) tick() {
	s.mu.Lock()
	if s.st.ending() {
		s.mu.Unlock()
		return
	}
	if s.onLoop {
		s.mu.Unlock()
		s.lp.Post(s.tickOnLoop)
		return
	}
	s.ticking = true
	s.mu.Unlock()
	e, stop := s.check(s.opts.Clock.Now(), s.started)
	s.mu.Lock()
	s.ticking = false
	s.mu.Unlock()
	s.afterCheck(e, stop)
}

// afterCheck acts on what check found.
func (s *Session) afterCheck(e end, stop bool) {
	if stop {
		s.stop(e)
		return
	}
	s.resetTimer()
}

func (s *Session) resetTimer() {
	s.mu.Lock()
	if !s.st.ending() {
		s.timer.Reset(s.every)
	}
	s.mu.Unlock()
}

// stop finishes the session for a reason found outside the pumps.
func (s *Session) stop(e end) {
	s.mu.Lock()
	if s.onLoop && !s.st.ending() {
		s.mu.Unlock()
		if s.stopFromOutside() {
			s.finish(e)
		}
		return
	}
	first := s.closingLocked()
	s.mu.Unlock()
	if first {
		s.finish(e)
	}
}

// pumpEnded is called by a pump goroutine that is about to return.
func (s *Session) pumpEnded(e end) {
	s.mu.Lock()
	first := s.closingLocked()
	s.pumpsLocked(-1)
	if !first {
		if s.running == 0 {
			close(s.stopped)
		}
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.finish(e)
}

// pumpsLocked counts delta more pump goroutines alive (s.mu is held): the
// session is running while there are some, parked while there are none.
func (s *Session) pumpsLocked(delta int) {
	s.running += delta
	switch {
	case s.running > 0 && (s.st == parked || s.st == admission):
		s.st.to(running)
	case s.running == 0 && s.st == running:
		s.st.to(parked)
	}
}

// closingLocked moves the session to closing (s.mu is held) and reports
// whether the caller is its finisher: false if it was closing already (or
// never started). Parked directions are taken off the Poller: if a wake is
// already on its way it sees the session closing and returns.
func (s *Session) closingLocked() bool {
	if !s.st.to(closing) {
		return false
	}
	for _, d := range []*direction{&s.fromClient, &s.fromContainer} {
		if d.parked {
			d.cancel()
			d.parked, d.cancel = false, nil
		}
	}
	return true
}

// finish ends the session after first: close frames out, pumps stopped,
// connections closed, done called.
func (s *Session) finish(first end) {
	res := s.closeBoth(first)
	if s.resize != nil {
		s.resize.stop()
	}
	s.mu.Lock()
	wait := s.running > 0
	if s.timer != nil {
		s.timer.Stop()
	}
	stopCtx := s.stopCtx
	s.mu.Unlock()
	if stopCtx != nil {
		stopCtx()
	}
	if wait {
		<-s.stopped
	}
	s.fromClient.release()
	s.fromContainer.release()
	s.fromClient.dropChunk()
	s.fromContainer.dropChunk()
	s.backend.Close()
	// A client whose close frame a pump read sends no more data frames
	// (RFC 6455 section 5.5.1), so nothing it sends can be left unread to
	// make the kernel reset the connection before the answer is read: it
	// is closed at once, without waiting for its FIN. Not where the proxy
	// pings the client: a ping crossing its close is answered with a pong
	// after it (section 5.5.2). (A client's answer to the proxy's close,
	// read while its side was parked, is read by lingerClose.)
	if res.ClientCode != 0 && (s.opts.PingClient || !s.clientClosed.Load()) {
		s.clientDL.lingerClose(s.opts.CloseTimeout)
	} else {
		s.client.Close()
	}
	res.ToContainer, res.ToClient = s.toContainer.Load(), s.toClient.Load()
	s.mu.Lock()
	s.st.to(closed)
	s.mu.Unlock()
	s.done(res)
}

// direction is one half of a session: a pump reading one connection.
type direction struct {
	s    *Session
	side side
	pump func() end
	// rc reaches the socket for the Poller; nil if it cannot park.
	rc     syscall.RawConn
	dl     *deadlines        // the connection's
	r      *websocket.Reader // its frames; nil on an exec stream
	parked bool              // guarded by s.mu
	cancel func() bool       // guarded by s.mu, while parked
	// boundary: the pump waits for a new frame, with all its state in the
	// Session, so a timeout there may park it. Owned by the pump.
	boundary bool
	in       *idleConn
	out      *sink // where its data goes
	// On the loop engine (engine.go), owned by the pump: resumable, it
	// reads a frame's payload where it can take the frame up again
	// later; mid, it stopped inside a frame whose bytes were late, and
	// midSince is when bytes of it last came.
	resumable, mid bool
	midSince       time.Time
	midMark        int64 // in.n at midSince
	// chunk holds chunkN bytes of a bulk chunk begun before the pump
	// parked inside a frame (chunkKey unmasks them), laid out from
	// chunk[chunkShift:] on (bulkAt); nil otherwise.
	chunk      *[]byte
	chunkN     int
	chunkShift int
	chunkKey   [4]byte
	reg        *loop.Reg // while on the loop; guarded by s.mu
}

// other is the session's other direction.
func (d *direction) other() *direction {
	if d == &d.s.fromClient {
		return &d.s.fromContainer
	}
	return &d.s.fromClient
}

// init sets the direction up to read c (as rawsock wraps it), whose
// deadlines dl owns.
func (d *direction) init(s *Session, sd side, c net.Conn, in *idleConn, dl *deadlines, pump func() end) {
	d.s, d.side, d.dl, d.pump, d.in = s, sd, dl, pump, in
	in.conn, in.d = c, d
	if s.opts.Poller != nil {
		d.rc = rawConn(c)
	}
}

// rawConn returns c's socket if c is a plain one that can be waited on
// from outside (not TLS, whose records may hold read-ahead).
func rawConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// run is a pump goroutine: it pumps until the direction ends or parks.
func (d *direction) run() {
	// Bytes left pending on the loop go first (engine.go).
	if err := d.s.flushPending(d.out); err != nil {
		d.s.pumpEnded(d.out.failure(err))
		return
	}
	for {
		d.arm()
		if d.after(d.pump()) {
			return
		}
		// Could not park: carry on with the goroutine.
	}
}

// after handles the end of a pump run; true: the goroutine is done.
func (d *direction) after(e end) bool {
	if !e.park {
		d.s.pumpEnded(e)
		return true
	}
	d.release()
	return d.park()
}

// release gives back the buffers the direction holds while it runs; it
// takes them again when it next needs them.
func (d *direction) release() {
	s := d.s
	if d.side == clientSide {
		s.clientR.Release()
		return
	}
	if s.backendR != nil {
		s.backendR.Release()
	}
	if s.small != nil {
		smallPool.Put(s.small)
		s.small = nil
	}
}

// arm sets the idle read deadline (unless the connection's deadlines are
// the closing ones: they stand).
func (d *direction) arm() {
	if d.rc == nil {
		return
	}
	d.dl.SetReadDeadline(time.Now().Add(d.s.opts.IdleAfter))
}

// park waits on the Poller for the socket to become readable; it reports
// false if the direction must keep its goroutine.
func (d *direction) park() bool {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.ending() {
		// Keep running: the closing deadlines end the pump.
		return false
	}
	if o := d.other(); s.lp != nil && s.running == 1 && !s.ticking && o.parked && o.rc != nil && o.cancel() {
		// Both directions idle: back to the loop.
		o.parked, o.cancel = false, nil
		if s.enterLoopLocked() == nil {
			s.pumpsLocked(-1)
			return true
		}
		if !o.waitPollerLocked() {
			s.pumpsLocked(1)
			go o.run()
		}
	}
	if !d.waitPollerLocked() {
		return false
	}
	s.pumpsLocked(-1)
	return true
}

// waitPollerLocked parks d on the Poller (s.mu is held); false if it
// cannot park.
func (d *direction) waitPollerLocked() bool {
	cancel, err := d.s.opts.Poller.Wait(d.rc, d.wake)
	if err != nil {
		d.rc = nil // never try again; block in reads as without a Poller
		d.dl.SetReadDeadline(time.Time{})
		return false
	}
	d.parked, d.cancel = true, cancel
	return true
}

// wake runs in a new goroutine when the parked socket is readable.
func (d *direction) wake() {
	s := d.s
	s.mu.Lock()
	if !d.parked || s.st.ending() {
		s.mu.Unlock()
		return
	}
	d.parked, d.cancel = false, nil
	s.pumpsLocked(1)
	s.mu.Unlock()
	d.run()
}

// nextFrame reads the next frame header; a timeout while waiting for it
// may park the direction.
func (d *direction) nextFrame(r *websocket.Reader) (websocket.Header, error) {
	if d.s.inline.Load() && d.out.holding() {
		// On the loop, with its output held up: frames read ahead wait
		// in the Reader.
		return websocket.Header{}, errWouldBlock
	}
	d.boundary = true
	h, err := r.NextFrame()
	d.boundary = false
	return h, err
}

// afterPong reports whether the direction may park right after a pong:
// it can park and nothing else has been read ahead.
func (d *direction) afterPong(r *websocket.Reader) bool {
	return d.rc != nil && r.Buffered() == 0 && !d.dl.ended()
}

// ended turns a read error into the direction's end: an idle timeout at a
// frame boundary parks it (a closing deadline's ends it).
func (d *direction) ended(err error) end {
	if err == errWouldBlock || d.rc != nil && errors.Is(err, os.ErrDeadlineExceeded) && !d.dl.ended() {
		return end{park: true}
	}
	return end{side: d.side, err: err}
}

// errStalled: a peer sent none of a begun frame's bytes for FrameTimeout.
var errStalled = errors.New("frame stalled")

// inFrame reports whether the direction is inside a frame: past its
// header, or with part of the header read.
func (d *direction) inFrame() bool {
	return !d.boundary || (d.r != nil && d.r.Buffered() > 0)
}

// idleConn is a connection as a pump reads it. The read deadline is set
// lazily, once per IdleAfter, not per read, so it can expire anywhere:
//
//   - Between frames (or on an exec stream, where every read is between
//     frames) the expiry reaches the pump, which parks. A direction that
//     cannot park has no deadline there, and waits on.
//   - Inside a frame the read goes on with a new deadline, as long as each
//     expiry finds bytes read since the one before; a frame that gets none
//     for FrameTimeout fails with errStalled. A peer that stops in the
//     middle of a frame cannot hold the pump (and its buffer) for ever.
//     Where the direction cannot park, a read that may wait inside a frame
//     arms the deadline first.
type idleConn struct {
	conn net.Conn
	d    *direction
	// Owned by the pump.
	armed bool      // a deadline is set (tracked where the direction cannot park)
	n     int64     // bytes read
	mark  int64     // n at the last expiry
	since time.Time // the last expiry that found bytes read since the one before
	// On the loop: reads at a frame boundary in this serve, and whether
	// a read of this serve came back short. A stream socket's read is
	// short only when it took all there was, so the next would find
	// nothing (a system call for EAGAIN): epoll says when more has come.
	loopReads int
	drained   bool
	raw       interface{ ReadNoWait([]byte) (int, error) }
}

// readNoWait is a read on the loop.
func (c *idleConn) readNoWait(p []byte) (int, error) {
	n, err := c.raw.ReadNoWait(p)
	if err == rawsock.ErrWouldBlock {
		return 0, errWouldBlock
	}
	c.n += int64(n)
	c.drained = n < len(p)
	return n, err
}

func (c *idleConn) Read(p []byte) (int, error) {
	d := c.d
	if d.s.inline.Load() && !d.inFrame() {
		// On the loop, between frames: one read per readiness, which
		// does not wait; epoll says when there is more.
		if c.loopReads > 0 || d.out.holding() {
			return 0, errWouldBlock
		}
		c.loopReads++
		return c.readNoWait(p)
	}
	if d.resumable && d.s.inline.Load() {
		// On the loop, inside a frame the pump can take up again: what
		// has come, without waiting; nothing while the data cannot go on.
		if d.out.holding() || c.drained {
			return 0, errWouldBlock
		}
		return c.readNoWait(p)
	}
	frameTimeout := d.s.opts.FrameTimeout
	if d.rc == nil && !c.armed && frameTimeout > 0 && d.inFrame() {
		c.armed = true
		d.dl.SetReadDeadline(time.Now().Add(d.s.opts.IdleAfter))
	}
	for {
		n, err := c.conn.Read(p)
		c.n += int64(n)
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || d.dl.ended() {
			return n, err
		}
		now := time.Now()
		if c.n != c.mark {
			c.mark, c.since = c.n, now
		}
		switch {
		case !d.inFrame() && d.rc != nil:
			return n, err // the pump may park
		case !d.inFrame():
			c.armed = false
			d.dl.SetReadDeadline(time.Time{})
		case frameTimeout > 0 && now.Sub(c.since) >= frameTimeout:
			return n, errStalled
		default:
			d.dl.SetReadDeadline(now.Add(d.s.opts.IdleAfter))
		}
		if n > 0 {
			return n, nil
		}
	}
}
