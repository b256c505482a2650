package server

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// peekFirst returns the first byte waiting on a socket without taking it
// (recv with MSG_PEEK), waiting with the read deadline: TLS then reads its
// ClientHello from the socket itself, and plain HTTP its request line. ok
// is false when c is no socket; the caller reads the byte instead.
func peekFirst(c net.Conn) (first byte, ok bool, err error) {
	sc, isSocket := c.(syscall.Conn)
	if !isSocket {
		return 0, false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	var b [1]byte
	var n uintptr
	var errno syscall.Errno
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, _, errno = syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, syscall.MSG_PEEK, 0, 0)
			switch errno {
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				return true
			}
		}
	})
	switch {
	case err != nil:
		return 0, true, err
	case errno != 0:
		return 0, true, os.NewSyscallError("recvfrom", errno)
	case n == 0:
		return 0, true, io.EOF
	}
	return b[0], true, nil
}
