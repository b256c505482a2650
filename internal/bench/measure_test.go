package bench

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// A thread that sleeps is switched out: the count of this process's
// switches grows by at least that.
func TestContextSwitches(t *testing.T) {
	pids := []int{os.Getpid()}
	before := ContextSwitches(pids)
	for i := 0; i < 20; i++ {
		time.Sleep(time.Millisecond)
	}
	after := ContextSwitches(pids)
	if before <= 0 || after-before < 10 {
		t.Fatalf("context switches %d, then %d after 20 sleeps", before, after)
	}
	if n := ContextSwitches([]int{1 << 30}); n != 0 {
		t.Fatalf("a process that does not exist has %d context switches", n)
	}
}

// A message is counted whole whatever its frames and length: one longer
// than the read buffer (a proxy regrouping Docker's byte stream) and one
// whose frames end where the buffer fills.
func TestReadMessageCountsEveryByte(t *testing.T) {
	cases := []struct {
		name   string
		frames []int // payload lengths of one message's frames
	}{
		{"one frame of the buffer's length", []int{64 << 10}},
		{"one frame longer than the buffer", []int{100000}},
		{"frames filling the buffer, then more", []int{30000, 35536, 20000}},
		{"three buffers' worth", []int{64 << 10, 64 << 10, 64 << 10}},
		{"an empty frame last", []int{5000, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			want := 0
			go func() {
				w := websocket.NewWriter(server, false)
				for i, n := range c.frames {
					op := websocket.OpBinary
					if i > 0 {
						op = websocket.OpContinuation
					}
					buf := make([]byte, websocket.MaxHeaderLen+n)
					if w.WriteFrame(i == len(c.frames)-1, op, buf, websocket.MaxHeaderLen, len(buf)) != nil {
						return
					}
				}
			}()
			for _, n := range c.frames {
				want += n
			}
			s := &session{conn: client, r: websocket.NewReader(client, websocket.ReaderOptions{})}
			got, err := s.readMessage(make([]byte, 64<<10))
			if err != nil || got != want {
				t.Fatalf("readMessage = %d, %v; the message has %d bytes", got, err, want)
			}
		})
	}
}
