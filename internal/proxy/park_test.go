package proxy

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/idle"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// parkedOptions makes sessions park after 50ms without input.
func parkedOptions(t *testing.T) (Options, *idle.Poller) {
	p := idle.New()
	t.Cleanup(func() { p.Close() })
	return Options{Poller: p, IdleAfter: 50 * time.Millisecond}, p
}

// waitParked waits until n directions are parked.
func waitParked(t *testing.T, p *idle.Poller, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Parked() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d directions parked, want %d", p.Parked(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pumpGoroutines counts the session's pump goroutines.
func pumpGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "proxy.(*direction).run")
}

func TestIdleSessionHoldsNoGoroutine(t *testing.T) {
	for _, framed := range []bool{true, false} {
		name := map[bool]string{true: "attach", false: "exec"}[framed]
		t.Run(name, func(t *testing.T) {
			opts, p := parkedOptions(t)
			h := start(t, framed, opts)
			waitParked(t, p, 2)
			if n := pumpGoroutines(); n != 0 {
				t.Fatalf("%d pump goroutines while idle, want 0", n)
			}
			// Both ways work after waking, and more than once.
			for i := 0; i < 3; i++ {
				h.client.send(t, websocket.OpBinary, []byte("ls\n"))
				if framed {
					if m := h.docker.recv(t); string(m.payload) != "ls\n" {
						t.Fatalf("docker got %q", m.payload)
					}
					h.docker.send(t, websocket.OpBinary, []byte("bin\n"))
				} else {
					got := make([]byte, 3)
					if _, err := h.exec.Read(got); err != nil || string(got) != "ls\n" {
						t.Fatalf("exec got %q, %v", got, err)
					}
					h.exec.Write([]byte("bin\n"))
				}
				if m := h.client.recv(t); string(m.payload) != "bin\n" {
					t.Fatalf("client got %q", m.payload)
				}
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
	go h.docker.answerPings()
	waitParked(t, p, 1) // the container side, long before a minute
	if n := pumpGoroutines(); n != 1 {
		t.Fatalf("%d pump goroutines, want 1 (the client side, not pinged)", n)
	}
}
