package docker

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// deadlineConn records the deadline last set on it. Setting one in the
// past (the cancellation's) stops until let go, or until a zero deadline
// (the release's) has been set meanwhile.
type deadlineConn struct {
	net.Conn
	mu        sync.Mutex
	last      time.Time
	poisoning chan struct{} // closed when a past deadline starts being set
	poisoned  chan struct{} // closed when it has been set
	cleared   chan struct{} // closed when a zero deadline has been set
	letGo     chan struct{}
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	if !t.IsZero() && t.Before(time.Now()) {
		close(c.poisoning)
		select {
		case <-c.letGo:
		case <-c.cleared:
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = t
	switch {
	case t.IsZero():
		close(c.cleared)
	case t.Before(time.Now()):
		close(c.poisoned)
	}
	return nil
}

// A cancellation whose callback is already running when the dial is
// released must not leave its past deadline on the connection: release
// waits for it, then clears.
func TestReleaseWaitsForRunningCancellation(t *testing.T) {
	c := &deadlineConn{poisoning: make(chan struct{}), poisoned: make(chan struct{}),
		cleared: make(chan struct{}), letGo: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	release := bindDeadline(ctx, c)
	cancel()
	<-c.poisoning // the callback is inside SetDeadline
	released := make(chan struct{})
	go func() { release(); close(released) }()
	// A release that does not wait clears the deadline now, and the
	// callback's past deadline lands after it.
	select {
	case <-c.cleared:
	case <-time.After(50 * time.Millisecond):
	}
	close(c.letGo)
	<-released
	<-c.poisoned
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.last.IsZero() {
		t.Fatalf("deadline after release: %v, want none", c.last)
	}
}

// The same race on a real socket, many times: after release the
// connection reads without a deadline, whenever the cancellation came.
func TestReleasedConnectionSurvivesLateCancel(t *testing.T) {
	conn, peer := testenv.SocketPair(t, "tcp")
	buf := make([]byte, 1)
	for i := 0; i < 2000; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		release := bindDeadline(ctx, conn)
		go cancel()
		release()
		if _, err := peer.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Read(buf); err != nil {
			t.Fatalf("read %d after release: %v", i, err)
		}
		cancel()
	}
}
