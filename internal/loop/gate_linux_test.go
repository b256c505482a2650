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
