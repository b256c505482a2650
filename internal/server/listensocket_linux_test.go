package server

import (
	"crypto/tls"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

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

// A connection is handed to the listener when its first byte comes
// (TCP_DEFER_ACCEPT); one that sends nothing only after deferAccept
// seconds, and then as any other.
func TestSilentConnectionsWaitInTheKernel(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan time.Time, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- time.Now()
			c.Close()
		}
	}()
	dial := func(first string) time.Duration {
		t.Helper()
		start := time.Now()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, first)
		select {
		case at := <-accepted:
			return at.Sub(start)
		case <-time.After(testenv.Settle):
			t.Fatalf("%q: not accepted in %v", first, testenv.Settle)
			return 0
		}
	}
	// The kernel holds a silent one for the whole second, however busy
	// the machine; a talking one is handed over at once (a bound far
	// below the second, for a busy machine's scheduling).
	if d := dial(""); d < 900*time.Millisecond {
		t.Errorf("a silent connection was accepted after %v, want at least the %ds deferral", d, deferAccept)
	}
	if d := dial("G"); d > 500*time.Millisecond {
		t.Errorf("a connection that sent a byte was accepted after %v, want at once", d)
	}
}
