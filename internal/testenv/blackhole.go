package testenv

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"testing"
)

// Blackhole accepts TCP connections and never sends a byte: a server that
// hangs (a database or container runtime that is up at the TCP level but
// answers nothing), unlike a refused port. It counts the connections
// made to it and those its peers have not closed.
type Blackhole struct {
	Addr string
	ln   net.Listener
	done chan struct{} // the accept loop has returned

	mu       sync.Mutex // guards the following fields
	accepted int        // connections accepted so far
	open     []*net.TCPConn
	closed   []*net.TCPConn // closed by the peer
}

// NewBlackhole listens on addr (127.0.0.1:0 for a free port) until tb ends.
func NewBlackhole(tb testing.TB, addr string) *Blackhole {
	tb.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	b := &Blackhole{Addr: ln.Addr().String(), ln: ln, done: make(chan struct{})}
	go b.accept()
	tb.Cleanup(b.close)
	return b
}

func (b *Blackhole) accept() {
	defer close(b.done)
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.accepted++
		b.open = append(b.open, c.(*net.TCPConn))
		b.mu.Unlock()
	}
}

// prune moves the connections whose peer has closed them out of open,
// reading (and dropping) without blocking what the peers sent.
func (b *Blackhole) prune() {
	kept := b.open[:0]
	for _, c := range b.open {
		if peerClosed(c) {
			b.closed = append(b.closed, c)
		} else {
			kept = append(kept, c)
		}
	}
	clear(b.open[len(kept):])
	b.open = kept
}

// peerClosed reports whether c's peer has closed it (or it failed),
// draining what it sent.
func peerClosed(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	buf := make([]byte, 4096)
	rc.Control(func(fd uintptr) {
		for {
			n, _, err := syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EAGAIN):
				return
			case err != nil || n == 0:
				gone = true
				return
			}
		}
	})
	return gone
}

// Counts returns the connections accepted so far and those still open
// (not closed by the peer). A peer's close of one connection and its
// next connection, made on two processors, may reach the listener in
// either order: to see how many a peer holds at once, sample Counts.
func (b *Blackhole) Counts() (accepted, open int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prune()
	return b.accepted, len(b.open)
}

func (b *Blackhole) close() {
	b.ln.Close()
	<-b.done
	for _, c := range append(b.open, b.closed...) {
		c.Close()
	}
}
