package proxy

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// gateTap holds the pump that first calls Output (or Input) until the
// test opens the gate: a synchronisation point between reading a message
// and writing it on.
type gateTap struct {
	once    sync.Once
	entered chan struct{} // closed when the pump is held
	open    chan struct{} // closed by the test
	input   bool          // hold at Input, else at Output
}

func newGateTap(input bool) *gateTap {
	return &gateTap{entered: make(chan struct{}), open: make(chan struct{}), input: input}
}

func (g *gateTap) hold() {
	g.once.Do(func() {
		close(g.entered)
		<-g.open
	})
}

func (g *gateTap) Output([]byte) error {
	if !g.input {
		g.hold()
	}
	return nil
}

func (g *gateTap) Input([]byte) error {
	if g.input {
		g.hold()
	}
	return nil
}

func (g *gateTap) Resize(int, int) error { return nil }

// A write that begins after the session began closing is bounded by the
// closing deadlines, not by the write bounds of a running session
// (write_timeout towards the client, two heartbeats towards Docker): the
// session ends at once, although the peer written to takes nothing.
func TestWriteAfterCloseReturnsAtOnce(t *testing.T) {
	for _, c := range []struct {
		name string
		// toClient: the held write goes to the client (container output);
		// else to Docker (a keystroke).
		toClient bool
		end      string
	}{
		{"to the client, after it left", true, EndClientGone},
		{"to Docker, after it failed", false, EndContainerLost},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			gate := newGateTap(!c.toClient)
			// Bounds far beyond the harness's wait for the result.
			h := startSetup(t, setup{framed: true, tightClient: c.toClient, tightContainer: !c.toClient,
				opts: Options{Tap: gate, WriteTimeout: time.Minute, Heartbeat: time.Minute}})
			big := bytes.Repeat([]byte("x"), chunk)
			if c.toClient {
				go h.docker.trySend(websocket.OpBinary, big)
			} else {
				go h.client.trySend(websocket.OpBinary, big)
			}
			<-gate.entered
			if c.toClient {
				// The client stops sending (and reads nothing): the session
				// ends, and Docker is told.
				h.client.conn.(*net.TCPConn).CloseWrite()
				if m := h.docker.recv(t); m.op != websocket.OpClose {
					t.Fatalf("docker got %+v", m)
				}
			} else {
				// Docker breaks the protocol (a masked frame) and then reads
				// nothing: the session ends, and the client is told.
				h.docker.conn.Write([]byte{0x82, 0x81, 1, 2, 3, 4, 'x'})
				if m := h.client.recv(t); m.op != websocket.OpClose || m.code != websocket.CloseInternalError {
					t.Fatalf("client got %+v", m)
				}
			}
			close(gate.open) // the held write begins now, after the close
			if r := h.result(t); r.End != c.end {
				t.Fatalf("ended with %s (%s), want %s", r.End, r.Reason, c.end)
			}
		})
	}
}

// A client that takes nothing, with write_timeout off, does not stop the
// session's clock: heartbeat pings to it give up, and idle_timeout and
// max_session_duration still end the session.
func TestFrozenClientDoesNotStopTimeouts(t *testing.T) {
	for _, c := range []struct {
		name string
		opts Options
		end  string
	}{
		{"max_session_duration", Options{MaxDuration: 300 * time.Millisecond}, EndMaxDuration},
		{"idle_timeout", Options{IdleTimeout: 300 * time.Millisecond}, EndIdleTimeout},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			// net.Pipe: every write waits for the peer to read, as one to a
			// full socket buffer does; this peer reads nothing.
			clientEnd, proxyClientEnd := net.Pipe()
			t.Cleanup(func() { clientEnd.Close() })
			proxyBackendEnd, backendEnd := testenv.SocketPair(t, "tcp")
			docker := &peer{conn: backendEnd, r: websocket.NewReader(backendEnd, websocket.ReaderOptions{FromClient: true}), w: websocket.NewWriter(backendEnd, false)}
			docker.keepAnswering()
			opts := c.opts
			opts.Heartbeat, opts.PingClient, opts.CloseTimeout = 200*time.Millisecond, true, 100*time.Millisecond
			opts.CheckInterval = 50 * time.Millisecond
			s := New(proxyClientEnd, nil, console.Stream{Conn: proxyBackendEnd, Framed: true}, opts)
			res := make(chan Result, 1)
			go func() { res <- s.Run(context.Background()) }()
			select {
			case r := <-res:
				if r.End != c.end {
					t.Fatalf("ended with %s (%s), want %s", r.End, r.Reason, c.end)
				}
			case <-time.After(5 * time.Second):
				clientEnd.Close() // frees the blocked write
				<-res
				t.Fatal("the session's checks stopped behind a ping to a client that reads nothing")
			}
		})
	}
}

func TestCheckInterval(t *testing.T) {
	for _, c := range []struct {
		opts Options
		want time.Duration
	}{
		{Options{}, 0},
		{Options{Heartbeat: 30 * time.Second}, 15 * time.Second},
		{Options{Heartbeat: time.Second}, 500 * time.Millisecond},
		{Options{Heartbeat: 30 * time.Second, IdleTimeout: 20 * time.Second}, 5 * time.Second},
		{Options{IdleTimeout: 2 * time.Second}, time.Second},
		{Options{MaxDuration: time.Hour, IdleTimeout: 2 * time.Second, Heartbeat: 400 * time.Millisecond}, 200 * time.Millisecond},
		{Options{MaxDuration: time.Hour, CheckInterval: 10 * time.Millisecond}, 10 * time.Millisecond},
		{Options{CheckInterval: 10 * time.Millisecond}, 0},
	} {
		s := &Session{opts: c.opts}
		if got := s.checkInterval(); got != c.want {
			t.Errorf("%+v: every %v, want %v", c.opts, got, c.want)
		}
	}
}
