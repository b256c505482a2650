package proxy

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/idle"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// parkedOptions makes sessions park after 50ms without input.
func parkedOptions(t *testing.T) (Options, *idle.Poller) {
	p := idle.New()
	t.Cleanup(func() { p.Close() })
	return Options{Poller: p, IdleAfter: 50 * time.Millisecond}, p
}

// waitParked waits until n directions are parked (on the Poller, or
// waiting on the test's event loops).
func waitParked(t *testing.T, p *idle.Poller, n int) {
	t.Helper()
	parked := func() int {
		if testLoops != nil {
			return p.Parked() + testLoops.Registered()
		}
		return p.Parked()
	}
	if !testenv.WaitFor(settle, func() bool { return parked() == n }) {
		t.Fatalf("%d directions parked, want %d", parked(), n)
	}
}

// pumpGoroutines counts the sessions' pump goroutines.
func pumpGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	// On the event-loop engine, a direction that waits inside serve is a
	// pump goroutine too (the loop went on in another).
	return strings.Count(string(buf), "proxy.(*direction).run") + strings.Count(string(buf), "proxy.(*direction).serve")
}

// waitPumps waits for n pump goroutines: one that parked, or ended, is
// gone a moment after it says so.
func waitPumps(t *testing.T, n int, when string) {
	t.Helper()
	var got int
	if !testenv.WaitFor(settle, func() bool { got = pumpGoroutines(); return got == n }) {
		t.Fatalf("%s: %d pump goroutines, want %d", when, got, n)
	}
}

// bothWays sends a line from the client to the container and one back.
func (h *harness) bothWays(t *testing.T) {
	t.Helper()
	h.client.send(t, websocket.OpBinary, []byte("ls\n"))
	if h.docker != nil {
		if m := h.docker.recv(t); string(m.payload) != "ls\n" {
			t.Fatalf("docker got %q", m.payload)
		}
		h.docker.send(t, websocket.OpBinary, []byte("bin\n"))
	} else {
		got := make([]byte, 3)
		if _, err := io.ReadFull(h.exec, got); err != nil || string(got) != "ls\n" {
			t.Fatalf("exec got %q, %v", got, err)
		}
		h.exec.Write([]byte("bin\n"))
	}
	if m := h.client.recv(t); string(m.payload) != "bin\n" {
		t.Fatalf("client got %q", m.payload)
	}
}

func TestIdleSessionHoldsNoGoroutine(t *testing.T) {
	for _, framed := range []bool{true, false} {
		name := map[bool]string{true: "attach", false: "exec"}[framed]
		t.Run(name, func(t *testing.T) {
			opts, p := parkedOptions(t)
			h := start(t, framed, opts)
			waitParked(t, p, 2)
			waitPumps(t, 0, "idle")
			// Both ways work after waking, and more than once.
			for i := 0; i < 3; i++ {
				h.bothWays(t)
				waitParked(t, p, 2)
			}
		})
	}
}

func TestParkedSessionEnds(t *testing.T) {
	for _, tc := range []struct {
		name       string
		framed     bool
		end        func(h *harness)
		clientCode int
		reason     string
		wantEnd    string
	}{
		{"container exits", true, func(h *harness) { h.docker.w.WriteClose(websocket.CloseNormal, "") }, websocket.CloseNormal, "container exited", EndContainerExited},
		{"exec ends", false, func(h *harness) { h.exec.Close() }, websocket.CloseNormal, "exec process ended", EndExecEnded},
		{"client closes", true, func(h *harness) { h.client.w.WriteClose(websocket.CloseNormal, "bye") }, websocket.CloseNormal, "client closed", EndClientClosed},
		{"client vanishes", true, func(h *harness) { h.client.conn.Close() }, 0, "client disconnected", EndClientGone},
		{"proxy shuts down", true, func(h *harness) { h.cancel() }, websocket.CloseGoingAway, "proxy shutting down", EndShutdown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, p := parkedOptions(t)
			h := start(t, tc.framed, opts)
			waitParked(t, p, 2)
			tc.end(h)
			res := h.result(t)
			if res.ClientCode != tc.clientCode || !strings.HasPrefix(res.Reason, tc.reason) || res.End != tc.wantEnd {
				t.Fatalf("ended with %d %q (%s), want %d %q (%s)", res.ClientCode, res.Reason, res.End, tc.clientCode, tc.reason, tc.wantEnd)
			}
			if n := p.Parked(); n != 0 {
				t.Fatalf("%d directions still parked after the end", n)
			}
		})
	}
}

// A big message that arrives slowly, across several idle deadlines, is
// not cut: the deadline only parks at a frame boundary.
func TestSlowFrameSurvivesIdleDeadline(t *testing.T) {
	opts, _ := parkedOptions(t)
	h := start(t, true, opts)
	payload := []byte(strings.Repeat("x", 3000))
	frame := make([]byte, websocket.MaxHeaderLen+len(payload))
	copy(frame[websocket.MaxHeaderLen:], payload)
	// Build the frame with a writer into a buffer, then trickle it.
	var out bytesBuffer
	websocket.NewWriter(&out, false).WriteFrame(true, websocket.OpBinary, frame, websocket.MaxHeaderLen, len(frame))
	for i := 0; i < len(out.b); i += 1000 {
		h.docker.conn.Write(out.b[i:min(i+1000, len(out.b))])
		time.Sleep(120 * time.Millisecond)
	}
	var got []byte
	for len(got) < len(payload) {
		got = append(got, h.client.recv(t).payload...)
	}
	if string(got) != string(payload) {
		t.Fatal("payload changed")
	}
}

type bytesBuffer struct{ b []byte }

func (w *bytesBuffer) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// A heartbeat's pong puts an idle direction back to sleep at once, not
// after IdleAfter: idle sessions stay parked between heartbeats.
func TestParksRightAfterPong(t *testing.T) {
	p := idle.New()
	t.Cleanup(func() { p.Close() })
	h := start(t, true, Options{Poller: p, IdleAfter: time.Minute, Heartbeat: 200 * time.Millisecond, CheckInterval: 100 * time.Millisecond})
	h.docker.keepAnswering()
	// The container side, long before a minute; the client side is not
	// pinged and keeps its goroutine, except on the event loops, where no
	// direction waits with one.
	parked, pumps := 1, 1
	if testLoops != nil {
		parked, pumps = 2, 0
	}
	waitParked(t, p, parked)
	waitPumps(t, pumps, "the client side, not pinged")
}

// A peer that stops inside a frame is ended after FrameTimeout, wherever
// in the frame it stops, whether or not its session can park: a client
// with 1008, Docker as a lost connection.
func TestStalledFrameEnds(t *testing.T) {
	for _, stall := range []struct {
		name       string
		fromDocker bool
		bytes      []byte
	}{
		{"client, inside a header", false, []byte{0x82}},
		{"client, inside a payload", false, append([]byte{0x82, 0xfe, 0x03, 0xe8, 1, 2, 3, 4}, make([]byte, 10)...)},
		{"client, inside a ping's payload", false, append([]byte{0x89, 0xb2, 1, 2, 3, 4}, make([]byte, 5)...)},
		{"Docker, inside a payload", true, append([]byte{0x82, 0x7e, 0x03, 0xe8}, make([]byte, 10)...)},
	} {
		for _, parks := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s, parks=%v", stall.name, parks), func(t *testing.T) {
				t.Parallel()
				opts := Options{IdleAfter: 50 * time.Millisecond}
				if parks {
					opts, _ = parkedOptions(t)
				}
				opts.FrameTimeout, opts.CloseTimeout = 300*time.Millisecond, 100*time.Millisecond
				h := start(t, true, opts)
				code, reason, end := websocket.ClosePolicyViolation, "frame stalled for 300ms", EndClientStalled
				if stall.fromDocker {
					h.docker.conn.Write(stall.bytes)
					code, reason, end = websocket.CloseInternalError, "lost connection to the container", EndContainerLost
				} else {
					h.client.conn.Write(stall.bytes)
				}
				m := h.client.recv(t)
				for m.op != websocket.OpClose { // what came of Docker's frame
					m = h.client.recv(t)
				}
				if m.code != code || m.reason != reason {
					t.Fatalf("client got %+v, want close %d %q", m, code, reason)
				}
				if r := h.result(t); r.End != end {
					t.Fatalf("ended with %s (%s), want %s", r.End, r.Reason, end)
				}
			})
		}
	}
}

// A frame that comes slowly but steadily is not a stalled one.
func TestSlowClientFrameIsNotStalled(t *testing.T) {
	opts, _ := parkedOptions(t)
	opts.FrameTimeout, opts.CloseTimeout = 300*time.Millisecond, 100*time.Millisecond
	h := start(t, true, opts)
	payload := []byte(strings.Repeat("x", 1000))
	var wire bytesBuffer
	websocket.NewWriter(&wire, true).WriteFrame(true, websocket.OpBinary, append(make([]byte, websocket.MaxHeaderLen), payload...), websocket.MaxHeaderLen, websocket.MaxHeaderLen+len(payload))
	// 1.2 s in all, a piece every 100 ms.
	for i := 0; i < len(wire.b); i += 85 {
		h.client.conn.Write(wire.b[i:min(i+85, len(wire.b))])
		time.Sleep(100 * time.Millisecond)
	}
	if m := h.docker.recvMessage(t); string(m.payload) != string(payload) {
		t.Fatalf("docker got %d bytes", len(m.payload))
	}
}

// Many clients stalled inside frames: each holds a pump goroutine and a
// bulk buffer for FrameTimeout (on the event-loop engine, neither: the
// session waits on the loop for the frame's bytes), then is ended;
// nothing of them is left.
func TestStalledClientsAreEnded(t *testing.T) {
	const n = 100
	opts, p := parkedOptions(t)
	// Long enough for the n sessions to start and be counted, under -race
	// on a busy machine, before the first is ended.
	opts.FrameTimeout, opts.CloseTimeout = 2*time.Second, 100*time.Millisecond
	var before, stalled, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	hs := make([]*harness, n)
	for i := range hs {
		hs[i] = start(t, true, opts)
		// A 1000-byte frame of which 10 bytes come.
		hs[i].client.conn.Write(append([]byte{0x82, 0xfe, 0x03, 0xe8, 1, 2, 3, 4}, make([]byte, 10)...))
	}
	// The container sides; the client sides wait in their frames, in a
	// pump goroutine (on the loop engine, on the loop).
	waiting, pumping := n, n
	if testLoops != nil {
		waiting, pumping = 2*n, 0
	}
	waitParked(t, p, waiting)
	runtime.GC()
	runtime.ReadMemStats(&stalled)
	g1 := runtime.NumGoroutine()
	if pumps := pumpGoroutines(); pumps != pumping {
		t.Fatalf("%d pump goroutines with %d stalled clients", pumps, n)
	}
	for i, h := range hs {
		if r := h.result(t); r.End != EndClientStalled {
			t.Fatalf("session %d ended with %s (%s)", i, r.End, r.Reason)
		}
	}
	waitPumps(t, 0, "the stalled clients ended")
	runtime.GC()
	runtime.GC() // pooled buffers go at the second
	runtime.ReadMemStats(&after)
	t.Logf("%d clients stalled inside frames: %+d goroutines, %+d KiB heap (%.1f KiB each) while stalled; %+d KiB heap once ended",
		n, g1-g0, (int64(stalled.HeapInuse)-int64(before.HeapInuse))>>10,
		float64(int64(stalled.HeapInuse)-int64(before.HeapInuse))/n/1024,
		(int64(after.HeapInuse)-int64(before.HeapInuse))>>10)
}
