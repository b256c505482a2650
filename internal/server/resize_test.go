package server

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/docker"
	"github.com/zun-wsproxy/zun-wsproxy/internal/proxy"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// heldResizer is Docker's resize API behind a gate: calls wait until the
// test opens it (or their context ends), and are counted.
type heldResizer struct {
	docker         Resizer
	open           chan struct{}
	calls, running atomic.Int64
}

func (h *heldResizer) Resize(ctx context.Context, t console.Target, rows, cols int) error {
	h.calls.Add(1)
	h.running.Add(1)
	defer h.running.Add(-1)
	select {
	case <-h.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return h.docker.Resize(ctx, t, rows, cols)
}

// A burst of 2,000 resizes from the web console, then a keystroke: the
// keystroke is answered while Docker's resize calls are held, the
// terminal ends at the last size asked (stty size in the container says
// so), and when the session has ended no resize call is left.
func TestResizeBurst(t *testing.T) {
	z := testenv.NewZunDB(t, "resize")
	d := testenv.NewDocker(t)
	dialer := docker.NewDialer(docker.Options{APIVersion: testenv.APIVersion, Timeout: 5 * time.Second})
	t.Cleanup(dialer.CloseIdle)
	rz := &heldResizer{docker: dialer, open: make(chan struct{})}
	srv, addr := newServer(t, z, func(o *Options, _ *ListenOptions) { o.Resizer = rz })
	c := z.InsertContainer(t, testenv.Container{DockerID: d.Run("sh"), Token: testenv.NewUUID()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://%s/?token=%s&uuid=%s", addr, c.Token, c.UUID),
		&websocket.DialOptions{Subprotocols: []string{proxy.ConsoleSubprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	output := make(chan string, 1024)
	go func() {
		defer close(output)
		for {
			_, data, err := conn.Read(ctx)
			if err != nil {
				return
			}
			output <- string(data)
		}
	}()
	var screen strings.Builder
	waitFor := func(re *regexp.Regexp, within time.Duration) []string {
		t.Helper()
		deadline := time.After(within)
		for {
			if m := re.FindAllStringSubmatch(screen.String(), -1); m != nil {
				return m[len(m)-1]
			}
			select {
			case s, ok := <-output:
				if !ok {
					t.Fatalf("session ended; output so far %q", screen.String())
				}
				screen.WriteString(s)
			case <-deadline:
				return nil
			}
		}
	}
	for i := 0; i < 2000; i++ {
		conn.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"type":"resize","rows":%d,"cols":%d}`, 10+i%50, 20+i%90))
	}
	conn.Write(ctx, websocket.MessageText, []byte(`{"type":"resize","rows":37,"cols":101}`))
	sent := time.Now()
	conn.Write(ctx, websocket.MessageBinary, []byte("echo k-$((6*7))\n"))
	if waitFor(regexp.MustCompile(`k-42`), 10*time.Second) == nil {
		t.Fatalf("the keystroke after the resizes was not answered while resize calls were held: %q", screen.String())
	}
	t.Logf("keystroke answered %v after 2,000 resizes, %d resize calls made so far (held)", time.Since(sent).Round(time.Millisecond), rz.calls.Load())
	close(rz.open)
	size := regexp.MustCompile(`(?m)^(\d+) (\d+)\r?$`)
	for deadline := time.Now().Add(10 * time.Second); ; {
		screen.Reset()
		conn.Write(ctx, websocket.MessageBinary, []byte("stty size\n"))
		m := waitFor(size, time.Second)
		if m != nil && m[1] == "37" && m[2] == "101" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stty size says %v, want the last size asked, 37 101", m)
		}
	}
	t.Logf("2,001 sizes asked, %d resize calls to Docker", rz.calls.Load())
	conn.Close(websocket.StatusNormalClosure, "")
	if !testenv.WaitFor(5*time.Second, func() bool { return srv.Sessions() == 0 }) {
		t.Fatal("the session did not end")
	}
	if n := rz.running.Load(); n != 0 {
		t.Fatalf("%d resize calls still running after the session ended", n)
	}
}
