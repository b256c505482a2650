package server

import (
	"errors"
	"sync"
	"time"
)

// Limit errors, answered 503 or 429 with Retry-After.
var (
	errTooManySessions = errors.New("too many sessions")
	errRateLimited     = errors.New("too many failed authorizations from this address")
)

// retryError carries a Retry-After for its answer.
type retryError struct {
	err   error
	after time.Duration
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// sessionSlots bounds concurrent sessions, in total and per container.
type sessionSlots struct {
	mu           sync.Mutex
	max, perKey  int // 0: no bound
	total        int
	perContainer map[string]int
}

func newSessionSlots(max, perKey int) *sessionSlots {
	return &sessionSlots{max: max, perKey: perKey, perContainer: map[string]int{}}
}

// acquire takes a slot for key, or fails when a bound is reached. The
// caller gives it back with release.
func (s *sessionSlots) acquire(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.max > 0 && s.total >= s.max {
		return &retryError{err: errTooManySessions, after: 5 * time.Second}
	}
	if s.perKey > 0 && s.perContainer[key] >= s.perKey {
		return &retryError{err: errTooManySessions, after: 5 * time.Second}
	}
	s.total++
	s.perContainer[key]++
	return nil
}

func (s *sessionSlots) setLimits(max, perKey int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.max, s.perKey = max, perKey
}

func (s *sessionSlots) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

func (s *sessionSlots) release(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.perContainer[key]--; s.perContainer[key] <= 0 {
		delete(s.perContainer, key)
	}
}

// failureLimiter counts failed authorizations per client address in fixed
// windows; an address over the limit is refused until its window ends.
// Memory is bounded: at most maxTracked addresses are remembered.
type failureLimiter struct {
	mu     sync.Mutex
	limit  int // failures allowed per window; 0: no limit
	window time.Duration
	now    func() time.Time
	byAddr map[string]*failures
}

type failures struct {
	count int
	start time.Time
}

const maxTracked = 100_000

func newFailureLimiter(limit int, window time.Duration) *failureLimiter {
	return &failureLimiter{limit: limit, window: window, now: time.Now, byAddr: map[string]*failures{}}
}

func (l *failureLimiter) setLimit(limit int, window time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if window <= 0 {
		window = time.Minute
	}
	l.limit, l.window = limit, window
}

// check refuses an address that failed too often in its current window.
func (l *failureLimiter) check(addr string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.limit <= 0 {
		return nil
	}
	f := l.byAddr[addr]
	if f == nil {
		return nil
	}
	if rest := l.window - l.now().Sub(f.start); rest > 0 && f.count >= l.limit {
		return &retryError{err: errRateLimited, after: rest}
	}
	return nil
}

// fail records a failed authorization.
func (l *failureLimiter) fail(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.limit <= 0 {
		return
	}
	now := l.now()
	f := l.byAddr[addr]
	if f == nil || now.Sub(f.start) >= l.window {
		if f == nil && len(l.byAddr) >= maxTracked {
			l.sweep(now)
			if len(l.byAddr) >= maxTracked {
				return // under a flood of addresses, stop tracking new ones
			}
		}
		l.byAddr[addr] = &failures{count: 1, start: now}
		return
	}
	f.count++
}

// sweep forgets addresses whose window has ended.
func (l *failureLimiter) sweep(now time.Time) {
	for a, f := range l.byAddr {
		if now.Sub(f.start) >= l.window {
			delete(l.byAddr, a)
		}
	}
}
