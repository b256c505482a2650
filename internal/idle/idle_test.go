package idle

import (
	"errors"
	"net"
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

func woken(ch chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

func TestWakesOnDataAndHangup(t *testing.T) {
	p := New()
	defer p.Close()
	for _, tc := range []struct {
		name  string
		event func(peer net.Conn)
	}{
		{"data", func(peer net.Conn) { peer.Write([]byte("x")) }},
		{"hangup", func(peer net.Conn) { peer.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := pair(t)
			ch := make(chan struct{}, 1)
			if _, err := p.Wait(rawConn(t, c), func() { ch <- struct{}{} }); err != nil {
				t.Fatal(err)
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

func TestReadableAlreadyWakesAtOnce(t *testing.T) {
	p := New()
	defer p.Close()
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
	p := New()
	defer p.Close()
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
	p := New()
	c, _ := pair(t)
	cancel, err := p.Wait(rawConn(t, c), func() {})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := p.Close(); err != nil {
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
	if err := syscall.Dup3(null, p.impl.epfd, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
}

// A Poller whose epoll fails wakes every parked socket, so that none
// hangs, refuses to park more (their owners keep their goroutines) and
// says why.
func TestFailureWakesParkedAndRefusesWaits(t *testing.T) {
	p := New()
	failures := make(chan error, 2)
	p.OnFail = func(err error) { failures <- err }
	defer p.Close()
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
	if err := p.Close(); err != nil {
		t.Errorf("closing a failed poller: %v", err)
	}
	if len(failures) != 0 {
		t.Error("failure reported more than once")
	}
}
