package rawsock

import (
	"net/netip"
	"os"
	"syscall"
	"unsafe"
)

// StartConnect is a net.Dialer Control function (for a Dialer with no
// LocalAddr: it runs before net would bind one). Over TCP it makes the
// connect system call itself, raw: on loopback the call does the whole
// handshake inside it (it answers EINPROGRESS all the same: the handshake
// is done as it returns), and as one of Go's it would have the scheduler
// take the processor away meanwhile (see the package comment). net's own
// connect, which follows, then finds the socket connected (0: no wait in
// the poller, no goroutine for the context) or still connecting
// (EALREADY: it waits as usual), or fails as the connection did
// (ECONNREFUSED); it expects all of them. The address it builds must be
// the one net connects to: net takes a socket connected elsewhere as its
// own. An address it cannot read is left to net, and so is every Unix
// socket: its connect looks the path up in the file system, which may
// block (NFS, FUSE), and a raw call that blocks holds its processor,
// stopping the whole process at the next collection.
func StartConnect(network, address string, c syscall.RawConn) error {
	var sa [syscall.SizeofSockaddrAny]byte
	n := sockaddr(network, address, &sa)
	if n == 0 {
		return nil
	}
	var errno syscall.Errno
	if err := c.Control(func(fd uintptr) {
		_, _, errno = syscall.RawSyscall(syscall.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&sa[0])), n)
	}); err != nil {
		return nil
	}
	switch errno {
	case 0, syscall.EINPROGRESS, syscall.EALREADY, syscall.EINTR:
		// Connected, or net's connect takes it from here.
		return nil
	default:
		return os.NewSyscallError("connect", errno)
	}
}

// sockaddr writes address's socket address for network (TCP) into sa and
// returns its length; 0 if it is not a literal one this knows.
func sockaddr(network, address string, sa *[syscall.SizeofSockaddrAny]byte) uintptr {
	switch network {
	case "tcp", "tcp4", "tcp6":
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return 0
		}
		port := ap.Port()
		if a := ap.Addr(); a.Is4() || (a.Is4In6() && network != "tcp6") {
			s := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
			s.Family = syscall.AF_INET
			p := (*[2]byte)(unsafe.Pointer(&s.Port)) // network byte order
			p[0], p[1] = byte(port>>8), byte(port)
			s.Addr = a.Unmap().As4()
			return syscall.SizeofSockaddrInet4
		} else if a.Is6() && a.Zone() == "" && network != "tcp4" {
			s := (*syscall.RawSockaddrInet6)(unsafe.Pointer(sa))
			s.Family = syscall.AF_INET6
			p := (*[2]byte)(unsafe.Pointer(&s.Port)) // network byte order
			p[0], p[1] = byte(port>>8), byte(port)
			s.Addr = a.As16()
			return syscall.SizeofSockaddrInet6
		}
	}
	return 0
}
