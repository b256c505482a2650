package loop

import (
	"net"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// echoOn serves accepted on l: what it reads, it writes back.
func echoOn(t *testing.T, l *Loop, accepted net.Conn) *Reg {
	t.Helper()
	r, err := l.Add(rawConn(t, accepted), func(ev Events) {
		var b [64]byte
		if n, err := accepted.Read(b[:]); n > 0 && err == nil {
			accepted.Write(b[:n])
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// lightWaits reads the loop's count of waits in the kernel, on the loop.
func lightWaits(l *Loop) int {
	got := make(chan int)
	l.Post(func() { got <- l.impl.lightWaits })
	return <-got
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
// waits for the next readiness in the kernel (its answers come as they
// did), and still wakes at once for a posted function and a Close. One
// serving more than lightSockets does not.
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
	client, accepted := testenv.SocketPair(t, "tcp")
	echoOn(t, l, accepted)
	roundTrips(t, client, 10) // not yet steady: waits in Go's poller
	if n := lightWaits(l); n != 0 {
		t.Fatalf("%d waits in the kernel before the loop's sockets were steady for %v", n, lightSteady)
	}
	time.Sleep(2 * lightSteady)
	roundTrips(t, client, 200)
	if n := lightWaits(l); n < 100 {
		t.Fatalf("a loop serving one socket, steady, waited in the kernel %d times over 200 round trips, want most", n)
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
	var clients []net.Conn
	for i := 0; i < lightSockets+1; i++ {
		c, a := testenv.SocketPair(t, "tcp")
		echoOn(t, m, a)
		clients = append(clients, c)
	}
	time.Sleep(2 * lightSteady)
	for _, c := range clients {
		roundTrips(t, c, 20)
	}
	if n := lightWaits(m); n != 0 {
		t.Fatalf("a loop serving %d sockets waited in the kernel %d times", lightSockets+1, n)
	}
}
