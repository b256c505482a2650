//go:build linux

package loop

import (
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newLoop(t *testing.T) *Loop {
	t.Helper()
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func rawConn(t *testing.T, c net.Conn) syscall.RawConn {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// barrier returns once every function posted before it has run.
func barrier(l *Loop) {
	done := make(chan struct{})
	l.Post(func() { close(done) })
	<-done
}

func TestPostRunsInOrderOnTheLoop(t *testing.T) {
	l := newLoop(t)
	const n = 1000
	got := make([]int, 0, n) // touched only on the loop
	for i := 0; i < n; i++ {
		l.Post(func() { got = append(got, i) })
	}
	barrier(l)
	for i, v := range got {
		if v != i {
			t.Fatalf("posted function %d ran as number %d", v, i)
		}
	}
	if len(got) != n {
		t.Fatalf("%d of %d posted functions ran", len(got), n)
	}
}

// readAll drains what c's socket holds, without waiting.
func readAll(rc syscall.RawConn) (n int, eof bool) {
	rc.Control(func(fd uintptr) {
		var b [4096]byte
		for {
			m, err := syscall.Read(int(fd), b[:])
			if m > 0 {
				n += m
				continue
			}
			eof = m == 0 && err == nil
			return
		}
	})
	return n, eof
}

func TestReadyIsCalledWhileReadableAndNotAfterRemove(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			l := newLoop(t)
			dialed, accepted := testenv.SocketPair(t, network)
			rc := rawConn(t, accepted)
			got := make(chan int, 16)
			reg, err := l.Add(rc, func(Events) {
				if n, _ := readAll(rc); n > 0 {
					got <- n
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if l.Registered() != 1 {
				t.Fatalf("Registered = %d, want 1", l.Registered())
			}
			total := 0
			for _, size := range []int{1, 100, 3000} {
				if _, err := dialed.Write(make([]byte, size)); err != nil {
					t.Fatal(err)
				}
				for want := total + size; total < want; {
					select {
					case n := <-got:
						total += n
					case <-time.After(5 * time.Second):
						t.Fatalf("ready not called for %d bytes (read %d of %d)", size, total, want)
					}
				}
			}
			reg.Remove()
			if l.Registered() != 0 {
				t.Fatalf("Registered = %d after Remove, want 0", l.Registered())
			}
			dialed.Write([]byte("after"))
			barrier(l)
			barrier(l)
			select {
			case n := <-got:
				t.Fatalf("ready called after Remove (read %d bytes)", n)
			default:
			}
		})
	}
}

func TestReadyReportsTheEndOfStream(t *testing.T) {
	l := newLoop(t)
	dialed, accepted := testenv.SocketPair(t, "tcp")
	rc := rawConn(t, accepted)
	eof := make(chan struct{})
	var reg atomic.Pointer[Reg]
	added := make(chan struct{})
	r, err := l.Add(rc, func(Events) {
		<-added
		if _, end := readAll(rc); end {
			reg.Load().Remove() // on the loop, as a session leaving it does
			close(eof)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	reg.Store(r)
	close(added)
	dialed.Close()
	select {
	case <-eof:
	case <-time.After(5 * time.Second):
		t.Fatal("the peer's close never made the socket ready")
	}
}

// A function that waits hands the loop off: the other sockets are served
// meanwhile, and the waiting goroutine ends once its function returns.
func TestHandoffKeepsServingOtherSockets(t *testing.T) {
	l := newLoop(t)
	aDialed, aAccepted := testenv.SocketPair(t, "tcp")
	bDialed, bAccepted := testenv.SocketPair(t, "tcp")
	arc, brc := rawConn(t, aAccepted), rawConn(t, bAccepted)
	release := make(chan struct{})
	var waiting atomic.Bool
	var aReg atomic.Pointer[Reg]
	added := make(chan struct{})
	r, err := l.Add(arc, func(Events) {
		<-added
		readAll(arc)
		aReg.Load().Remove()
		waiting.Store(true)
		l.Handoff()
		<-release // waits as an ordinary goroutine
	})
	if err != nil {
		t.Fatal(err)
	}
	aReg.Store(r)
	close(added)
	bServed := make(chan struct{}, 1)
	if _, err := l.Add(brc, func(Events) {
		if n, _ := readAll(brc); n > 0 {
			bServed <- struct{}{}
		}
	}); err != nil {
		t.Fatal(err)
	}
	aDialed.Write([]byte("a"))
	deadline := time.Now().Add(5 * time.Second)
	for !waiting.Load() {
		if time.Now().After(deadline) {
			t.Fatal("a's function never ran")
		}
		barrier(l)
	}
	bDialed.Write([]byte("b"))
	select {
	case <-bServed:
	case <-time.After(5 * time.Second):
		t.Fatal("b not served while a's function waited")
	}
	barrier(l) // posted functions run on the new owner too
	close(release)
}

// Functions posted behind one that waits run while it waits, on the new
// owner: a posted function that hands the loop off holds up none of them.
func TestHandoffGivesOnPostedFunctions(t *testing.T) {
	l := newLoop(t)
	release := make(chan struct{})
	defer close(release)
	later := make(chan struct{})
	block := make(chan struct{})
	// Posted together, from the loop, so that they run in one batch.
	l.Post(func() {
		l.Post(func() {
			l.Handoff()
			<-release // waits as an ordinary goroutine
		})
		l.Post(func() { close(later) })
		close(block)
	})
	<-block
	select {
	case <-later:
	case <-time.After(5 * time.Second):
		t.Fatal("a function posted behind one that waits did not run while it waited")
	}
}

func TestCloseStopsTheLoop(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	_, accepted := testenv.SocketPair(t, "tcp")
	rc := rawConn(t, accepted)
	if _, err := l.Add(rc, func(Events) {}); err != nil {
		t.Fatal(err)
	}
	posted := make(chan struct{})
	l.Post(func() { close(posted) })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-posted: // before Close returned
	default:
		t.Fatal("a function posted before Close did not run")
	}
	if _, err := l.Add(rc, func(Events) {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close: %v, want ErrClosed", err)
	}
	ran := false
	l.Post(func() { ran = true })
	if !ran {
		t.Fatal("Post on a closed loop did not run the function at once")
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// goleak (TestMain) finds the loop's goroutine if it is still there.
}

func TestGroupPicksLoopsInTurn(t *testing.T) {
	g, err := NewGroup(3)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	seen := map[*Loop]int{}
	for i := 0; i < 9; i++ {
		seen[g.Pick()]++
	}
	if len(seen) != 3 {
		t.Fatalf("9 picks used %d loops, want 3", len(seen))
	}
	for l, n := range seen {
		if n != 3 {
			t.Fatalf("loop %p picked %d times of 9, want 3", l, n)
		}
	}
	_, accepted := testenv.SocketPair(t, "tcp")
	if _, err := g.Pick().Add(rawConn(t, accepted), func(Events) {}); err != nil {
		t.Fatal(err)
	}
	if g.Registered() != 1 {
		t.Fatalf("Registered = %d, want 1", g.Registered())
	}
}

// A loop kept busy kicks about every kickAfter; one that parks between
// events does not kick at all.
func TestBusyLoopKicksAndParkedLoopDoesNot(t *testing.T) {
	var kicks atomic.Int64
	l, err := startLoop(func() { kicks.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	for i := 0; i < 5; i++ {
		barrier(l)
		time.Sleep(2 * kickAfter)
	}
	if n := kicks.Load(); n != 0 {
		t.Fatalf("a loop that parked between posts kicked %d times", n)
	}

	// A socket left readable keeps the loop from parking.
	client, accepted := testenv.SocketPair(t, "tcp")
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var readies atomic.Int64
	start := time.Now()
	r, err := l.Add(rawConn(t, accepted), func(Events) { readies.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	for kicks.Load() < 3 && time.Since(start) < 10*time.Second {
		time.Sleep(kickAfter)
	}
	r.Remove()
	barrier(l)
	busy := time.Since(start) // the loop kicks no more: it parks again
	n := kicks.Load()
	if n < 3 {
		t.Fatalf("a loop busy for %v (%d events) kicked %d times, want at least 3", busy, readies.Load(), n)
	}
	if most := int64(busy/kickAfter) + 2; n > most {
		t.Fatalf("a loop busy for %v kicked %d times, more than once per %v (%d)", busy, n, kickAfter, most)
	}
}

// Behind is false early in a pass over ready sockets and true once the
// pass has run behindAfter.
func TestBehindOnLongPass(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type seen struct{ early, late bool }
	got := make(chan seen, 1)
	l.Post(func() {
		early := l.Behind()
		time.Sleep(behindAfter + 5*time.Millisecond)
		got <- seen{early, l.Behind()}
	})
	select {
	case s := <-got:
		if s.early || !s.late {
			t.Fatalf("Behind: %v at the start of a pass, %v after %v", s.early, s.late, behindAfter+5*time.Millisecond)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the posted function did not run")
	}
	// The next pass starts afresh.
	next := make(chan bool, 1)
	l.Post(func() { next <- l.Behind() })
	select {
	case behind := <-next:
		if behind {
			t.Fatal("Behind: still true in the next pass")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the posted function did not run")
	}
}
