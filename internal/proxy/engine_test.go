package proxy

import (
	"bytes"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/idle"
	"github.com/zun-wsproxy/zun-wsproxy/internal/loop"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// handoffCounter is a loop that counts the sessions' handoffs: each is a
// session leaving the loop because something would have waited on it.
type handoffCounter struct {
	*loop.Loop
	handoffs atomic.Int64
}

func (c *handoffCounter) Handoff() {
	c.handoffs.Add(1)
	c.Loop.Handoff()
}

func newHandoffCounter(t *testing.T) (*handoffCounter, *idle.Poller) {
	l, err := loop.New()
	if err != nil {
		t.Fatal(err)
	}
	p := idle.New()
	t.Cleanup(func() {
		l.Close()
		p.Close()
	})
	return &handoffCounter{Loop: l}, p
}

// On the loop, output to a client that stops reading is held back (the
// container is not read meanwhile), keystrokes still go through, and once
// the client reads again it gets all the output in order; the session
// never leaves the loop for it.
func TestLoopHoldsOutputForSlowClient(t *testing.T) {
	t.Parallel()
	l, p := newHandoffCounter(t)
	h := startSetup(t, setup{framed: false, tightClient: true, opts: Options{Loop: l, Poller: p}})
	const total = 8 << 20
	out := make([]byte, total)
	for i := range out {
		out[i] = byte(i % 251)
	}
	wrote := make(chan int64, 1)
	go func() {
		var n int64
		for n < total {
			// A write that waits this long is held back by the proxy.
			h.exec.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
			m, err := h.exec.Write(out[n:min(n+64<<10, total)])
			n += int64(m)
			if err != nil {
				break
			}
		}
		wrote <- n
	}()
	n := <-wrote
	if n == total {
		t.Fatalf("the container wrote all %d MiB to a client that reads nothing", total>>20)
	}
	if !h.sess.clientOut.holding() {
		t.Fatal("no output held for the client")
	}
	// Input is not held up by output.
	h.client.send(t, websocket.OpBinary, []byte("^C"))
	got := make([]byte, 2)
	h.exec.SetReadDeadline(time.Now().Add(settle))
	if _, err := io.ReadFull(h.exec, got); err != nil || string(got) != "^C" {
		t.Fatalf("container got %q, %v", got, err)
	}
	// The rest of the output, then everything in order.
	go func() {
		h.exec.SetWriteDeadline(time.Time{})
		h.exec.Write(out[n:])
	}()
	var recv []byte
	h.client.conn.SetReadDeadline(time.Now().Add(10 * settle))
	for len(recv) < total {
		if _, err := h.client.r.NextFrame(); err != nil {
			t.Fatalf("after %d bytes: %v", len(recv), err)
		}
		b, err := io.ReadAll(h.client.r)
		if err != nil {
			t.Fatal(err)
		}
		recv = append(recv, b...)
	}
	if !bytes.Equal(recv, out) {
		t.Fatal("output changed on its way")
	}
	if n := l.handoffs.Load(); n != 0 {
		t.Fatalf("the session left the loop %d times", n)
	}
}
