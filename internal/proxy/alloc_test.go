// The race detector has sync.Pool drop a quarter of what is put back (to
// shake out reuse bugs), so pooled buffers are allocated again: this test
// holds in ordinary builds, which make test runs it in.

//go:build !race

package proxy

import (
	"fmt"
	"io"
	"testing"

	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// Relaying a message allocates nothing, either way and whatever its size,
// once a session runs: the benchmarks' allocation figures, held. (The
// count is the whole process's, the test's own ends included.)
func TestRelayAllocatesNothing(t *testing.T) {
	for _, size := range []int{16, 1 << 10, 64 << 10} {
		t.Run(fmt.Sprintf("container to client, %dB", size), func(t *testing.T) {
			h := start(t, true, Options{})
			frame := make([]byte, websocket.MaxHeaderLen+size)
			for i := range frame {
				frame[i] = 'a' + byte(i%26)
			}
			sink := make([]byte, 64<<10)
			relay := func() {
				if err := h.docker.w.WriteFrame(true, websocket.OpBinary, frame, websocket.MaxHeaderLen, len(frame)); err != nil {
					t.Fatal(err)
				}
				for got := 0; got < size; {
					if _, err := h.client.r.NextFrame(); err != nil {
						t.Fatal(err)
					}
					for {
						n, err := h.client.r.Read(sink)
						got += n
						if err == io.EOF {
							break
						}
						if err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			if n := testing.AllocsPerRun(200, relay); n != 0 {
				t.Fatalf("%v allocations per message", n)
			}
		})
		t.Run(fmt.Sprintf("client to container, %dB", size), func(t *testing.T) {
			h := start(t, false, Options{})
			frame := make([]byte, websocket.MaxHeaderLen+size)
			sink := make([]byte, size)
			relay := func() {
				// Masking happens in place: the payload is noise anyway.
				if err := h.client.w.WriteFrame(true, websocket.OpBinary, frame, websocket.MaxHeaderLen, len(frame)); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(h.exec, sink); err != nil {
					t.Fatal(err)
				}
			}
			if n := testing.AllocsPerRun(200, relay); n != 0 {
				t.Fatalf("%v allocations per message", n)
			}
		})
	}
}
