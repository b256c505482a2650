package loop

import (
	"sync"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// A loop kept running longer than gateAfter closes its gate (its sockets'
// readiness no longer reaches Go's poller); it opens it again when it
// parks, so that it still wakes for what comes next.
func TestGateClosesOnLongRunsAndOpensToPark(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	// A socket left readable keeps the loop from parking.
	client, accepted := testenv.SocketPair(t, "tcp")
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	var once sync.Once
	r, err := l.Add(rawConn(t, accepted), func(Events) {
		if !l.impl.open { // on the loop, its owner
			once.Do(func() { close(closed) })
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("a loop kept running for 10 s never closed its gate")
	}
	r.Remove()
	barrier(l)
	time.Sleep(20 * time.Millisecond) // parked: nothing is ready

	// A posted function reaches a parked loop only through the gate.
	ran := make(chan bool, 1)
	l.Post(func() { ran <- l.impl.open })
	select {
	case open := <-ran:
		if !open {
			t.Fatal("the loop woke with its gate closed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a parked loop did not wake for a posted function: its gate stayed closed")
	}
}

// What becomes ready while a closed gate is about to open (after the
// loop found nothing, before it parks) still wakes the loop: opening the
// gate does not pass it on when the gate's entry is on its ready list
// already (left there by the wake that brought the loop round), so the
// loop looks once more.
func TestReadyWhileGateClosedIsNotLost(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		l.Close()
		beforeOpenGate = nil
	}()
	client, accepted := testenv.SocketPair(t, "tcp")
	got := make(chan struct{}, 1)
	if _, err := l.Add(rawConn(t, accepted), func(Events) {
		var b [16]byte
		accepted.Read(b[:])
		got <- struct{}{}
	}); err != nil {
		t.Fatal(err)
	}
	barrier(l)
	time.Sleep(20 * time.Millisecond) // parked, the gate open
	var once sync.Once
	beforeOpenGate = func() { once.Do(func() { client.Write([]byte("x")) }) }
	// Closed as a long run closes it; the loop then parks, opening it.
	closed := make(chan struct{})
	l.Post(func() {
		if err := l.impl.closeGate(); err != nil {
			t.Error(err)
		}
		close(closed)
	})
	<-closed
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("a parked loop never served a socket that became readable as its gate opened")
	}
}
