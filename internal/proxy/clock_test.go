package proxy

import (
	"sync"
	"time"
)

// fakeClock is a Clock the test moves by hand. Advance runs the functions
// that come due, each on a goroutine of its own as time.AfterFunc does,
// and returns a channel closed once they have all returned: a check that
// does not end the session returns at once, one that does returns when
// the session has ended.
type fakeClock struct {
	mu     sync.Mutex // guards all below
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c      *fakeClock
	at     time.Time
	f      func()
	active bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1e9, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f, active: true}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.at, t.active = t.c.now.Add(d), true
	return was
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

// armed reports whether a function waits to come due: the session has
// started, or its last check has set the next.
func (c *fakeClock) armed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.timers {
		if t.active {
			return true
		}
	}
	return false
}

// Advance moves the clock by d and runs what came due.
func (c *fakeClock) Advance(d time.Duration) <-chan struct{} {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	for _, t := range c.timers {
		if t.active && !t.at.After(c.now) {
			t.active = false
			due = append(due, t.f)
		}
	}
	c.mu.Unlock()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, f := range due {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	go func() { wg.Wait(); close(done) }()
	return done
}
