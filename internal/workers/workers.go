// Package workers runs short tasks (a session's set-up, its end, a
// gathered database query) on goroutines that outlive them.
//
// A new goroutine starts on a small stack (Go sizes it by the average in
// use, which a proxy's many shallow goroutines keep small), and a
// session's set-up (HTTP, SQL, the Docker handshake) grows it to 16 KiB
// in a few steps, each a copy that walks every frame; measured in the
// handshakes row, that was ~5% of the proxy's CPU per session. A worker
// grows its stack to 16 KiB in one step before each task (GrowStack): a
// no-op but for zeroing one frame while the stack is still grown, one
// shallow copy after the garbage collector has shrunk an idle worker's
// stack, never the steps deep in a handshake.
//
// The pool holds no queue: a task goes to an idle worker if there is one,
// else to a new goroutine, at once. At most a bound of workers stay idle;
// the rest end with their task, so an idle proxy holds a few goroutines,
// whose stacks the garbage collector shrinks as it does any goroutine's,
// and none per session. After Close a task runs on a goroutine of its own.
package workers

import (
	"sync"
	"sync/atomic"
)

// DefaultIdle is the idle workers a Pool keeps when New is given 0:
// enough for the bursts of sessions set up at once a load balancer's
// fail-over brings, at a few KiB of stack each.
const DefaultIdle = 64

// Pool runs tasks on reused goroutines. A nil *Pool runs each task on a
// goroutine of its own.
type Pool struct {
	tasks   chan func() // unbuffered: a send succeeds only into an idle worker
	quit    chan struct{}
	maxIdle int32
	idle    atomic.Int32 // workers waiting for a task, or about to

	closeOnce sync.Once
}

// New returns a pool that keeps at most maxIdle idle workers
// (0: DefaultIdle).
func New(maxIdle int) *Pool {
	if maxIdle <= 0 {
		maxIdle = DefaultIdle
	}
	return &Pool{tasks: make(chan func()), quit: make(chan struct{}), maxIdle: int32(maxIdle)}
}

// Go runs task on an idle worker, or on a new goroutine if none is idle.
// It never waits, as a go statement does not; tasks given after Close
// still run.
func (p *Pool) Go(task func()) {
	if p == nil {
		go task()
		return
	}
	select {
	case p.tasks <- task:
		return
	case <-p.quit:
		go task()
		return
	default:
	}
	go p.work(task)
}

// work runs task, then waits for the next one while fewer than maxIdle
// others wait, until Close.
func (p *Pool) work(task func()) {
	for {
		GrowStack()
		task()
		task = nil // not kept alive while waiting
		if p.idle.Add(1) > p.maxIdle {
			p.idle.Add(-1)
			return
		}
		select {
		case task = <-p.tasks:
			p.idle.Add(-1)
		case <-p.quit:
			p.idle.Add(-1)
			return
		}
	}
}

// Idle reports how many workers wait for a task.
func (p *Pool) Idle() int {
	if p == nil {
		return 0
	}
	return int(p.idle.Load())
}

// Close ends the idle workers, at once, and has the busy ones end with
// their tasks (whose owners wait for them). Tasks given afterwards still
// run, each on a goroutine of its own.
func (p *Pool) Close() {
	if p == nil {
		return
	}
	p.closeOnce.Do(func() { close(p.quit) })
}
