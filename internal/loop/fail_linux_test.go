package loop

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// closeEpoll makes the loop's next wait fail in Go's poller: its epoll
// descriptor is closed under it.
func closeEpoll(t *testing.T, l *Loop) { l.impl.ep.Close() }

// failEpollWait makes the loop's next epoll_wait itself fail: the loop
// asks a descriptor that is no epoll instance (EINVAL).
func failEpollWait(t *testing.T, l *Loop) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Close(p[0])
		syscall.Close(p[1])
	})
	l.Post(func() { l.impl.e.FD = p[0] })
}

// A loop whose wait fails calls each registered socket's function once
// with Failed (whatever it is watched for), unregisters it, runs posted
// functions at once from then on, refuses new sockets, and Close returns
// why it failed instead of hanging.
func TestFailedLoopHandsItsSocketsFailed(t *testing.T) {
	for _, c := range []struct {
		name  string
		fault func(*testing.T, *Loop)
	}{
		{"epoll descriptor closed", closeEpoll},
		{"epoll_wait fails", failEpollWait},
	} {
		t.Run(c.name, func(t *testing.T) { testFailedLoop(t, c.fault) })
	}
}

func testFailedLoop(t *testing.T, fault func(*testing.T, *Loop)) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	const n = 3
	got := make(chan Events, 2*n)
	var regs []*Reg
	for i := 0; i < n; i++ {
		_, accepted := testenv.SocketPair(t, "tcp")
		r, err := l.Add(rawConn(t, accepted), func(ev Events) { got <- ev })
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, r)
	}
	// One watched for nothing: it is not in the epoll set, but served.
	done := make(chan struct{})
	l.Post(func() { regs[0].Watch(0); close(done) })
	<-done

	fault(t, l)
	for i := 0; i < n; i++ {
		select {
		case ev := <-got:
			if ev != Failed {
				t.Fatalf("socket function called with %v, want Failed (%v)", ev, Failed)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d sockets told the loop failed", i, n)
		}
	}
	if l.Err() == nil {
		t.Fatal("Err() = nil after the wait failed")
	}
	if l.Registered() != 0 {
		t.Fatalf("Registered = %d after the failure, want 0", l.Registered())
	}
	ran := false
	l.Post(func() { ran = true })
	if !ran {
		t.Fatal("a function posted to the failed loop did not run at once")
	}
	_, accepted := testenv.SocketPair(t, "tcp")
	if _, err := l.Add(rawConn(t, accepted), func(Events) {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add on the failed loop: %v, want ErrClosed", err)
	}
	for _, r := range regs {
		r.Remove() // nothing left to remove
	}
	closeLoop(t, l, true)
	select {
	case ev := <-got:
		t.Fatalf("socket function called again (%v) after the failure", ev)
	default:
	}
}

// Close calls no socket's function: only a failure does.
func TestCloseHandsNoSocketFailed(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	_, accepted := testenv.SocketPair(t, "tcp")
	called := make(chan Events, 1)
	if _, err := l.Add(rawConn(t, accepted), func(ev Events) { called <- ev }); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	select {
	case ev := <-called:
		t.Fatalf("socket function called with %v on Close", ev)
	default:
	}
}

// A function that hands the loop off while the loop is failing (one
// posted before the failure and run by it, or one run at once after it)
// starts no new owner: the loop stops once, its sockets are told Failed,
// and Close returns why.
func TestHandoffOnFailedLoop(t *testing.T) {
	for _, c := range []struct {
		name string
		post func(*testing.T, *Loop, <-chan Events)
	}{
		{"posted before the failure", func(t *testing.T, l *Loop, failed <-chan Events) {
			l.Post(func() {
				failEpollWait(t, l)
				l.Post(func() { l.Handoff() })
			})
			waitFailed(t, failed)
		}},
		{"posted after the failure", func(t *testing.T, l *Loop, failed <-chan Events) {
			l.Post(func() { failEpollWait(t, l) })
			waitFailed(t, failed)
			ran := false
			l.Post(func() { l.Handoff(); ran = true })
			if !ran {
				t.Fatal("a function posted to the failed loop did not run at once")
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, err := New()
			if err != nil {
				t.Fatal(err)
			}
			_, accepted := testenv.SocketPair(t, "tcp")
			failed := make(chan Events, 4)
			if _, err := l.Add(rawConn(t, accepted), func(ev Events) { failed <- ev }); err != nil {
				t.Fatal(err)
			}
			c.post(t, l, failed)
			closeLoop(t, l, true)
		})
	}
}

func waitFailed(t *testing.T, failed <-chan Events) {
	t.Helper()
	select {
	case ev := <-failed:
		if ev != Failed {
			t.Fatalf("socket function called with %v, want Failed", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the socket was not told the loop failed")
	}
}

// A group's failed loop is reported once, with why, and passed over by
// Pick; with every loop failed Pick gives nil (sessions run on
// goroutines).
func TestGroupPassesOverFailedLoops(t *testing.T) {
	g, err := NewGroup(2)
	if err != nil {
		t.Fatal(err)
	}
	reported := make(chan error, 4)
	g.OnFail(func(err error) { reported <- err })
	fail := func(l *Loop) {
		t.Helper()
		l.Post(func() { failEpollWait(t, l) })
		select {
		case err := <-reported:
			if !strings.Contains(err.Error(), "epoll_wait") {
				t.Fatalf("reported %v, want the wait's failure", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a loop's failure was not reported")
		}
	}
	fail(g.loops[0])
	for i := 0; i < 4; i++ {
		if l := g.Pick(); l != g.loops[1] {
			t.Fatalf("Pick %d gave loop %p, want the one that did not fail (%p)", i, l, g.loops[1])
		}
	}
	fail(g.loops[1])
	if l := g.Pick(); l != nil {
		t.Fatalf("Pick gave %p with every loop failed, want nil", l)
	}
	if err := g.Close(); err == nil {
		t.Fatal("Close = nil after the loops failed")
	}
	select {
	case err := <-reported:
		t.Fatalf("a failure reported twice or more: %v", err)
	default:
	}
}

// A posted function that hands the loop off while Close waits for it
// leaves Close to return, and a function posted behind it still runs.
func TestHandoffDuringClose(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	started, release, ran := make(chan struct{}), make(chan struct{}), make(chan struct{})
	l.Post(func() {
		close(started)
		<-release
		l.Handoff()
	})
	l.Post(func() { close(ran) })
	<-started
	go func() {
		// The handoff once Close has begun.
		testenv.WaitFor(5*time.Second, func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			return l.shut
		})
		close(release)
	}()
	closeLoop(t, l, false)
	select {
	case <-ran:
	default:
		t.Fatal("a function posted behind the one that handed off never ran")
	}
}

// closeLoop closes l, which must not take over 5 s; failed: Close must
// report the loop's failed wait.
func closeLoop(t *testing.T, l *Loop, failed bool) {
	t.Helper()
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	select {
	case err := <-closed:
		switch {
		case failed && (err == nil || !strings.Contains(err.Error(), "epoll_wait")):
			t.Fatalf("Close = %v, want the wait's failure", err)
		case !failed && err != nil:
			t.Fatalf("Close = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung")
	}
}
