package proxy

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/idle"
	"github.com/zun-wsproxy/zun-wsproxy/internal/loop"
	"github.com/zun-wsproxy/zun-wsproxy/internal/rawsock"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// handoffCounter is a loop that counts the sessions' handoffs: each is a
// session leaving the loop because something would have waited on it.
// served has a value each time a socket's function returned.
type handoffCounter struct {
	*loop.Loop
	handoffs atomic.Int64
	served   chan struct{}
}

func (c *handoffCounter) Add(rc syscall.RawConn, ready func(loop.Events)) (*loop.Reg, error) {
	return c.Loop.Add(rc, func(ev loop.Events) {
		ready(ev)
		select {
		case c.served <- struct{}{}:
		default:
		}
	})
}

// Behind is false: the tests that count handoffs check what a session
// does on its loop, which a loop slowed by the race detector and
// parallel tests must not make it leave (shed).
func (c *handoffCounter) Behind() bool { return false }

func (c *handoffCounter) Handoff() {
	c.handoffs.Add(1)
	c.Loop.Handoff()
}

func newHandoffCounter(t *testing.T) (*handoffCounter, *idle.Poller) {
	l, p := newLoop(t)
	return &handoffCounter{Loop: l, served: make(chan struct{}, 1)}, p
}

// newLoop starts a loop and a Poller, both closed when the test ends.
func newLoop(t *testing.T) (*loop.Loop, *idle.Poller) {
	t.Helper()
	l, err := loop.New()
	if err != nil {
		t.Fatal(err)
	}
	p := idle.New()
	t.Cleanup(func() {
		l.Close()
		p.Close()
	})
	return l, p
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

// On the loop, a frame whose bytes come in pieces is forwarded whole and
// in order, both ways, without the session leaving the loop to wait for
// the rest: it waits on the loop.
func TestLoopForwardsFrameInPieces(t *testing.T) {
	t.Parallel()
	for _, toClient := range []bool{false, true} {
		name := map[bool]string{false: "client to container", true: "container to client"}[toClient]
		t.Run(name, func(t *testing.T) {
			l, p := newHandoffCounter(t)
			h := start(t, true, Options{Loop: l, Poller: p})
			payload := make([]byte, 200<<10)
			for i := range payload {
				payload[i] = byte(i % 253)
			}
			var wire bytes.Buffer
			from, to := h.client, h.docker
			if toClient {
				from, to = h.docker, h.client
			}
			websocket.NewWriter(&wire, !toClient).WriteFrame(true, websocket.OpBinary, append(make([]byte, websocket.MaxHeaderLen), payload...), websocket.MaxHeaderLen, websocket.MaxHeaderLen+len(payload))
			// The header and some bytes, then the rest in three pieces,
			// each once the proxy has read the one before.
			b := wire.Bytes()
			prev := 0
			for _, at := range []int{100, 70 << 10, 140 << 10, len(b)} {
				select {
				case <-l.served:
				default:
				}
				if _, err := from.conn.Write(b[prev:at]); err != nil {
					t.Fatal(err)
				}
				prev = at
				select {
				case <-l.served:
				case <-time.After(settle):
					t.Fatal("the proxy did not read")
				}
			}
			var got []byte
			to.conn.SetReadDeadline(time.Now().Add(settle))
			for len(got) < len(payload) {
				if _, err := to.r.NextFrame(); err != nil {
					t.Fatalf("after %d bytes: %v", len(got), err)
				}
				m, err := io.ReadAll(to.r)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, m...)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("got %d bytes, not the frame's %d", len(got), len(payload))
			}
			if n := l.handoffs.Load(); n != 0 {
				t.Fatalf("the session left the loop %d times", n)
			}
		})
	}
}

// failingLoop is a loop that, on fail, does what a loop whose wait failed
// does: each registered socket's function is called with loop.Failed,
// on the loop.
type failingLoop struct {
	*loop.Loop
	mu    sync.Mutex
	ready []func(loop.Events)
}

func (l *failingLoop) Add(rc syscall.RawConn, ready func(loop.Events)) (*loop.Reg, error) {
	l.mu.Lock()
	l.ready = append(l.ready, ready)
	l.mu.Unlock()
	return l.Loop.Add(rc, ready)
}

func (l *failingLoop) fail() {
	l.mu.Lock()
	ready := l.ready
	l.mu.Unlock()
	l.Post(func() {
		for _, fn := range ready {
			fn(loop.Failed)
		}
	})
}

// A session whose loop fails ends: the client is closed with 1011, the
// container is told, and the session's end is reported.
func TestSessionEndsWhenItsLoopFails(t *testing.T) {
	t.Parallel()
	for _, framed := range []bool{true, false} {
		name := map[bool]string{true: "attach", false: "exec"}[framed]
		t.Run(name, func(t *testing.T) {
			hc, p := newHandoffCounter(t)
			l := &failingLoop{Loop: hc.Loop}
			h := start(t, framed, Options{Loop: l, Poller: p})
			h.bothWays(t)
			l.fail()
			f := h.client.recv(t)
			if f.op != websocket.OpClose || f.code != websocket.CloseInternalError || f.reason != "event loop failed" {
				t.Fatalf("client got %v %d %q, want close 1011 \"event loop failed\"", f.op, f.code, f.reason)
			}
			h.client.w.WriteClose(f.code, "")
			if framed {
				if f := h.docker.recv(t); f.op != websocket.OpClose {
					t.Fatalf("the container got a %v frame %q, want the close", f.op, f.payload)
				}
			}
			r := h.result(t)
			if r.End != EndLoopFailed || r.ClientCode != websocket.CloseInternalError {
				t.Fatalf("result %+v", r)
			}
			if n := l.Registered(); n != 0 {
				t.Fatalf("loop still serves %d sockets of the ended session", n)
			}
		})
	}
}

// A client that has stopped taking its output and trickles a frame in a
// byte at a time ends with write_timeout, as on goroutines: each byte
// re-arms the frame's check, which must not put off the check of the
// output held for the client.
func TestTrickledFrameKeepsWriteTimeout(t *testing.T) {
	l, p := newHandoffCounter(t)
	const writeTimeout = 600 * time.Millisecond
	h := startSetup(t, setup{framed: false, tightClient: true, opts: Options{Loop: l, Poller: p,
		WriteTimeout: writeTimeout, FrameTimeout: 500 * time.Millisecond, CloseTimeout: 100 * time.Millisecond}})
	out := make([]byte, 64<<10)
	for !h.sess.clientOut.holding() {
		h.exec.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := h.exec.Write(out); err != nil {
			break
		}
	}
	if !h.sess.clientOut.holding() {
		t.Fatal("the proxy holds none of the output the client does not take")
	}
	held := time.Now()
	payload := make([]byte, 1000)
	var wire bytesBuffer
	websocket.NewWriter(&wire, true).WriteFrame(true, websocket.OpBinary, append(make([]byte, websocket.MaxHeaderLen), payload...), websocket.MaxHeaderLen, websocket.MaxHeaderLen+len(payload))
	stop := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		h.client.conn.Write(wire.b[:9])
		for i := 9; i < len(wire.b); i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			h.client.conn.Write(wire.b[i : i+1])
		}
	}()
	defer func() { close(stop); <-trickled }()
	select {
	case r := <-h.results:
		if r.End != EndClientGone && r.End != EndClientStalled {
			t.Errorf("ended with %s (%s), want the client's write timeout", r.End, r.Reason)
		}
		if !strings.Contains(r.Reason, "timeout") {
			t.Errorf("ended with %q, want the client's write timeout", r.Reason)
		}
		t.Logf("ended %v after its output was held: %s", time.Since(held).Round(10*time.Millisecond), r.Reason)
		h.results <- r
	case <-time.After(10 * writeTimeout):
		t.Fatalf("still running %v after its output was held, with write_timeout %v", time.Since(held).Round(10*time.Millisecond), writeTimeout)
	}
}

// A frame the proxy stops reading because the other side takes none of
// its data is not the peer's stall: FrameTimeout does not end it, the
// other side's own bound does, with the other side blamed, as on
// goroutines.
func TestBackpressuredFrameIsNotAStall(t *testing.T) {
	t.Run("client stops reading output", func(t *testing.T) {
		const writeTimeout = 1500 * time.Millisecond
		h := startSetup(t, setup{framed: true, tightClient: true, opts: Options{
			WriteTimeout: writeTimeout, FrameTimeout: 300 * time.Millisecond, CloseTimeout: 100 * time.Millisecond}})
		h.docker.keepAnswering()
		go h.docker.trySend(websocket.OpBinary, make([]byte, 8<<20))
		select {
		case r := <-h.results:
			if r.End != EndClientGone || !strings.Contains(r.Reason, "write to client") {
				t.Errorf("ended with %s (%s), want client_gone on the write to the client", r.End, r.Reason)
			}
			h.results <- r
		case <-time.After(5 * writeTimeout):
			t.Fatalf("still running %v after the client stopped reading, with write_timeout %v", 5*writeTimeout, writeTimeout)
		}
	})
	t.Run("Docker stops reading input", func(t *testing.T) {
		const frameTimeout = 300 * time.Millisecond
		h := startSetup(t, setup{framed: true, tightContainer: true, opts: Options{
			FrameTimeout: frameTimeout, CloseTimeout: 100 * time.Millisecond}})
		go h.client.trySend(websocket.OpBinary, make([]byte, 8<<20))
		select {
		case r := <-h.results:
			t.Errorf("ended with %s (%s) while Docker took no input, though no heartbeat bounds that", r.End, r.Reason)
			h.results <- r
		case <-time.After(5 * frameTimeout):
		}
	})
}

// A session whose output to the client is held on the loop, and which
// then leaves the loop (half a frame header from the client), goes on as
// on goroutines: the held bytes are not cut by a deadline noted for a
// heartbeat's ping (write_timeout is off here), and the heartbeat's
// checks go on while they wait (max_session_duration ends it).
func TestHeldOutputHandoffKeepsChecks(t *testing.T) {
	t.Parallel()
	const maxDuration = 700 * time.Millisecond
	h := startSetup(t, setup{framed: true, tightClient: true, opts: Options{
		Heartbeat: 10 * time.Second, PingClient: true,
		MaxDuration: maxDuration, CheckInterval: 50 * time.Millisecond}})
	h.docker.keepAnswering()
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		big := make([]byte, 60<<10)
		for {
			h.docker.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if h.docker.trySend(websocket.OpBinary, big) != nil {
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	h.client.send(t, websocket.OpBinary, []byte("x"))
	h.client.conn.Write([]byte{0x82}) // half a header: off the loop
	select {
	case r := <-h.results:
		h.results <- r
		if r.End != EndMaxDuration {
			t.Fatalf("ended with %s (%s), want max_duration", r.End, r.Reason)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("max_session_duration (%v) not applied 3s later", maxDuration)
	}
	h.docker.conn.Close()
	<-flooded
}

// A heartbeat's ping writes nothing while output the loop kept waits:
// after the session left the loop but before its pump wrote the output,
// the ping would write it within its own short bound and, the client
// being slow to take it, cut the stream inside a frame; on the loop it
// would wait behind it (with no room left, it would take the session off
// the loop to do so). The pump then writes the output whole, and the
// next beat's ping follows.
func TestPingSkipsOutputKeptOnTheLoop(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		onLoop bool
		kept   int // bytes of one frame
	}{
		{"after the session left the loop", false, 32 << 10},
		{"on the loop, with no room left", true, pendCap - 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			proxyEnd, clientEnd := testenv.TightSocketPair(t)
			raw, ok := rawsock.Wrap(proxyEnd).(*rawsock.Conn)
			if !ok {
				t.Fatal("rawsock did not wrap a TCP socket")
			}
			s := &Session{}
			k := &s.clientOut
			k.init(s, clientSide, raw, &deadlines{conn: proxyEnd})
			k.raw = raw
			s.clientW = websocket.NewWriter(k, false)
			s.clientW.SetTimeout(k, 0)

			// What the loop kept: a frame many times the socket's buffer.
			hl := 4
			if c.kept-hl > 0xffff {
				hl = 10
			}
			payload := bytes.Repeat([]byte("o"), c.kept-hl)
			var frame bytes.Buffer
			buf := append(make([]byte, websocket.MaxHeaderLen), payload...)
			if err := websocket.NewWriter(&frame, false).WriteFrame(true, websocket.OpBinary, buf, websocket.MaxHeaderLen, len(buf)); err != nil {
				t.Fatal(err)
			}
			if frame.Len() != c.kept {
				t.Fatalf("the frame is %d bytes, want %d", frame.Len(), c.kept)
			}
			k.buf = pendPool.Get().(*[pendCap]byte)
			k.off, k.end = 0, copy(k.buf[:], frame.Bytes())

			const beat = 50 * time.Millisecond
			s.inline.Store(c.onLoop)
			if s.clientW.TryWriteControl(websocket.OpPing, nil, beat) {
				t.Fatal("a ping was written behind output the loop kept")
			}
			if k.err != nil || k.end-k.off != c.kept {
				t.Fatalf("the ping left %d bytes kept (error %v), want the %d kept before it", k.end-k.off, k.err, c.kept)
			}
			s.inline.Store(false)
			read := make(chan error, 1)
			go func() {
				time.Sleep(3 * beat) // slower than the ping's bound
				r := websocket.NewReader(clientEnd, websocket.ReaderOptions{})
				clientEnd.SetReadDeadline(time.Now().Add(5 * time.Second))
				h, err := r.NextFrame()
				if err != nil {
					read <- err
					return
				}
				got, err := io.ReadAll(r)
				switch {
				case err != nil:
					read <- err
				case h.Op != websocket.OpBinary || !bytes.Equal(got, payload):
					read <- fmt.Errorf("got a %v frame of %d bytes, want the %d bytes kept", h.Op, len(got), len(payload))
				default:
					h, err = r.NextFrame()
					if err == nil && h.Op != websocket.OpPing {
						err = fmt.Errorf("then a %v frame, want the ping", h.Op)
					}
					read <- err
				}
			}()
			if err := s.flushPending(k); err != nil {
				t.Fatalf("the pump could not write the output kept on the loop: %v", err)
			}
			if !s.clientW.TryWriteControl(websocket.OpPing, nil, time.Second) {
				t.Fatal("the next ping was not written once the output was")
			}
			if err := <-read; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Exec output that streams leaves in chunks on the loop too, not in one
// small message per readiness: the pump remembers across readinesses
// that its last read filled the small buffer.
func TestExecOutputStreamsInChunks(t *testing.T) {
	t.Parallel()
	h := start(t, false, Options{})
	const total = 256 << 10
	payload := make([]byte, total)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	go h.exec.Write(payload)
	var got []byte
	frames := 0
	h.client.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < total {
		if _, err := h.client.r.NextFrame(); err != nil {
			t.Fatalf("after %d bytes in %d messages: %v", len(got), frames, err)
		}
		b, err := io.ReadAll(h.client.r)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b...)
		frames++
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("the client got %d bytes that differ from the %d sent", len(got), total)
	}
	// 512 messages of 512 bytes each without the chunks; a handful with.
	if frames > total/smallChunk/8 {
		t.Errorf("%d bytes of streaming output came in %d messages, want at most %d", total, frames, total/smallChunk/8)
	}
	t.Logf("%d bytes in %d messages", total, frames)
}

// Both peers sent bytes with their handshakes, the client's only part of
// a frame's header: serving them leaves the loop, and the container's
// early output must still reach the client at once.
func TestEarlyOutputAfterHandoff(t *testing.T) {
	for _, framed := range []bool{false, true} {
		t.Run(map[bool]string{true: "attach", false: "exec"}[framed], func(t *testing.T) {
			opts, _ := parkedOptions(t)
			var ping bytes.Buffer
			websocket.NewWriter(&ping, true).WriteControl(websocket.OpPing, []byte("x"))
			early := []byte("prompt$ ")
			if framed {
				var f bytes.Buffer
				buf := append(make([]byte, websocket.MaxHeaderLen), early...)
				websocket.NewWriter(&f, false).WriteFrame(true, websocket.OpBinary, buf, websocket.MaxHeaderLen, len(buf))
				early = f.Bytes()
			}
			h := startAfter(t, framed, opts, ping.Bytes()[:3], early)
			h.client.conn.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := h.client.r.NextFrame(); err != nil {
				t.Fatalf("the container's early output: %v", err)
			}
		})
	}
}

// behindLoop is a loop whose Behind says what the test sets.
type behindLoop struct {
	*loop.Loop
	behind atomic.Bool
}

func (b *behindLoop) Behind() bool { return b.behind.Load() }

// A session on a loop that is behind leaves it for goroutines of its own
// when its socket is next found ready, relays as before there, and goes
// back to the loop once both directions are idle.
func TestSessionShedFromLoopBehind(t *testing.T) {
	t.Parallel()
	l, p := newLoop(t)
	bl := &behindLoop{Loop: l}
	// Idle long enough that a slow test sees the session off the loop.
	h := start(t, false, Options{Loop: bl, Poller: p, IdleAfter: time.Second})
	s := h.sess
	onLoop := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.onLoop
	}
	roundTrip := func(when string) {
		t.Helper()
		h.client.send(t, websocket.OpBinary, []byte("ls\r"))
		got := make([]byte, 3)
		h.exec.SetReadDeadline(time.Now().Add(settle))
		if _, err := io.ReadFull(h.exec, got); err != nil || string(got) != "ls\r" {
			t.Fatalf("%s: container got %q, %v", when, got, err)
		}
		if _, err := h.exec.Write([]byte("out")); err != nil {
			t.Fatal(err)
		}
		h.client.conn.SetReadDeadline(time.Now().Add(settle))
		if _, err := h.client.r.NextFrame(); err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if b, err := io.ReadAll(h.client.r); err != nil || string(b) != "out" {
			t.Fatalf("%s: client got %q, %v", when, b, err)
		}
	}

	if !testenv.WaitFor(settle, onLoop) {
		t.Fatal("the session did not start on the loop")
	}
	roundTrip("on the loop")
	if !onLoop() {
		t.Fatal("the session left a loop that is not behind")
	}
	bl.behind.Store(true)
	before := SessionsShed()
	roundTrip("as the loop falls behind")
	if onLoop() {
		t.Fatal("the session stayed on a loop that is behind")
	}
	if SessionsShed() == before {
		t.Fatal("the session left the loop uncounted")
	}
	roundTrip("off the loop")
	bl.behind.Store(false)
	if !testenv.WaitFor(settle, onLoop) {
		t.Fatal("the idle session did not go back to the loop")
	}
	roundTrip("back on the loop")
	h.running(t, "at the end")
}
