package server

import (
	"fmt"
	"net"
	"syscall"
)

// Options set once on the listening socket.
//
// TCP keepalive finds clients that vanished without a word (a laptop shut)
// from idle sessions: Go's defaults (first probe after 15 s, every 15 s,
// 9 probes). Linux gives them to every connection accepted from the
// socket, which saves four system calls per connection.
//
// TCP_DEFER_ACCEPT, the listening socket's own, has the kernel hand over
// a connection once its first byte has come (every client speaks first
// here: the request, the ClientHello, the PROXY header), so the request
// is read at once instead of after a read that finds nothing and a wait
// for the socket to be ready: ~4% of the proxy's CPU per session set up.
// A connection that sends nothing is handed over after deferAccept
// seconds anyway (when the kernel resends its SYN-ACK), and
// header_timeout applies from there; one still silent when the listener
// closes is dropped by the kernel without a word (the client learns when
// it sends). It is a speed-up only: a kernel that refuses it (a sandbox)
// leaves connections handed over at once.
const (
	keepAliveIdle     = 15
	keepAliveInterval = 15
	keepAliveCount    = 9
	deferAccept       = 1 // seconds
)

func listenConfig() net.ListenConfig {
	return net.ListenConfig{KeepAlive: -1, Control: setListenOptions}
}

func setListenOptions(_, _ string, c syscall.RawConn) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		for _, o := range [...]struct {
			name              string
			level, opt, value int
		}{
			{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, keepAliveIdle},
			{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, keepAliveInterval},
			{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount},
		} {
			if err = syscall.SetsockoptInt(int(fd), o.level, o.opt, o.value); err != nil {
				err = fmt.Errorf("listening socket %s: %w", o.name, err)
				return
			}
		}
		// Best effort (above).
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, deferAccept)
	})
	if cerr != nil {
		return cerr
	}
	return err
}
