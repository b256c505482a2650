package loop

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/zun-wsproxy/zun-wsproxy/internal/epoll"
)

// poller is the epoll instance behind a Loop; its wake pipe interrupts the
// wait for posted functions and Close.
//
// The loop never blocks in epoll_wait: it asks with a zero timeout, and
// when nothing is ready it waits in Go's network poller for the epoll
// descriptor itself to become readable. A goroutine blocked in epoll_wait
// would hold its processor in a system call until the scheduler took it
// back (up to a sysmon tick later, 20 µs to 10 ms), so every loop idle in
// epoll_wait took a processor from the handshakes, dials and lookups that
// run on goroutines.
//
// Go's poller does not watch the loop's epoll instance directly but a
// gate (ep, an *os.File on a second epoll instance) that watches it and
// that the loop closes while it runs long (closeGate, after gateAfter).
// Watched directly, every socket becoming ready while the loop runs would
// wake the thread that idles in Go's poller, for nothing (the loop finds
// the socket at its next zero-timeout wait): in echo, with 64 KiB
// messages, that thread was woken, preempting the loop on its processor,
// about once per two reads. Closing the gate and opening it again before
// the loop parks costs an epoll_ctl each, which a loop that parks after
// each keystroke would pay for nothing: short runs leave it open.
type poller struct {
	e       *epoll.Epoll
	gate    int // epoll instance watching e.FD
	ep      *os.File
	rc      syscall.RawConn
	stopped atomic.Bool
	// The wait in progress (loop goroutine only): waitFn, made once, is
	// what Go's poller calls; it appends to ready and sets werr.
	waitFn func(fd uintptr) bool
	ready  []event
	werr   error
	parked bool // the wait found nothing ready at first, and waited
	open   bool // the gate passes the loop's readiness on
}

// event is a ready socket: its id and what it is ready for.
type event struct {
	id uint64
	ev Events
}

// wakeID is the id of the wake pipe's events.
const wakeID = epoll.WakeID

func start() (*poller, error) {
	e, err := epoll.New()
	if err != nil {
		return nil, err
	}
	gate, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	if err := syscall.EpollCtl(gate, syscall.EPOLL_CTL_ADD, e.FD, &ev); err != nil {
		syscall.Close(gate)
		e.Close()
		return nil, fmt.Errorf("epoll gate: %w", err)
	}
	// Non-blocking, so that os.NewFile registers it with Go's poller.
	if err := syscall.SetNonblock(gate, true); err != nil {
		syscall.Close(gate)
		e.Close()
		return nil, fmt.Errorf("epoll gate: %w", err)
	}
	p := &poller{e: e, gate: gate, ep: os.NewFile(uintptr(gate), "epoll"), open: true}
	rc, err := p.ep.SyscallConn()
	if err != nil {
		p.close()
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	p.rc = rc
	p.waitFn = p.waitOnce
	return p, nil
}

// mask is what epoll watches a socket for, level-triggered.
func mask(ev Events) uint32 {
	var m uint32
	if ev&Readable != 0 {
		// Readable, peer hung up, or an error.
		m |= syscall.EPOLLIN | syscall.EPOLLRDHUP
	}
	if ev&Writable != 0 {
		m |= syscall.EPOLLOUT
	}
	return m
}

// add watches fd for ev (not nothing).
func (p *poller) add(fd int, id uint64, ev Events) error {
	return p.e.Ctl(syscall.EPOLL_CTL_ADD, fd, mask(ev), id)
}

// modify changes what fd is watched for from old to ev; nothing takes fd
// out of the epoll set (a socket that hung up would otherwise be reported
// ready, level-triggered, at every wait).
func (p *poller) modify(fd int, id uint64, old, ev Events) error {
	switch {
	case ev == old:
		return nil
	case ev == 0:
		p.e.Remove(fd)
		return nil
	case old == 0:
		return p.add(fd, id, ev)
	}
	return p.e.Ctl(syscall.EPOLL_CTL_MOD, fd, mask(ev), id)
}

func (p *poller) remove(fd int) { p.e.Remove(fd) }

// wait blocks until sockets are ready and appends them to ready; parked:
// nothing was ready at first, and the loop waited in Go's poller.
func (p *poller) wait(ready []event) (_ []event, parked bool, _ error) {
	p.ready, p.werr, p.parked = ready, nil, false
	err := p.rc.Read(p.waitFn)
	ready, werr := p.ready, p.werr
	p.ready, p.werr = nil, nil
	if err != nil {
		return ready, p.parked, fmt.Errorf("epoll_wait: %w", err)
	}
	return ready, p.parked, werr
}

// waitOnce asks epoll what is ready, without waiting; false: nothing is,
// and Go's poller is to wait for the epoll descriptor to be readable.
func (p *poller) waitOnce(fd uintptr) bool {
	if p.stopped.Load() {
		p.werr = ErrClosed
		return true
	}
	n, err := p.e.Ready()
	if err != nil && err != syscall.EINTR {
		p.werr = fmt.Errorf("epoll_wait: %w", err)
		return true
	}
	if n == 0 && !p.open {
		if beforeOpenGate != nil {
			beforeOpenGate()
		}
		if err := p.openGate(); err != nil {
			p.werr = err
			return true
		}
		// What became ready while the gate was closed may not be passed
		// on by opening it: the gate's entry for the loop's epoll set can
		// still be on the gate's ready list (no one takes the gate's
		// events), and then epoll_ctl wakes no one. So look once more.
		if n, err = p.e.Ready(); err != nil && err != syscall.EINTR {
			p.werr = fmt.Errorf("epoll_wait: %w", err)
			return true
		}
	}
	if n <= 0 {
		p.parked = true
		return false
	}
	for i := range p.e.Events[:n] {
		ev := &p.e.Events[i]
		var r Events
		if ev.Events&^syscall.EPOLLOUT != 0 {
			r |= Readable // input, hang-up or error: a read finds out which
		}
		if ev.Events&(syscall.EPOLLOUT|syscall.EPOLLERR|syscall.EPOLLHUP) != 0 {
			r |= Writable // room, or an error a write finds
		}
		p.ready = append(p.ready, event{epoll.ID(ev), r})
	}
	return true
}

func (p *poller) interrupt() { p.e.Interrupt() }

func (p *poller) drain() { p.e.Drain() }

func (p *poller) stop() {
	p.stopped.Store(true)
	p.interrupt()
}

func (p *poller) close() error {
	err := p.ep.Close()
	if cerr := p.e.Close(); err == nil {
		err = cerr
	}
	return err
}

// beforeOpenGate, if set (by tests), runs before a closed gate opens.
var beforeOpenGate func()

// openGate opens the gate, before the loop parks.
func (p *poller) openGate() error {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	if err := syscall.EpollCtl(p.gate, syscall.EPOLL_CTL_MOD, p.e.FD, &ev); err != nil {
		return fmt.Errorf("epoll gate: %w", err)
	}
	p.open = true
	return nil
}

// closeGate closes the gate while the loop runs: no events watched for
// (but the hang-ups and errors epoll always reports, which a ready socket
// never makes of an epoll set).
func (p *poller) closeGate() error {
	if !p.open {
		return nil
	}
	var ev syscall.EpollEvent
	if err := syscall.EpollCtl(p.gate, syscall.EPOLL_CTL_MOD, p.e.FD, &ev); err != nil {
		return fmt.Errorf("epoll gate: %w", err)
	}
	p.open = false
	return nil
}
