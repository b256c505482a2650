package testenv

import (
	"net"
	"path/filepath"
	"testing"
)

// SocketPair returns the two ends of a connection over loopback TCP
// ("tcp") or a Unix socket in a temporary directory ("unix"): the dialed
// end and the accepted one, both closed when the test ends.
func SocketPair(tb testing.TB, network string) (dialed, accepted net.Conn) {
	tb.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(tb.TempDir(), "s")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	acceptedc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acceptedc <- c
	}()
	dialed, err = net.Dial(network, ln.Addr().String())
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
