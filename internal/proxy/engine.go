package proxy

import (
	"errors"
	"syscall"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/loop"
	"github.com/zun-wsproxy/zun-wsproxy/internal/rawsock"
)

// The event-loop engine (Options.Loop). A session of plain sockets is in
// one of two modes, and in the session's states (state.go: running, parked,
// closing, closed) the mode says who does its work:
//
//   - on the loop (s.onLoop): both sockets are registered with one
//     internal/loop Loop, level-triggered. When one is readable the loop
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
	Add(rc syscall.RawConn, ready func()) (*loop.Reg, error)
	Post(fn func())
	Handoff()
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
		s.lp.Post(func() {
			s.fromClient.serve()
			s.fromContainer.serve()
		})
	}
}

// enterLoopLocked registers both sockets with the loop; s.mu is held and
// no pump goroutine runs.
func (s *Session) enterLoopLocked() error {
	rc, err := s.lp.Add(s.fromClient.rc, s.fromClient.serve)
	if err != nil {
		return err
	}
	rb, err := s.lp.Add(s.fromContainer.rc, s.fromContainer.serve)
	if err != nil {
		rc.Remove()
		return err
	}
	s.fromClient.reg, s.fromContainer.reg = rc, rb
	s.onLoop = true
	return nil
}

// leaveLoopLocked takes the session off the loop; s.mu is held.
func (s *Session) leaveLoopLocked() {
	if !s.onLoop {
		return
	}
	s.onLoop = false
	s.fromClient.reg.Remove()
	s.fromContainer.reg.Remove()
	s.fromClient.reg, s.fromContainer.reg = nil, nil
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
	d.in.loopReads = 0
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
		d.release()
		return
	}
	s.endOnLoop(e)
}

// endOnLoop finishes the session from the loop, on a goroutine of its own.
func (s *Session) endOnLoop(e end) {
	s.mu.Lock()
	if !s.closingLocked() {
		s.mu.Unlock()
		return
	}
	s.leaveLoopLocked()
	s.mu.Unlock()
	go s.finish(e)
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
	s.leaveLoopLocked()
	if cur == nil {
		// A heartbeat's ping waits: no return to the loop meanwhile.
		s.ticking = true
	}
	for _, d := range []*direction{&s.fromClient, &s.fromContainer} {
		if d == cur {
			s.pumpsLocked(1)
			continue
		}
		if s.st.ending() || !d.waitPollerLocked() {
			s.pumpsLocked(1)
			go d.run()
		}
	}
	s.mu.Unlock()
	if cur != nil {
		// The idle deadline, as a pump goroutine has it.
		cur.dl.SetReadDeadline(time.Now().Add(s.opts.IdleAfter))
	}
	s.lp.Handoff()
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
		s.leaveLoopLocked()
		won <- true
	})
	return <-won
}
