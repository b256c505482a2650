package docker

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"testing"

	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// attachServer accepts attach handshakes on a loopback port and answers
// each with 101, as Docker does.
func attachServer(t *testing.T) string {
	t.Helper()
	return testenv.ServeTCP(t, func(c net.Conn) {
		r, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", websocket.AcceptKey(r.Header.Get("Sec-WebSocket-Key")))
		c.Read(make([]byte, 1)) // until the dialer closes
	})
}

// Attach sockets go without TCP keepalive while sessions ping them, and
// carry it otherwise.
func TestAttachKeepAlive(t *testing.T) {
	addr := attachServer(t)
	for _, watched := range []bool{false, true} {
		d := NewDialer(Options{})
		d.WatchedAttach(watched)
		s, err := d.Dial(context.Background(), console.Target{Kind: console.Attach, URL: "ws://" + addr + "/v1.26/containers/c/attach/ws"})
		if err != nil {
			t.Fatal(err)
		}
		rc, err := s.Conn.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var on int
		rc.Control(func(fd uintptr) { on, err = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) })
		s.Conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := !watched; (on != 0) != want {
			t.Errorf("watched %v: SO_KEEPALIVE %d, want it %v", watched, on, want)
		}
	}
}
