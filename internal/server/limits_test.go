package server

import (
	"errors"
	"testing"
	"time"
)

func TestSessionSlots(t *testing.T) {
	s := newSessionSlots(3, 2)
	for i, c := range []struct {
		key string
		ok  bool
	}{{"a", true}, {"a", true}, {"a", false}, {"b", true}, {"c", false}} {
		err := s.acquire(c.key)
		if (err == nil) != c.ok {
			t.Fatalf("acquire #%d %s: %v", i, c.key, err)
		}
		if err != nil && !errors.Is(err, errTooManySessions) {
			t.Fatalf("error kind %v", err)
		}
	}
	s.release("a")
	if err := s.acquire("c"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	s.release("a")
	s.release("b")
	s.release("c")
	if s.total != 0 || len(s.perContainer) != 0 {
		t.Fatalf("leftovers %d %v", s.total, s.perContainer)
	}
}

func TestFailureLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newFailureLimiter(3, time.Minute)
	l.now = func() time.Time { return now }
	for i := 0; i < 3; i++ {
		if err := l.check("1.2.3.4"); err != nil {
			t.Fatalf("check before failure %d: %v", i, err)
		}
		l.fail("1.2.3.4")
	}
	err := l.check("1.2.3.4")
	var re *retryError
	if !errors.As(err, &re) || !errors.Is(err, errRateLimited) || re.after != time.Minute {
		t.Fatalf("after 3 failures: %v", err)
	}
	if err := l.check("5.6.7.8"); err != nil {
		t.Fatalf("another address: %v", err)
	}
	now = now.Add(61 * time.Second)
	if err := l.check("1.2.3.4"); err != nil {
		t.Fatalf("next window: %v", err)
	}
	// Bounded memory under a flood of addresses.
	for i := 0; i < maxTracked+10; i++ {
		l.fail(string(rune(i)))
	}
	if len(l.byAddr) > maxTracked {
		t.Fatalf("%d addresses tracked", len(l.byAddr))
	}
}
