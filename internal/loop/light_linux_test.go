package loop

import (
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/epoll"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// echoOn serves accepted on l: what it reads, it writes back; at the end
// of the stream it stops serving it.
func echoOn(t *testing.T, l *Loop, accepted net.Conn) *Reg {
	t.Helper()
	var reg atomic.Pointer[Reg] // the handler may run before Add returns
	r, err := l.Add(rawConn(t, accepted), func(ev Events) {
		var b [64]byte
		n, err := accepted.Read(b[:])
		if n > 0 {
			accepted.Write(b[:n])
		}
		if r := reg.Load(); err != nil && r != nil {
			r.Remove()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	reg.Store(r)
	return r
}

// lightHits reads, on the loop, its count of waits in the kernel that
// found sockets ready.
func lightHits(l *Loop) int {
	got := make(chan int)
	l.Post(func() { got <- l.impl.lightHits })
	return <-got
}

// crowd registers lightSockets more sockets, never ready, with l: with
// them, it waits in Go's poller only.
func crowd(t *testing.T, l *Loop) {
	t.Helper()
	for i := 0; i < lightSockets; i++ {
		_, idle := testenv.SocketPair(t, "tcp")
		if _, err := l.Add(rawConn(t, idle), func(Events) {}); err != nil {
			t.Fatal(err)
		}
	}
}

// roundTrips sends n bytes one at a time through client, each after the
// echo of the one before.
func roundTrips(t *testing.T, client net.Conn, n int) {
	t.Helper()
	client.SetDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	for i := 0; i < n; i++ {
		if _, err := client.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Read(b[:]); err != nil || b[0] != byte(i) {
			t.Fatalf("round trip %d: %v %v", i, b, err)
		}
	}
}

// A loop serving one session's sockets, the same ones for lightSteady,
// finds the answers to what it forwards in its wait in the kernel, and
// still wakes at once for a posted function and a Close. One serving
// more than lightSockets does not wait there. The peer is another
// process, as a proxy's client and container are: one in this process
// would share the loop's processors, and could wait for the loop's to be
// free.
func TestLightLoopWaitsInTheKernel(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			l.Close()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const trips = 500
	peer := exec.Command(os.Args[0], "-test.run=^TestLightPeer$")
	peer.Env = append(os.Environ(), "LOOP_LIGHT_PEER="+ln.Addr().String(), "LOOP_LIGHT_TRIPS="+strconv.Itoa(trips))
	out := new(strings.Builder)
	peer.Stdout, peer.Stderr = out, out
	if err := peer.Start(); err != nil {
		t.Fatal(err)
	}
	accepted, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	echoOn(t, l, accepted)
	if err := peer.Wait(); err != nil {
		t.Fatalf("peer: %v\n%s", err, out)
	}
	hits := lightHits(l)
	t.Logf("%d of %d round trips' bytes found in the wait in the kernel", hits, trips)
	if hits < trips/2 {
		t.Fatalf("a loop serving one socket, steady, found %d of %d round trips' bytes in its wait in the kernel, want most", hits, trips)
	}

	// Posted functions reach it in its wait, idle or not.
	for i := 0; i < 20; i++ {
		start := time.Now()
		barrier(l)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("a posted function waited %v", d)
		}
		time.Sleep(lightWait / 2)
	}
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v", d)
	}

	// More sockets than lightSockets: waits in Go's poller only.
	m, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	crowd(t, m)
	c, a := testenv.SocketPair(t, "tcp")
	echoOn(t, m, a)
	time.Sleep(2 * lightSteady)
	roundTrips(t, c, 50)
	if n := lightHits(m); n != 0 {
		t.Fatalf("a loop serving %d sockets found sockets ready in the kernel %d times", lightSockets+1, n)
	}
}

// TestLightPeer is TestLightLoopWaitsInTheKernel's peer process: it
// connects, lets the loop's sockets become steady, and makes its round
// trips.
func TestLightPeer(t *testing.T) {
	addr := os.Getenv("LOOP_LIGHT_PEER")
	if addr == "" {
		return // run as a test of its own: nothing to do
	}
	trips, _ := strconv.Atoi(os.Getenv("LOOP_LIGHT_TRIPS"))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(2 * lightSteady)
	roundTrips(t, c, trips)
}

// A light loop woken in Go's poller after its wait in the kernel timed
// out (keystrokes far apart) does not count as busy: it does not kick.
func TestLightLoopIdleBetweenKeystrokesDoesNotKick(t *testing.T) {
	var kicks atomic.Int64
	l, err := startLoop(func() { kicks.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, accepted := testenv.SocketPair(t, "tcp")
	echoOn(t, l, accepted)
	time.Sleep(2 * lightSteady)
	for i := 0; i < 30; i++ {
		roundTrips(t, client, 1)
		time.Sleep(4 * kickAfter)
	}
	if n := kicks.Load(); n > 2 {
		t.Fatalf("a loop with keystrokes %v apart kicked %d times in 30", 4*kickAfter, n)
	}
}

// A light loop that finds its socket ready at every wait in the kernel
// still lets the rest of the process run: with one processor, a timer
// fires about when it should, not when Go preempts the loop (10 ms).
func TestLightLoopAlwaysReadyYields(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, accepted := testenv.SocketPair(t, "tcp")
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// Never read: readable at every wait.
	if _, err := l.Add(rawConn(t, accepted), func(Events) {}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * lightSteady)
	var late []time.Duration
	for i := 0; i < 21; i++ {
		start := time.Now()
		time.Sleep(time.Millisecond)
		late = append(late, time.Since(start)-time.Millisecond)
	}
	slices.Sort(late)
	if hits := lightHits(l); hits == 0 {
		t.Fatal("the loop never found its socket ready in the kernel: the test showed nothing")
	}
	if median := late[len(late)/2]; median > 5*time.Millisecond {
		t.Fatalf("1 ms sleeps beside a light loop always finding its socket ready overslept by %v (median), want well under Go's 10 ms preemption", median)
	}
}

// Where the kernel or a seccomp filter refuses epoll_pwait2 (ENOSYS,
// EPERM), a light loop waits as loops did without it and goes on serving.
func TestLightLoopWithoutEpollPwait2(t *testing.T) {
	for _, refusal := range []syscall.Errno{syscall.ENOSYS, syscall.EPERM} {
		t.Run(refusal.Error(), func(t *testing.T) {
			var refused atomic.Int64
			waitInKernel = func(*epoll.Epoll, time.Duration) (int, error) {
				refused.Add(1)
				return 0, refusal
			}
			defer func() { waitInKernel = (*epoll.Epoll).WaitFor }()
			l, err := New()
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			client, accepted := testenv.SocketPair(t, "tcp")
			echoOn(t, l, accepted)
			time.Sleep(2 * lightSteady)
			roundTrips(t, client, 50)
			if l.Err() != nil {
				t.Fatalf("the loop failed: %v", l.Err())
			}
			if n := refused.Load(); n != 1 {
				t.Fatalf("epoll_pwait2 tried %d times after it was refused, want once", n)
			}
		})
	}
}
