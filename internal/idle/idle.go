// Package idle wakes parked connections when they become readable, so a
// console session that is waiting for input holds no goroutine (and no
// goroutine stack) while it waits.
//
// A session parks a direction by asking the Poller to call it back once the
// socket it reads has something to read (data, end of stream or an error);
// the direction's goroutine then ends. One goroutine per Poller waits for
// all parked sockets with epoll, next to Go's own netpoller.
//
// If that wait fails (for anything but an interrupted call), the Poller
// fails loudly rather than leaving sockets parked forever: it wakes every
// parked socket, refuses to park more (Wait returns an error wrapping
// ErrFailed, so callers keep their goroutines) and reports the cause to
// OnFail.
package idle

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
)

var (
	// ErrClosed: the Poller was closed.
	ErrClosed = errors.New("idle poller closed")
	// ErrFailed: the Poller's wait failed; it parks nothing any more.
	ErrFailed = errors.New("idle poller failed")
)

// waiter is one parked socket.
type waiter struct {
	fd   int
	wake func()
}

// Poller calls back parked sockets when they become readable.
type Poller struct {
	// OnFail, when set (before Start or the first Wait), is called once,
	// from the Poller's goroutine, if the Poller fails; err wraps
	// ErrFailed and the cause.
	OnFail func(err error)

	mu      sync.Mutex // guards the fields below
	impl    *poller    // nil until the first Wait; started lazily
	closed  bool
	failed  error // why the loop ended, if not by Close
	waiters map[uint64]waiter
	next    uint64
	done    chan struct{} // closed when the loop has ended
}

// New returns a Poller. Its goroutine starts with the first Wait and ends
// with Close.
func New() *Poller {
	return &Poller{waiters: make(map[uint64]waiter)}
}

// Wait arranges for wake to be called, in a goroutine of its own, once the
// socket behind rc is readable or hung up, or the Poller fails. Cancel
// undoes it. rc's socket must stay open until wake is called or Cancel
// returns.
func (p *Poller) Wait(rc syscall.RawConn, wake func()) (cancel func() bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.startLocked(); err != nil {
		return nil, err
	}
	p.next++
	id := p.next
	var addErr error
	ctlErr := rc.Control(func(fd uintptr) {
		addErr = p.impl.add(int(fd), id)
		if addErr == nil {
			p.waiters[id] = waiter{fd: int(fd), wake: wake}
		}
	})
	if ctlErr != nil {
		return nil, ctlErr
	}
	if addErr != nil {
		return nil, addErr
	}
	return func() bool { return p.cancel(id) }, nil
}

// Start starts the Poller's goroutine now rather than at the first Wait,
// so that its cost (a goroutine, three descriptors) is there from the start.
func (p *Poller) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.startLocked()
}

func (p *Poller) startLocked() error {
	if p.closed {
		return ErrClosed
	}
	if p.failed != nil {
		return p.failed
	}
	if p.impl == nil {
		impl, err := start(p)
		if err != nil {
			return err
		}
		p.impl, p.done = impl, make(chan struct{})
		go p.loop()
	}
	return nil
}

// cancel forgets waiter id; it reports false if its wake was already
// called (or is about to be).
func (p *Poller) cancel(id uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	w, ok := p.waiters[id]
	if !ok {
		return false
	}
	delete(p.waiters, id)
	p.impl.remove(w.fd)
	return true
}

// Parked reports how many sockets are waiting.
func (p *Poller) Parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiters)
}

// loop is the Poller's goroutine.
func (p *Poller) loop() {
	defer close(p.done)
	var ready []uint64
	for {
		var err error
		ready, err = p.impl.wait(ready[:0])
		if errors.Is(err, ErrClosed) {
			return
		}
		if err != nil {
			p.fail(err)
			return
		}
		for _, id := range ready {
			p.mu.Lock()
			w, ok := p.waiters[id]
			if ok {
				delete(p.waiters, id)
				p.impl.remove(w.fd)
			}
			p.mu.Unlock()
			if ok {
				go w.wake()
			}
		}
	}
}

// fail marks the Poller failed, wakes every parked socket and reports
// err.
func (p *Poller) fail(err error) {
	err = fmt.Errorf("%w: %w", ErrFailed, err)
	p.mu.Lock()
	p.failed = err
	parked := p.waiters
	p.waiters = make(map[uint64]waiter)
	for _, w := range parked {
		p.impl.remove(w.fd)
	}
	p.mu.Unlock()
	if p.OnFail != nil {
		p.OnFail(err)
	}
	for _, w := range parked {
		go w.wake()
	}
}

// Close stops the Poller's goroutine. Sockets still parked are not woken:
// their owners cancel them as they end.
func (p *Poller) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	impl, done := p.impl, p.done
	p.mu.Unlock()
	if impl == nil {
		return nil
	}
	impl.interrupt()
	<-done
	return impl.close()
}
