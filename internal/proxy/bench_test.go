package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// benchSession runs a session between loopback connections and returns
// the client's and the container's ends, and a function that ends it.
func benchSession(b *testing.B, framed bool) (client, container net.Conn, stop func()) {
	clientEnd, proxyClient := testenv.SocketPair(b, "tcp")
	proxyBackend, backendEnd := testenv.SocketPair(b, "tcp")
	s := New(proxyClient, nil, console.Stream{Conn: proxyBackend, Framed: framed}, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result, 1)
	go func() { done <- s.Run(ctx) }()
	return clientEnd, backendEnd, func() {
		cancel()
		<-done
	}
}

// BenchmarkContainerToClient measures one container message relayed to
// the client through a session (attach: Docker frames in, client frames
// out). Allocations are per relayed message, harness included.
func BenchmarkContainerToClient(b *testing.B) {
	for _, size := range []int{16, 1 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			clientEnd, dockerEnd, stop := benchSession(b, true)

			docker := websocket.NewWriter(dockerEnd, false)
			frame := make([]byte, websocket.MaxHeaderLen+size)
			for i := range frame {
				frame[i] = 'a' + byte(i%26)
			}
			client := websocket.NewReader(clientEnd, websocket.ReaderOptions{})
			sink := make([]byte, 64<<10)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			go func() {
				for i := 0; i < b.N; i++ {
					if docker.WriteFrame(true, websocket.OpBinary, frame, websocket.MaxHeaderLen, len(frame)) != nil {
						return
					}
				}
			}()
			for got := 0; got < b.N*size; {
				if _, err := client.NextFrame(); err != nil {
					b.Fatal(err)
				}
				for {
					n, err := client.Read(sink)
					got += n
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			stop()
		})
	}
}

// BenchmarkClientToContainer measures one client message relayed to an
// exec stream.
func BenchmarkClientToContainer(b *testing.B) {
	for _, size := range []int{16, 1 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			clientEnd, execEnd, stop := benchSession(b, false)

			client := websocket.NewWriter(clientEnd, true)
			frame := make([]byte, websocket.MaxHeaderLen+size)
			sink := make([]byte, 64<<10)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			go func() {
				for i := 0; i < b.N; i++ {
					// Masking happens in place: the payload is noise anyway.
					if client.WriteFrame(true, websocket.OpBinary, frame, websocket.MaxHeaderLen, len(frame)) != nil {
						return
					}
				}
			}()
			for got := 0; got < b.N*size; {
				n, err := execEnd.Read(sink)
				if err != nil {
					b.Fatal(err)
				}
				got += n
			}
			b.StopTimer()
			stop()
		})
	}
}
