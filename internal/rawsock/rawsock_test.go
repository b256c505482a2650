package rawsock

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// pair returns a wrapped connection and its plain peer, over TCP or Unix.
func pair(t *testing.T, network string) (*Conn, net.Conn) {
	t.Helper()
	c, peer := testenv.SocketPair(t, network)
	w, ok := Wrap(c).(*Conn)
	if !ok {
		t.Fatalf("Wrap left a %s connection plain", network)
	}
	return w, peer
}

// cycled returns pair's connection after it was out of Go's poller and
// back (Unpoll, Repoll): it then waits, and closes, through an *os.File.
func cycled(t *testing.T, network string) (*Conn, net.Conn) {
	t.Helper()
	c, peer := pair(t, network)
	if err := c.Unpoll(); err != nil {
		t.Fatal(err)
	}
	if err := c.Repoll(); err != nil {
		t.Fatal(err)
	}
	return c, peer
}

func TestConn(t *testing.T) {
	for _, mode := range []struct {
		name string
		pair func(*testing.T, string) (*Conn, net.Conn)
	}{{"", pair}, {"/unpolled and repolled", cycled}} {
		t.Run(mode.name, func(t *testing.T) { testConn(t, mode.pair) })
	}
}

func testConn(t *testing.T, pair func(*testing.T, string) (*Conn, net.Conn)) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network+"/both ways", func(t *testing.T) {
			c, peer := pair(t, network)
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("peer read %q, %v", buf, err)
			}
			peer.Write([]byte("pong"))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
				t.Fatalf("read %q, %v", buf, err)
			}
		})
		t.Run(network+"/a write larger than the socket buffers, to a slow reader", func(t *testing.T) {
			c, peer := pair(t, network)
			want := make([]byte, 8<<20)
			for i := range want {
				want[i] = byte(i * 7)
			}
			got := make(chan []byte, 1)
			go func() {
				var b bytes.Buffer
				chunk := make([]byte, 4096)
				for b.Len() < len(want) {
					n, err := peer.Read(chunk)
					b.Write(chunk[:n])
					if err != nil {
						break
					}
				}
				got <- b.Bytes()
			}()
			n, err := c.Write(want)
			if err != nil || n != len(want) {
				t.Fatalf("wrote %d of %d: %v", n, len(want), err)
			}
			if !bytes.Equal(<-got, want) {
				t.Fatal("the peer read other bytes than were written")
			}
		})
		t.Run(network+"/end of stream", func(t *testing.T) {
			c, peer := pair(t, network)
			peer.Write([]byte("last"))
			peer.Close()
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "last" {
				t.Fatalf("read %q, %v", b, err)
			}
		})
		t.Run(network+"/read deadline", func(t *testing.T) {
			c, _ := pair(t, network)
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			_, err := c.Read(make([]byte, 10))
			var op *net.OpError
			if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &op) || op.Op != "read" {
				t.Fatalf("read past the deadline: %v", err)
			}
		})
		t.Run(network+"/write deadline, peer not reading", func(t *testing.T) {
			c, _ := pair(t, network)
			// Long enough for the socket's buffer to take a first part
			// before it passes, however busy the machine (at 50 ms it
			// sometimes passed before the write began).
			// The buffer is made first: 64 MiB take a while to clear
			// under the race detector on a loaded machine.
			buf := make([]byte, 64<<20)
			c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
			n, err := c.Write(buf)
			if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n == 64<<20 {
				t.Fatalf("wrote %d, %v; want part of it and a deadline error", n, err)
			}
		})
		t.Run(network+"/closed", func(t *testing.T) {
			c, _ := pair(t, network)
			c.Close()
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read after close: %v", err)
			}
			if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("write after close: %v", err)
			}
		})
	}
	t.Run("tcp/reset by the peer", func(t *testing.T) {
		c, peer := pair(t, "tcp")
		peer.(*net.TCPConn).SetLinger(0)
		peer.Close()
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			_, err = c.Write(make([]byte, 1024))
			time.Sleep(time.Millisecond)
		}
		var op *net.OpError
		var sys *os.SyscallError
		if !errors.As(err, &op) || op.Op != "write" || !errors.As(err, &sys) {
			t.Fatalf("write to a reset connection: %v", err)
		}
	})
}

// Connections that are not sockets (TLS, pipes) are left as they are.
func TestWrapLeavesOthers(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("a pipe was wrapped")
	}
}

func BenchmarkWrite64K(b *testing.B) {
	for _, raw := range []bool{false, true} {
		name := map[bool]string{false: "net", true: "raw"}[raw]
		b.Run(name, func(b *testing.B) {
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			defer ln.Close()
			go func() {
				c, _ := ln.Accept()
				io.Copy(io.Discard, c)
			}()
			c, _ := net.Dial("tcp", ln.Addr().String())
			defer c.Close()
			w := c
			if raw {
				w = Wrap(c)
			}
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := w.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A read or write that fails reads as net's own would, word for word: a
// timeout or a closed socket in set-up (a handshake with Docker, the
// database driver) is logged as net words it.
func TestErrorTextIsNets(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		for _, tc := range []struct {
			name string
			do   func(c net.Conn) error
		}{
			{"read deadline", func(c net.Conn) error {
				c.SetReadDeadline(time.Unix(1, 0))
				_, err := c.Read(make([]byte, 1))
				return err
			}},
			{"write deadline", func(c net.Conn) error {
				c.SetWriteDeadline(time.Unix(1, 0))
				_, err := c.Write([]byte("x"))
				return err
			}},
			{"closed", func(c net.Conn) error {
				c.Close()
				_, err := c.Read(make([]byte, 1))
				return err
			}},
			{"deadline after close", func(c net.Conn) error {
				c.Close()
				return c.SetReadDeadline(time.Now())
			}},
			{"closed twice", func(c net.Conn) error {
				c.Close()
				return c.Close()
			}},
			{"write side closed after close", func(c net.Conn) error {
				c.Close()
				return c.(interface{ CloseWrite() error }).CloseWrite()
			}},
		} {
			for _, mode := range []struct {
				name string
				pair func(*testing.T, string) (*Conn, net.Conn)
			}{{"", pair}, {"/unpolled and repolled", cycled}} {
				t.Run(network+"/"+tc.name+mode.name, func(t *testing.T) {
					c, _ := mode.pair(t, network)
					plain, _ := testenv.SocketPair(t, network)
					// The same addresses, for the same text.
					want := strings.ReplaceAll(tc.do(plain).Error(), plain.LocalAddr().String(), c.LocalAddr().String())
					want = strings.ReplaceAll(want, plain.RemoteAddr().String(), c.RemoteAddr().String())
					if got := tc.do(c).Error(); got != want {
						t.Errorf("error %q, net's %q", got, want)
					}
				})
			}
		}
	}
}

// Out of Go's poller, a socket is read and written without waits; one
// that has to wait calls the hook, which puts it back, and then waits
// with the deadlines asked for meanwhile; one whose hook does not fails.
func TestUnpolled(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network+"/no waits", func(t *testing.T) {
			c, peer := pair(t, network)
			if err := c.Unpoll(); err != nil {
				t.Fatal(err)
			}
			if _, err := c.ReadNoWait(make([]byte, 4)); err != ErrWouldBlock {
				t.Fatalf("ReadNoWait on nothing: %v", err)
			}
			peer.Write([]byte("ping"))
			buf := make([]byte, 4)
			deadline := time.Now().Add(10 * time.Second)
			n, err := c.ReadNoWait(buf)
			for err == ErrWouldBlock && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
				n, err = c.ReadNoWait(buf)
			}
			if err != nil || string(buf[:n]) != "ping" {
				t.Fatalf("ReadNoWait %q, %v", buf[:n], err)
			}
			if n, err := c.WriteNoWait([]byte("pong")); n != 4 || err != nil {
				t.Fatalf("WriteNoWait %d, %v", n, err)
			}
			if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "pong" {
				t.Fatalf("peer read %q, %v", buf, err)
			}
			// Without a hook that puts it back, a read that waits does.
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("a read past its deadline, no hook: %v", err)
			}
			c.SetReadDeadline(time.Time{})
			if err := c.Unpoll(); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if b, err := io.ReadAll(peer); err != nil || len(b) != 0 {
				t.Fatalf("peer after CloseWrite: %q, %v", b, err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := c.ReadNoWait(buf); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("ReadNoWait after Close: %v", err)
			}
			if _, err := c.Write(buf); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Write after Close: %v", err)
			}
		})
		t.Run(network+"/deadlines hold", func(t *testing.T) {
			c, peer := pair(t, network)
			if err := c.Unpoll(); err != nil {
				t.Fatal(err)
			}
			peer.Write([]byte("unread"))
			time.Sleep(10 * time.Millisecond)
			// Past its deadline, a read fails with bytes to read, as
			// net's does (a lingering close counts on it).
			c.SetDeadline(time.Unix(1, 0))
			if _, err := c.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read past its deadline: %v", err)
			}
			if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("write past its deadline: %v", err)
			}
			c.SetDeadline(time.Time{})
			buf := make([]byte, 6)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "unread" {
				t.Fatalf("read %q, %v", buf, err)
			}
		})
		t.Run(network+"/a wait attaches", func(t *testing.T) {
			c, peer := pair(t, network)
			hooked := 0
			c.SetWaitHook(func() {
				hooked++
				if err := c.Repoll(); err != nil {
					t.Error(err)
				}
			})
			if err := c.Unpoll(); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) || hooked != 1 {
				t.Fatalf("read past a deadline set while unpolled: %v (hook called %d times)", err, hooked)
			}
			c.SetReadDeadline(time.Time{})
			if err := c.Unpoll(); err != nil {
				t.Fatal(err)
			}
			go func() {
				time.Sleep(20 * time.Millisecond)
				peer.Write([]byte("late"))
			}()
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "late" {
				t.Fatalf("read %q, %v", buf, err)
			}
			// A write larger than the socket's buffers, begun unpolled.
			if err := c.Unpoll(); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, 8<<20)
			for i := range want {
				want[i] = byte(i * 7)
			}
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(io.LimitReader(peer, int64(len(want))))
				got <- b
			}()
			if n, err := c.Write(want); n != len(want) || err != nil {
				t.Fatalf("wrote %d of %d: %v", n, len(want), err)
			}
			if !bytes.Equal(<-got, want) {
				t.Fatal("the peer read other bytes than were written")
			}
		})
	}
}
