// Package loop serves sockets on event loops: a loop is a goroutine on a
// level-triggered epoll instance that calls a socket's function inline
// each time the socket is ready for what it is watched for (readable,
// writable), and runs functions posted to it between those calls. Only one goroutine at a time is a loop's owner, so
// whatever its functions touch needs no lock against the loop itself.
//
// A function that would have to wait (a write that finds no room, a read
// inside a frame that finds nothing) calls Handoff first: a new goroutine
// becomes the loop's owner and goes on serving the other sockets, while
// the caller waits as an ordinary goroutine and, once its function
// returns, ends. Waiting is the rare case; the common one (read what is
// ready, write it on) costs one read and one write, with no goroutine
// switch and no wake-up of another thread.
package loop

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrClosed: the loop was closed.
var ErrClosed = errors.New("event loop closed")

// Loop is one event loop.
type Loop struct {
	impl *poller
	// owner is the generation of the goroutine that owns the loop;
	// Handoff starts the next one.
	owner atomic.Uint64

	mu    sync.Mutex
	regs  map[uint64]*Reg
	next  uint64
	tasks []func()
	spare []func()
	// The posted functions runTasks is running, from batchNext on still
	// to run (the owner goroutine only): a Handoff in one of them gives
	// the rest to the next owner at once, not when its function returns.
	batch     []func()
	batchNext int
	closed    bool
	shut      bool  // Close was called
	failed    error // why the loop stopped by itself
	done      chan struct{}
	// doneOnce closes done: a loop stops once, whichever way.
	doneOnce sync.Once
	// onFail, if set, is told why the loop failed, when it does.
	onFail atomic.Pointer[func(error)]
	// kick, if set (by the loop's Group), has an idle processor wait in
	// Go's network poller. busySince is when the owner last parked, zero
	// before its first wait, kickedAt when it last parked or kicked (the
	// owner goroutine only).
	kick      func()
	busySince time.Time
	kickedAt  time.Time
	// passStart is when the owner's current pass over what its last wait
	// found began (the owner goroutine only; set before any function of
	// the pass runs).
	passStart time.Time
}

// gateAfter is how long a loop runs without parking before it stops its
// sockets' readiness from reaching Go's poller (the poller's gate) until
// it parks again. A keystroke's run is shorter and leaves it open.
const gateAfter = 100 * time.Microsecond

// kickAfter is how long a loop runs without parking before it kicks.
// Go's network poller wakes a parked goroutine (another loop, a
// handshake) only while some thread waits in it: a thread that finds
// nothing to run waits there, but one that finds work (the busy loop
// woken by a zero-timeout poll) does not, and the idle processor's
// thread may sleep elsewhere. Then readiness waits for the scheduler's
// monitor thread, which polls every 10 ms or so: at 100 sessions on
// two loops, a parked loop's sessions stood 10-20 ms at a time while
// the other loop ran and a processor idled. A kick every kickAfter of
// busy running bounds that wait to about kickAfter, at the cost of one
// goroutine wake-up on an idle processor. A loop that parks needs no
// kick: its thread, left without work, waits in the poller itself.
const kickAfter = 500 * time.Microsecond

// behindAfter is how long a pass over the sockets one wait found ready
// may run before the loop counts as behind (Behind). A pass of 100
// keystrokes takes about a millisecond, and a busy host's hiccups stretch
// one to tens (at 20 ms, most sessions of a 100-session benchmark on a
// noisy host left their loops, for 5-10% more CPU per message); a pass
// of 100 ms is a loop starved, its sockets waiting longer than a typist
// notices.
const behindAfter = 100 * time.Millisecond

// Events are what a socket is watched for, or found ready for.
type Events uint8

const (
	// Readable: input, the end of the stream, or an error.
	Readable Events = 1 << iota
	// Writable: room to write, or an error.
	Writable
	// Failed: the loop failed and serves the socket no more (it is no
	// longer registered); given once, whatever the socket is watched for.
	Failed
)

// Reg is a socket registered with a loop.
type Reg struct {
	l     *Loop
	id    uint64
	fd    int
	ready func(Events)
	watch Events // guarded by l.mu; changed on the loop only
}

// New starts a loop. Alone, it does not kick (kickAfter): a Group's
// loops do.
func New() (*Loop, error) { return startLoop(nil) }

func startLoop(kick func()) (*Loop, error) {
	impl, err := start()
	if err != nil {
		return nil, err
	}
	l := &Loop{impl: impl, regs: make(map[uint64]*Reg), next: wakeID, done: make(chan struct{}), kick: kick}
	l.owner.Store(1)
	go l.run(1)
	return l, nil
}

// Add registers the socket behind rc, watched for Readable: ready is
// called on the loop with what it is ready for, among what it is watched
// for, each time it is (level-triggered) until Remove. The socket must
// stay open until Remove has returned.
func (l *Loop) Add(rc syscall.RawConn, ready func(Events)) (*Reg, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	l.next++
	r := &Reg{l: l, id: l.next, ready: ready, watch: Readable}
	var addErr error
	if err := rc.Control(func(fd uintptr) {
		r.fd = int(fd)
		addErr = l.impl.add(r.fd, r.id, Readable)
	}); err != nil {
		return nil, err
	}
	if addErr != nil {
		return nil, addErr
	}
	l.regs[r.id] = r
	return r, nil
}

// Remove stops serving the socket; ready is not called again once Remove
// has returned, unless it is running (on the loop) already.
func (r *Reg) Remove() {
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.regs[r.id]; !ok {
		return
	}
	delete(l.regs, r.id)
	if r.watch != 0 {
		l.impl.remove(r.fd)
	}
}

// Watch changes what the socket is watched for (0: nothing, until the
// next Watch); called on the loop. A change takes one epoll_ctl.
func (r *Reg) Watch(ev Events) error {
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.regs[r.id]; !ok || ev == r.watch {
		return nil
	}
	if err := l.impl.modify(r.fd, r.id, r.watch, ev); err != nil {
		return err
	}
	r.watch = ev
	return nil
}

// Post has fn run on the loop, between calls of the sockets' functions.
// On a closed loop fn runs at once, on the caller's goroutine.
func (l *Loop) Post(fn func()) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		fn()
		return
	}
	l.tasks = append(l.tasks, fn)
	first := len(l.tasks) == 1
	l.mu.Unlock()
	if first {
		l.impl.interrupt()
	}
}

// Handoff is called on the loop, by a socket's function or a posted one
// that is about to wait: another goroutine becomes the loop's owner, and
// the caller's goroutine ends when its function returns.
func (l *Loop) Handoff() {
	g := l.owner.Add(1)
	if l.Err() != nil {
		// A failed loop serves nothing more: no goroutine takes it over
		// (its wait would only fail again). A closing one still needs
		// an owner, to see the close and let Close return.
		return
	}
	if l.batch != nil {
		if rest := l.batch[l.batchNext:]; len(rest) > 0 {
			l.mu.Lock()
			l.tasks = append(rest[:len(rest):len(rest)], l.tasks...)
			l.mu.Unlock()
			l.impl.interrupt()
		}
		l.batch = nil
	}
	go l.run(g)
}

// Behind reports, on the loop, whether its current pass over the sockets
// found ready has run longer than behindAfter: the sockets later in it
// wait that long for their turn, because the loop has more to do than one
// goroutine can, or because Go's scheduler gives it little time (a loop is
// one goroutine among the process's: with many others ready, TLS sessions
// or a busy host's, its sockets share one goroutine's turn). What a socket's
// function may do then is leave the loop for goroutines of its own.
// Only from a function the loop runs (a socket's, or a posted one).
func (l *Loop) Behind() bool {
	return time.Since(l.passStart) > behindAfter
}

// run is the loop's goroutine of generation gen.
func (l *Loop) run(gen uint64) {
	var ready []event
	for {
		var err error
		var parked bool
		ready, parked, err = l.impl.wait(ready[:0])
		if err != nil {
			l.fail(err)
			return
		}
		now := time.Now()
		l.passStart = now
		if parked || l.busySince.IsZero() {
			l.busySince, l.kickedAt = now, now
		} else if busy := now.Sub(l.busySince); busy >= gateAfter {
			if err := l.impl.closeGate(); err != nil {
				l.fail(err)
				return
			}
			if l.kick != nil && now.Sub(l.kickedAt) >= kickAfter {
				l.kick()
				l.kickedAt = now
			}
		}
		for _, e := range ready {
			if e.id == wakeID {
				l.impl.drain()
				if !l.runTasks(gen) {
					return
				}
				continue
			}
			l.mu.Lock()
			r := l.regs[e.id]
			var ev Events
			if r != nil {
				// Watched for, now: an earlier function of the batch may
				// have changed it.
				ev = e.ev & r.watch
			}
			l.mu.Unlock()
			if ev != 0 {
				r.ready(ev)
				if l.owner.Load() != gen {
					return
				}
			}
		}
	}
}

// fail ends the loop's goroutine when its wait failed (err). If the loop
// was not closed, it has failed: it is closed, whoever is to know is told
// (OnFail), and every socket registered is unregistered and its function
// called with Failed, on this goroutine, so that what the loop served ends
// instead of waiting for events that never come. Then the posted
// functions run (after a close, those a handoff put back after Close took
// the rest): they find nothing left to serve on the loop. Then Close may
// go on.
func (l *Loop) fail(err error) {
	l.mu.Lock()
	shut := l.shut
	var regs map[uint64]*Reg
	if !shut {
		l.failed, l.closed = err, true
		regs = l.regs
		l.regs = make(map[uint64]*Reg)
	}
	tasks := l.tasks
	l.tasks = nil
	l.mu.Unlock()
	if !shut {
		if fn := l.onFail.Load(); fn != nil {
			(*fn)(err)
		}
		for _, r := range regs {
			if r.watch != 0 {
				l.impl.remove(r.fd)
			}
			r.ready(Failed)
		}
	}
	for _, fn := range tasks {
		fn()
	}
	l.stopped()
}

// stopped tells Close the loop's goroutine is done.
func (l *Loop) stopped() { l.doneOnce.Do(func() { close(l.done) }) }

// Err reports why the loop stopped by itself, if it did (nil while it
// runs and after Close).
func (l *Loop) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// runTasks runs the posted functions; false: one of them handed the loop
// off.
func (l *Loop) runTasks(gen uint64) bool {
	l.mu.Lock()
	tasks := l.tasks
	l.tasks, l.spare = l.spare[:0], nil
	l.mu.Unlock()
	l.batch = tasks
	for i, fn := range tasks {
		tasks[i] = nil
		l.batchNext = i + 1
		fn()
		if l.owner.Load() != gen {
			return false // Handoff gave the rest to the new owner
		}
	}
	l.batch = nil
	l.mu.Lock()
	if l.spare == nil {
		l.spare = tasks[:0]
	}
	l.mu.Unlock()
	return true
}

// Close stops the loop once it is between functions. Sockets still
// registered are not served any more. If the loop had failed, Close
// returns why.
func (l *Loop) Close() error {
	l.mu.Lock()
	if l.shut {
		l.mu.Unlock()
		return nil
	}
	l.shut, l.closed = true, true
	tasks := l.tasks
	l.tasks = nil
	l.mu.Unlock()
	for _, fn := range tasks {
		fn()
	}
	l.impl.stop()
	<-l.done
	// Forgotten before the descriptor is closed: a Remove or Watch after
	// Close must not reach epoll_ctl with a number the process may have
	// given to another file by then.
	l.mu.Lock()
	l.regs = nil
	failed := l.failed
	l.mu.Unlock()
	err := l.impl.close()
	if failed != nil {
		return fmt.Errorf("event loop failed: %w", failed)
	}
	return err
}

// Group is a set of loops, about one per processor, and the goroutine
// their kicks wake (kickAfter): readying it has the scheduler start
// a thread on an idle processor, which, finding nothing else to do,
// waits in the network poller.
type Group struct {
	loops       []*Loop
	next        atomic.Uint32
	kicks       chan struct{}
	stopKeeper  chan struct{}
	keeperDone  chan struct{}
	closeKeeper sync.Once
}

// NewGroup starts n loops (0: GOMAXPROCS).
func NewGroup(n int) (*Group, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	g := &Group{kicks: make(chan struct{}, 1), stopKeeper: make(chan struct{}), keeperDone: make(chan struct{})}
	go g.keep()
	for i := 0; i < n; i++ {
		l, err := startLoop(g.kick)
		if err != nil {
			g.Close()
			return nil, err
		}
		g.loops = append(g.loops, l)
	}
	return g, nil
}

// keep is the goroutine that kicks wake; Close stops it.
func (g *Group) keep() {
	defer close(g.keeperDone)
	for {
		select {
		case <-g.kicks:
		case <-g.stopKeeper:
			return
		}
	}
}

// kick readies keep, unless a kick is pending already. It never blocks,
// after Close too (kicks stays open: a loop may still kick).
func (g *Group) kick() {
	select {
	case g.kicks <- struct{}{}:
	default:
	}
}

// Pick returns the loop for a new session, in turn, passing over loops
// that failed; nil if every one did.
func (g *Group) Pick() *Loop {
	start := int(g.next.Add(1))
	for i := range g.loops {
		if l := g.loops[(start+i)%len(g.loops)]; l.Err() == nil {
			return l
		}
	}
	return nil
}

// OnFail has fn told, from the failing loop's goroutine, why a loop of
// the group failed, when it does.
func (g *Group) OnFail(fn func(error)) {
	for _, l := range g.loops {
		l.onFail.Store(&fn)
	}
}

// Close closes every loop, then stops the goroutine their kicks wake.
func (g *Group) Close() error {
	var first error
	for _, l := range g.loops {
		if err := l.Close(); err != nil && first == nil {
			first = err
		}
	}
	g.closeKeeper.Do(func() {
		close(g.stopKeeper)
		<-g.keeperDone
	})
	return first
}

// Registered reports how many sockets the loop serves.
func (l *Loop) Registered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.regs)
}

// Registered reports how many sockets the group's loops serve.
func (g *Group) Registered() int {
	n := 0
	for _, l := range g.loops {
		n += l.Registered()
	}
	return n
}
