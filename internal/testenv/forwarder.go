package testenv

import (
	"net"
	"sync"
	"testing"
)

// Forwarder is a TCP relay under a test's control, to put faults between
// the proxy and a real component: Freeze stops moving bytes (a network
// that drops everything; FreezeOpen, on the connections open only), Cut
// closes every connection and refuses new ones (a dead server), Restore
// undoes both.
type Forwarder struct {
	Addr   string
	target string
	ln     net.Listener

	mu       sync.Mutex
	accepted int // connections relayed so far
	frozen   bool
	// frozenBelow: connections numbered below it (in order accepted)
	// are frozen.
	frozenBelow int
	cut         bool
	conns       []net.Conn
	wake        *sync.Cond
	wg          sync.WaitGroup
	closed      bool
}

// NewForwarder relays 127.0.0.1:random to target until tb ends.
func NewForwarder(tb testing.TB, target string) *Forwarder {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return Forward(tb, ln, target)
}

// Forward relays what ln accepts to target until tb ends: ln may be a
// TLS listener, to put TLS before a plain server.
func Forward(tb testing.TB, ln net.Listener, target string) *Forwarder {
	tb.Helper()
	f := &Forwarder{Addr: ln.Addr().String(), target: target, ln: ln}
	f.wake = sync.NewCond(&f.mu)
	f.wg.Add(1)
	go f.accept()
	tb.Cleanup(f.close)
	return f
}

func (f *Forwarder) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		if f.cut || f.closed {
			f.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", f.target)
		if err != nil {
			f.mu.Unlock()
			c.Close()
			continue
		}
		f.conns = append(f.conns, c, up)
		id := f.accepted
		f.accepted++
		f.wg.Add(2)
		f.mu.Unlock()
		go f.pipe(up, c, id)
		go f.pipe(c, up, id)
	}
}

// pipe copies src to dst, connection id's bytes, pausing while frozen.
func (f *Forwarder) pipe(dst, src net.Conn, id int) {
	defer f.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.mu.Lock()
		for (f.frozen || id < f.frozenBelow) && !f.closed && !f.cut {
			f.wake.Wait()
		}
		stop := f.closed || f.cut
		f.mu.Unlock()
		if stop {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Accepted counts the connections relayed so far.
func (f *Forwarder) Accepted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.accepted
}

// Freeze stops relaying bytes; connections stay open.
func (f *Forwarder) Freeze() {
	f.mu.Lock()
	f.frozen = true
	f.mu.Unlock()
}

// FreezeOpen stops relaying the bytes of the connections open now; those
// opened later are relayed.
func (f *Forwarder) FreezeOpen() {
	f.mu.Lock()
	f.frozenBelow = f.accepted
	f.mu.Unlock()
}

// Cut closes every relayed connection and refuses new ones.
func (f *Forwarder) Cut() {
	f.mu.Lock()
	f.cut = true
	conns := f.conns
	f.conns = nil
	f.wake.Broadcast()
	f.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Restore relays again, new connections included.
func (f *Forwarder) Restore() {
	f.mu.Lock()
	f.frozen, f.cut, f.frozenBelow = false, false, 0
	f.wake.Broadcast()
	f.mu.Unlock()
}

func (f *Forwarder) close() {
	f.mu.Lock()
	f.closed = true
	conns := f.conns
	f.wake.Broadcast()
	f.mu.Unlock()
	f.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	f.wg.Wait()
}
