package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// The token API and metrics listeners hold connections no longer than
// the console listener does: header_timeout to send a request's headers
// (and body), and as long idle between requests. Many connections that
// send nothing, half a header, one request and then nothing, or a body
// that never ends are all closed by the proxy within header_timeout.
func TestSideListenersCloseStalledConnections(t *testing.T) {
	s := newStandalone(t, true, "\n[websocket_proxy]\nheader_timeout = 1\n\n[metrics]\nlisten = 127.0.0.1:0\nprofiling = true\n")
	listeners := map[string]string{
		"token API": s.adminURL[len("http://"):],
		"metrics":   s.proxy.sideAddr(t, "metrics"),
	}
	stalls := []struct {
		name, send string
	}{
		{"nothing sent", ""},
		{"half a header", "GET /v1/tokens HTTP/1.1\r\nHost: x\r\nX-Slow: "},
		{"idle after a request", "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"a body that never ends", "POST /v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"container\""},
	}
	// Requests themselves are not bounded: a CPU profile longer than
	// header_timeout is whole.
	t.Run("metrics/a profile longer than header_timeout", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=2", listeners["metrics"]))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if took := time.Since(start); resp.StatusCode != 200 || err != nil || len(body) == 0 || took < 2*time.Second {
			t.Fatalf("a 2 s profile: %d, %d bytes (%v) after %v", resp.StatusCode, len(body), err, took)
		}
	})
	const conns = 50
	const bound = 3 * time.Second // header_timeout, and slack for a busy machine
	for name, addr := range listeners {
		for _, st := range stalls {
			t.Run(name+"/"+st.name, func(t *testing.T) {
				t.Parallel()
				var wg sync.WaitGroup
				results := make(chan string, conns)
				for i := 0; i < conns; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						results <- heldFor(addr, st.send, bound)
					}()
				}
				wg.Wait()
				close(results)
				for r := range results {
					if r != "" {
						t.Fatal(r)
					}
				}
			})
		}
	}
}

// heldFor sends send on a new connection to addr and then nothing; it
// returns "" if the server closes the connection within bound, else what
// happened.
func heldFor(addr, send string, bound time.Duration) string {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, send); err != nil {
		return "write: " + err.Error()
	}
	// Whatever the server answers is read; only its closing counts.
	c.SetReadDeadline(start.Add(bound + 5*time.Second))
	_, err = io.Copy(io.Discard, c)
	if held := time.Since(start); err != nil || held > bound {
		return fmt.Sprintf("after %q: connection held open %v (%v), want closed within %v", send, held.Round(10*time.Millisecond), err, bound)
	}
	return ""
}
