package websocket_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"sync"
	"testing"

	coder "github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// BenchmarkIdleConnMemory prints what an idle server-side connection costs
// (heap and stacks, the client side and net/http's share included, the same
// for both) with this package, which keeps no goroutine and no buffer for an
// idle connection (the proxy parks its socket on epoll), and with
// github.com/coder/websocket, which needs a goroutine in Read to notice
// anything and keeps its buffered reader and writer.
func BenchmarkIdleConnMemory(b *testing.B) {
	const n = 500
	for _, impl := range []string{"own", "coder"} {
		b.Run(impl, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.ReportMetric(idleBytesPerConn(b, impl, n), "B/conn")
			}
		})
	}
}

func idleBytesPerConn(b *testing.B, impl string, n int) float64 {
	var mu sync.Mutex
	var held []any
	ready := make(chan struct{}, n)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch impl {
		case "own":
			key, err := websocket.CheckRequest(r)
			if err != nil {
				return
			}
			conn, early, err := websocket.Upgrade(w, key, "")
			if err != nil {
				return
			}
			rd := websocket.NewReader(conn, websocket.ReaderOptions{FromClient: true})
			_ = early
			mu.Lock()
			held = append(held, conn, rd, websocket.NewWriter(conn, false))
			mu.Unlock()
			ready <- struct{}{}
		case "coder":
			c, err := coder.Accept(w, r, nil)
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			wg.Add(1)
			go func() { // what a relay over it must do to see the peer
				defer wg.Done()
				ready <- struct{}{}
				c.Read(ctx)
			}()
		}
	}))
	defer srv.Close()
	defer wg.Wait()
	defer cancel()
	u, _ := url.Parse("ws" + srv.URL[len("http"):] + "/")
	clients := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := websocket.ClientHandshake(c, u, nil); err != nil {
			b.Fatal(err)
		}
		clients = append(clients, c)
		<-ready
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	used := float64(after.HeapInuse+after.StackInuse) - float64(before.HeapInuse+before.StackInuse)
	mu.Lock()
	runtime.KeepAlive(held)
	mu.Unlock()
	return used / float64(n)
}
