package idle

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func pair(t *testing.T) (*net.TCPConn, net.Conn) {
	t.Helper()
	c, peer := testenv.SocketPair(t, "tcp")
	return c.(*net.TCPConn), peer
}

func rawConn(t *testing.T, c syscall.Conn) syscall.RawConn {
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// newPoller returns a Poller closed when the test ends.
func newPoller(t *testing.T) *Poller {
	p := New()
	t.Cleanup(func() { closeWithin(t, p) })
	return p
}

// closeWithin closes p; a Close that does not return (the Poller's
// goroutine did not end) fails the test rather than hanging it.
func closeWithin(t *testing.T, p *Poller) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return: the Poller's goroutine did not end")
		return nil
	}
}

func woken(ch chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

func TestWakesOnDataAndHangup(t *testing.T) {
	p := newPoller(t)
	for _, tc := range []struct {
		name  string
		event func(peer net.Conn)
	}{
		{"data", func(peer net.Conn) { peer.Write([]byte("x")) }},
		{"hangup", func(peer net.Conn) { peer.Close() }},
		{"half close", func(peer net.Conn) { peer.(*net.TCPConn).CloseWrite() }},
		{"reset", func(peer net.Conn) { peer.(*net.TCPConn).SetLinger(0); peer.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := pair(t)
			ch := make(chan struct{}, 1)
			if _, err := p.Wait(rawConn(t, c), func() { ch <- struct{}{} }); err != nil {
				t.Fatal(err)
			}
			if n := p.Parked(); n != 1 {
				t.Fatalf("%d parked after Wait, want 1", n)
			}
			if woken(ch, 50*time.Millisecond) {
				t.Fatal("woken before anything happened")
			}
			tc.event(peer)
			if !woken(ch, 5*time.Second) {
				t.Fatal("not woken")
			}
			if n := p.Parked(); n != 0 {
				t.Fatalf("%d still parked after the wake", n)
			}
			// The socket can be parked again once woken.
			c.Read(make([]byte, 1))
			cancel, err := p.Wait(rawConn(t, c), func() {})
			if err != nil {
				t.Fatal(err)
			}
			cancel()
		})
	}
}

// More sockets ready at once than one epoll_wait returns (128) are all
// woken, each once, and ids past 2^32 (the two halves of epoll's data) find
// their sockets.
func TestManyReadyAtOnce(t *testing.T) {
	p := newPoller(t)
	p.mu.Lock()
	p.next = 1<<32 - 100
	p.mu.Unlock()
	const n = 300
	wakes := make(chan int, 2*n)
	peers := make([]net.Conn, n)
	for i := range n {
		c, peer := testenv.SocketPair(t, "unix")
		peers[i] = peer
		if _, err := p.Wait(rawConn(t, c.(syscall.Conn)), func() { wakes <- i }); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.Parked(); got != n {
		t.Fatalf("%d parked, want %d", got, n)
	}
	for _, peer := range peers {
		peer.Write([]byte("x"))
	}
	seen := make([]bool, n)
	for woke := range n {
		select {
		case i := <-wakes:
			if seen[i] {
				t.Fatalf("socket %d woken twice", i)
			}
			seen[i] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d sockets woken", woke, n)
		}
	}
	if got := p.Parked(); got != 0 {
		t.Errorf("%d still parked after every socket was woken", got)
	}
}

// The Poller's goroutine sleeps in epoll_wait with no timeout: an idle
// Poller costs no wake-ups. The kernel shows each thread's blocking system
// call and its arguments in /proc/self/task/*/syscall; the wait on the
// Poller's epoll descriptor must have a timeout of -1.
func TestWaitsWithoutTimeout(t *testing.T) {
	p := newPoller(t)
	c, _ := pair(t)
	cancel, err := p.Wait(rawConn(t, c), func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	p.mu.Lock()
	epfd := fmt.Sprintf("0x%x", p.impl.ep.FD)
	p.mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		tasks, err := filepath.Glob("/proc/self/task/*/syscall")
		if err != nil || len(tasks) == 0 {
			t.Fatalf("no /proc/self/task/*/syscall: %v", err)
		}
		for _, task := range tasks {
			b, err := os.ReadFile(task)
			if err != nil {
				continue // the thread has ended
			}
			// "number arg1 ... arg6 sp pc", or "running".
			f := strings.Fields(string(b))
			if len(f) >= 5 && f[1] == epfd {
				if f[4] != "0xffffffffffffffff" {
					t.Fatalf("epoll wait with a timeout of %s ms (%s: %s)", f[4], task, b)
				}
				return
			}
		}
	}
	t.Fatal("no thread seen waiting on the Poller's epoll descriptor")
}

func TestReadableAlreadyWakesAtOnce(t *testing.T) {
	p := newPoller(t)
	c, peer := pair(t)
	peer.Write([]byte("waiting already"))
	time.Sleep(20 * time.Millisecond)
	ch := make(chan struct{}, 1)
	if _, err := p.Wait(rawConn(t, c), func() { ch <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	if !woken(ch, 5*time.Second) {
		t.Fatal("bytes that arrived before Wait did not wake it")
	}
}

func TestCancel(t *testing.T) {
	p := newPoller(t)
	c, peer := pair(t)
	ch := make(chan struct{}, 1)
	cancel, err := p.Wait(rawConn(t, c), func() { ch <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	if !cancel() {
		t.Fatal("cancel of a parked socket reported false")
	}
	peer.Write([]byte("x"))
	if woken(ch, 100*time.Millisecond) {
		t.Fatal("woken after cancel")
	}
	if cancel() {
		t.Fatal("second cancel reported true")
	}
}

func TestClose(t *testing.T) {
	p := newPoller(t)
	c, _ := pair(t)
	cancel, err := p.Wait(rawConn(t, c), func() {})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := closeWithin(t, p); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(rawConn(t, c), func() {}); err != ErrClosed {
		t.Fatalf("Wait after Close: %v, want ErrClosed", err)
	}
	if err := New().Close(); err != nil {
		t.Fatalf("closing an unused poller: %v", err)
	}
}

// breakEpoll puts another file (/dev/null) under the Poller's epoll
// descriptor, as a stray close and reuse of its number elsewhere in the
// process would: the wait in progress goes on, the next one fails.
func breakEpoll(t *testing.T, p *Poller) {
	t.Helper()
	null, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(null)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := syscall.Dup3(null, p.impl.ep.FD, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
}

// A Poller whose epoll fails wakes every parked socket, so that none
// hangs, refuses to park more (their owners keep their goroutines) and
// says why.
func TestFailureWakesParkedAndRefusesWaits(t *testing.T) {
	p := newPoller(t)
	failures := make(chan error, 2)
	p.OnFail = func(err error) { failures <- err }
	first, firstPeer := pair(t)
	other, _ := pair(t)
	wakes := map[string]chan struct{}{"first": make(chan struct{}, 1), "other": make(chan struct{}, 1)}
	for name, c := range map[string]*net.TCPConn{"first": first, "other": other} {
		ch := wakes[name]
		if _, err := p.Wait(rawConn(t, c), func() { ch <- struct{}{} }); err != nil {
			t.Fatal(err)
		}
	}
	breakEpoll(t, p)
	firstPeer.Write([]byte("x")) // ends the wait in progress
	for name, ch := range wakes {
		if !woken(ch, 5*time.Second) {
			t.Errorf("%s parked socket not woken after the poller failed", name)
		}
	}
	if n := p.Parked(); n != 0 {
		t.Errorf("%d still parked after the poller failed", n)
	}
	select {
	case err := <-failures:
		if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "epoll_wait") {
			t.Errorf("failure reported as %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("failure not reported")
	}
	c, _ := pair(t)
	if cancel, err := p.Wait(rawConn(t, c), func() {}); !errors.Is(err, ErrFailed) {
		if err == nil {
			cancel()
		}
		t.Fatalf("Wait on a failed poller: %v, want ErrFailed", err)
	}
	if err := closeWithin(t, p); err != nil {
		t.Errorf("closing a failed poller: %v", err)
	}
	if len(failures) != 0 {
		t.Error("failure reported more than once")
	}
}
