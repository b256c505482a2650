package server

import (
	"context"
	"errors"
	"sync"
	"time"
)

// /readyz is served on the public console port, unauthenticated, and its
// check pings the store and the runtime: answered afresh per request, a
// flood of it would be a flood of pings (each with its own timeout)
// against Zun's database and every Docker engine. So one check runs at a
// time, its result serves every request for readyFor after it ends, and a
// request that comes while a check runs waits for that check rather than
// starting another: at most one ping of each dependency per readyFor,
// whatever the request rate, and an answer never more than readyFor old.
const (
	readyFor     = time.Second
	readyTimeout = 5 * time.Second // one check's bound
)

// errCheckFailed is the result of a check that panicked.
var errCheckFailed = errors.New("readiness check failed")

// readiness is the shared, briefly cached readiness check.
type readiness struct {
	check func(context.Context) error

	mu      sync.Mutex // guards the following
	err     error      // the last check's result
	at      time.Time  // when it ended; zero before the first
	running chan struct{}
}

// get returns the last result if it is fresh, else that of the check in
// flight, else that of a new check run on the caller's goroutine. A caller
// whose ctx ends stops waiting; the check it waited for goes on for the
// others.
func (r *readiness) get(ctx context.Context) error {
	r.mu.Lock()
	if !r.at.IsZero() && time.Since(r.at) < readyFor {
		defer r.mu.Unlock()
		return r.err
	}
	if running := r.running; running != nil {
		r.mu.Unlock()
		select {
		case <-running:
		case <-ctx.Done():
			return ctx.Err()
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.err
	}
	done := make(chan struct{})
	r.running = done
	r.mu.Unlock()

	err := errCheckFailed
	defer func() { // even if the check panics, the waiters are let go
		r.mu.Lock()
		r.err, r.at, r.running = err, time.Now(), nil
		r.mu.Unlock()
		close(done)
	}()
	// Not the caller's context: others wait for this result.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyTimeout)
	defer cancel()
	err = r.check(cctx)
	return err
}
