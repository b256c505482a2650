package server

import (
	"crypto/tls"
	"syscall"
	"testing"

	"github.com/zun-wsproxy/zun-wsproxy/internal/front"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// Connections accepted by Listen carry TCP keepalive (set once on the
// listening socket, inherited on accept) and TCP_NODELAY, plain and TLS.
func TestAcceptedConnectionsKeepAlive(t *testing.T) {
	certFile, keyFile, _ := testenv.SelfSignedCert(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts ListenOptions
	}{
		{"plain", ListenOptions{}},
		{"tls port, plain client", ListenOptions{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := acceptOne(t, tc.opts, []byte("G")) // the TLS port classifies by the first byte
			sc, ok := c.(syscall.Conn)
			if !ok {
				sc = c.(*front.Replay).Conn.(syscall.Conn)
			}
			rc, err := sc.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			want := []struct {
				name       string
				level, opt int
				value      int
			}{
				{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
				{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, keepAliveIdle},
				{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, keepAliveInterval},
				{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount},
				{"TCP_NODELAY", syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
			}
			rc.Control(func(fd uintptr) {
				for _, w := range want {
					got, err := syscall.GetsockoptInt(int(fd), w.level, w.opt)
					if err != nil || got != w.value {
						t.Errorf("%s = %d (%v), want %d", w.name, got, err, w.value)
					}
				}
			})
		})
	}
}
