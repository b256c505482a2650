package testenv

import (
	"io"
	"net"
	"testing"
)

// ServeTCP runs the handler on each connection and closes it when the
// handler returns; the test's end closes connections still open.
func TestServeTCP(t *testing.T) {
	var held net.Conn
	t.Run("serve", func(t *testing.T) {
		addr := ServeTCP(t, func(c net.Conn) {
			c.Write([]byte("hi"))
			io.Copy(io.Discard, c) // held until the end of the subtest
		})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
			t.Fatalf("read %q, %v", buf, err)
		}
		held = c
	})
	defer held.Close()
	// The subtest's end closed the server's side.
	if n, err := held.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after the test's end: read %d, %v; want EOF", n, err)
	}
}
