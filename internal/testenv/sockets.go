package testenv

import (
	"context"
	"net"
	"path/filepath"
	"syscall"
	"testing"
)

// SocketPair returns the two ends of a connection over loopback TCP
// ("tcp") or a Unix socket in a temporary directory ("unix"): the dialed
// end and the accepted one, both closed when the test ends.
func SocketPair(tb testing.TB, network string) (dialed, accepted net.Conn) {
	tb.Helper()
	return socketPair(tb, network, 0)
}

// TightSocketPair is SocketPair over TCP with the smallest socket buffers
// the kernel allows at both ends: a peer that reads nothing stops a write
// of a few KiB, not of megabytes.
func TightSocketPair(tb testing.TB) (dialed, accepted net.Conn) {
	tb.Helper()
	return socketPair(tb, "tcp", 1)
}

// socketPair sets buffers of bufSize bytes (0: the system's) before the
// connection is made, when they still bound the window TCP offers.
func socketPair(tb testing.TB, network string, bufSize int) (dialed, accepted net.Conn) {
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(tb.TempDir(), "s")
	}
	control := func(_, _ string, c syscall.RawConn) error {
		if bufSize == 0 {
			return nil
		}
		var err error
		c.Control(func(fd uintptr) {
			for _, opt := range []int{syscall.SO_SNDBUF, syscall.SO_RCVBUF} {
				if e := syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, bufSize); e != nil {
					err = e
				}
			}
		})
		return err
	}
	lc := net.ListenConfig{Control: control}
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	acceptedc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acceptedc <- c
	}()
	d := net.Dialer{Control: control}
	dialed, err = d.Dial(network, ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	if accepted = <-acceptedc; accepted == nil {
		dialed.Close()
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { dialed.Close(); accepted.Close() })
	return dialed, accepted
}
