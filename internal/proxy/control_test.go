package proxy

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

func TestParseControl(t *testing.T) {
	cases := []struct {
		in   string
		want Control
		ok   bool
	}{
		{`{"type":"resize","rows":24,"cols":80}`, Control{Type: "resize", Rows: 24, Cols: 80}, true},
		{`{"type":"resize","rows":0,"cols":80}`, Control{}, false},
		{`{"type":"resize","rows":24,"cols":5000}`, Control{}, false},
		{`{"type":"paste","data":"rm -rf /"}`, Control{}, false},
		{`ls -la`, Control{}, false},
		{``, Control{}, false},
	}
	for _, c := range cases {
		got, err := ParseControl([]byte(c.in))
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseControl(%q) = %+v, %v", c.in, got, err)
		}
	}
}

// dockerResize stands for Docker's resize call: each call is recorded and
// held until the test releases it (or its context ends).
type dockerResize struct {
	mu      sync.Mutex
	calls   [][2]int
	errs    []error // each call's context error when it returned
	entered chan struct{}
	release chan struct{}
}

func newDockerResize() *dockerResize {
	return &dockerResize{entered: make(chan struct{}, 10000), release: make(chan struct{})}
}

func (d *dockerResize) resize(ctx context.Context, rows, cols int) error {
	d.mu.Lock()
	d.calls = append(d.calls, [2]int{rows, cols})
	d.mu.Unlock()
	d.entered <- struct{}{}
	select {
	case <-d.release:
	case <-ctx.Done():
	}
	d.mu.Lock()
	d.errs = append(d.errs, ctx.Err())
	d.mu.Unlock()
	return ctx.Err()
}

func (d *dockerResize) done() ([][2]int, []error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([][2]int(nil), d.calls...), append([]error(nil), d.errs...)
}

// resizeWorkers counts goroutines applying resizes.
func resizeWorkers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "proxy.(*resizer).applyPending")
}

func resizeMessage(rows, cols int) []byte {
	return []byte(fmt.Sprintf(`{"type":"resize","rows":%d,"cols":%d}`, rows, cols))
}

// A burst of resizes does not hold the keystroke behind it: Docker's
// resize calls are made off the read path, one at a time, and the sizes
// asked meanwhile come down to the last one, which Docker gets. Then no
// goroutine is left.
func TestResizeBurstDoesNotHoldKeystrokes(t *testing.T) {
	docker := newDockerResize()
	h := start(t, true, Options{Resize: docker.resize, CloseTimeout: 100 * time.Millisecond})
	go func() {
		for i := 0; i < 2000; i++ {
			if h.client.trySend(websocket.OpText, resizeMessage(1+i%1000, 1+(7*i)%1000)) != nil {
				return
			}
		}
		h.client.trySend(websocket.OpText, resizeMessage(37, 101))
		h.client.trySend(websocket.OpBinary, []byte("ls\n"))
	}()
	<-docker.entered // a first resize call is under way, and held
	if m := h.docker.recvMessage(t); string(m.payload) != "ls\n" {
		t.Fatalf("docker got %q", m.payload)
	}
	close(docker.release)
	if !testenv.WaitFor(5*time.Second, func() bool { return resizeWorkers() == 0 }) {
		t.Fatal("a resize goroutine is left with no resize to apply")
	}
	calls, _ := docker.done()
	if len(calls) > 2 || calls[len(calls)-1] != [2]int{37, 101} {
		t.Fatalf("Docker got %d resize calls ending with %v, want at most 2 ending with [37 101]", len(calls), calls[len(calls)-1])
	}
}

// Ending the session cancels the resize call under way, and the session
// ends only once that call has returned: no Docker call outlives it.
func TestResizeEndsWithSession(t *testing.T) {
	docker := newDockerResize()
	h := start(t, true, Options{Resize: docker.resize, CloseTimeout: 100 * time.Millisecond})
	h.client.send(t, websocket.OpText, resizeMessage(40, 120))
	<-docker.entered
	h.cancel()
	h.result(t)
	calls, errs := docker.done()
	if len(calls) != 1 || len(errs) != 1 || errs[0] != context.Canceled {
		t.Fatalf("when the session ended: %d calls made, %d returned (%v), want 1 returned cancelled", len(calls), len(errs), errs)
	}
}
