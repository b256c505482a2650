package rawsock

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

var connectCases = []struct {
	network, listenNet, listen string
	family                     int
}{
	{"tcp", "tcp", "127.0.0.1:0", syscall.AF_INET},
	{"tcp4", "tcp4", "127.0.0.1:0", syscall.AF_INET},
	{"tcp", "tcp", "[::1]:0", syscall.AF_INET6},
	{"tcp6", "tcp6", "[::1]:0", syscall.AF_INET6},
	{"unix", "unix", "s.sock", syscall.AF_UNIX},
}

func listen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), addr)
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestStartConnect has StartConnect connect a bare socket: the listener
// must take the connection, and the socket's peer must be the listener;
// a Unix socket it leaves to net, unconnected.
func TestStartConnect(t *testing.T) {
	for _, tc := range connectCases {
		t.Run(tc.network+" "+tc.listen, func(t *testing.T) {
			ln := listen(t, tc.listenNet, tc.listen)
			fd, err := syscall.Socket(tc.family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			f := os.NewFile(uintptr(fd), "socket")
			defer f.Close()
			rc, err := f.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			if err := StartConnect(tc.network, ln.Addr().String(), rc); err != nil {
				t.Fatal(err)
			}
			if tc.network == "unix" {
				if _, err := syscall.Getpeername(fd); err != syscall.ENOTCONN {
					t.Fatalf("a Unix socket's connect is net's to make: after StartConnect getpeername says %v, want ENOTCONN", err)
				}
				return
			}
			ln.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(5 * time.Second))
			peer, err := ln.Accept()
			if err != nil {
				t.Fatalf("listener took no connection: %v", err)
			}
			defer peer.Close()
			sa, err := syscall.Getpeername(fd)
			if err != nil {
				t.Fatalf("socket not connected: %v", err)
			}
			if got, want := sockaddrString(sa), ln.Addr().String(); got != want {
				t.Fatalf("socket connected to %s, want %s", got, want)
			}
		})
	}
}

func sockaddrString(sa syscall.Sockaddr) string {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *syscall.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *syscall.SockaddrUnix:
		return a.Name
	}
	return "?"
}

// TestDialerWithStartConnect: net takes a socket StartConnect connected
// (or left connecting) as its own, and a refused connect reads as net's
// own error.
func TestDialerWithStartConnect(t *testing.T) {
	for _, tc := range connectCases {
		t.Run(tc.network+" "+tc.listen, func(t *testing.T) {
			ln := listen(t, tc.listenNet, tc.listen)
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err == nil {
					accepted <- c
				}
				close(accepted)
			}()
			d := net.Dialer{Timeout: 5 * time.Second, Control: StartConnect}
			c, err := d.DialContext(context.Background(), tc.network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			peer := <-accepted
			if peer == nil {
				t.Fatal("listener accepted nothing")
			}
			defer peer.Close()
			if c.RemoteAddr().String() != ln.Addr().String() {
				t.Fatalf("remote address %v, listener %v", c.RemoteAddr(), ln.Addr())
			}
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "hello" {
				t.Fatalf("listener read %q, %v", buf, err)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		d := net.Dialer{Timeout: 5 * time.Second, Control: StartConnect}
		_, err = d.Dial("tcp", addr)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial of a closed port: %v, want connection refused", err)
		}
		if want := "dial tcp " + addr + ": connect: connection refused"; err.Error() != want {
			t.Fatalf("error %q, want net's own %q", err, want)
		}
	})
}

// TestDialContextWraps checks that the database driver's connections are
// raw and still expose their socket (the driver checks liveness on it).
func TestDialContextWraps(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, ok := c.(*Conn)
	if !ok {
		t.Fatalf("DialContext returned a %T", c)
	}
	raw, err := rc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd uintptr
	if err := raw.Control(func(f uintptr) { fd = f }); err != nil || fd == 0 {
		t.Fatalf("SyscallConn reaches no socket: fd %d, %v", fd, err)
	}
}

// An abstract Unix socket's name may be given with its leading NUL as well
// as with '@': net dials both, with StartConnect as its Control.
func TestDialerWithStartConnectAbstract(t *testing.T) {
	name := "zun-wsproxy-test-" + strconv.Itoa(os.Getpid()) + "-" + t.Name()
	ln, err := net.Listen("unix", "@"+name)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, addr := range []string{"@" + name, "\x00" + name} {
		d := net.Dialer{Timeout: 5 * time.Second, Control: StartConnect}
		c, err := d.Dial("unix", addr)
		if err != nil {
			t.Fatalf("dial %q: %v", addr, err)
		}
		c.Close()
		peer, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		peer.Close()
	}
}

// The socket addresses StartConnect builds are the kernel's: port and
// address in the network's byte order, whatever the host's is.
func TestSockaddrBytes(t *testing.T) {
	for _, tc := range []struct {
		network, address string
		port             []byte
		addrAt           int // sin_addr's offset, sin6_addr's
		addr             []byte
	}{
		{"tcp4", "127.0.0.1:2375", []byte{0x09, 0x47}, 4, []byte{127, 0, 0, 1}},
		{"tcp6", "[::1]:2376", []byte{0x09, 0x48}, 8, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
	} {
		var sa [syscall.SizeofSockaddrAny]byte
		if sockaddr(tc.network, tc.address, &sa) == 0 {
			t.Fatalf("%s %s: no socket address", tc.network, tc.address)
		}
		if got := sa[2:4]; string(got) != string(tc.port) {
			t.Errorf("%s %s: port bytes % x, want % x", tc.network, tc.address, got, tc.port)
		}
		if got := sa[tc.addrAt : tc.addrAt+len(tc.addr)]; string(got) != string(tc.addr) {
			t.Errorf("%s %s: address bytes % x, want % x", tc.network, tc.address, got, tc.addr)
		}
	}
}
