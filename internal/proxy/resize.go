package proxy

import (
	"context"
	"sync"
	"time"
)

// resizeTimeout bounds one resize call to Docker.
const resizeTimeout = 5 * time.Second

// resizer applies the web console's terminal sizes off the client's read
// path, so that keystrokes never wait for Docker's API: the last size
// asked wins, one goroutine at most calls Docker while a size is pending
// (none otherwise), and stop cancels the call under way and waits for it,
// so that no call outlives the session.
type resizer struct {
	apply func(ctx context.Context, rows, cols int) error

	mu         sync.Mutex // guards the following
	rows, cols int        // the size to apply next, if pending
	pending    bool
	stopped    bool               // nothing more is applied
	cancel     context.CancelFunc // the running goroutine's; nil if none
	exited     chan struct{}      // closed when the running goroutine returns
}

// request asks for the terminal to be rows×cols.
func (r *resizer) request(rows, cols int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.rows, r.cols, r.pending = rows, cols, true
	if r.cancel != nil {
		return // the running goroutine takes it
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.exited = cancel, make(chan struct{})
	go r.applyPending(ctx, r.exited)
}

// applyPending applies the pending size until none is left.
func (r *resizer) applyPending(ctx context.Context, exited chan struct{}) {
	defer close(exited)
	for {
		r.mu.Lock()
		if !r.pending || r.stopped {
			r.cancel()
			r.cancel = nil
			r.mu.Unlock()
			return
		}
		rows, cols := r.rows, r.cols
		r.pending = false
		r.mu.Unlock()
		call, cancel := context.WithTimeout(ctx, resizeTimeout)
		// A failed resize leaves the terminal usable: not a reason to end.
		r.apply(call, rows, cols)
		cancel()
	}
}

// stop cancels the call under way, if any, and returns once it has
// returned; later requests are ignored.
func (r *resizer) stop() {
	r.mu.Lock()
	r.stopped = true
	var exited chan struct{}
	if r.cancel != nil {
		r.cancel()
		exited = r.exited
	}
	r.mu.Unlock()
	if exited != nil {
		<-exited
	}
}
