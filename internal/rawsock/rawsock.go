// Package rawsock reads and writes sockets without entering the Go
// scheduler's "in a system call" state.
//
// Go's socket reads and writes tell the scheduler a system call is under
// way, so that a blocked one can hand its processor to another thread.
// Socket file descriptors are non-blocking: a read or write never blocks
// (it answers EAGAIN, and the goroutine then waits in the netpoller as
// usual), but on loopback a 64 KiB one takes longer than the 20 µs after
// which the runtime's monitor thread takes the processor away. Under bulk
// load the monitor then wakes every 20 µs and moves processors between
// threads at nearly every message (strace: one 20 µs nanosleep per
// message relayed). Raw system calls leave the processor where it is.
package rawsock

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Conn is a socket whose Read and Write make raw system calls. Deadlines,
// Close and the rest are the wrapped connection's.
type Conn struct {
	net.Conn
	rc syscall.RawConn
	// wait, when set, is called before a read or write waits in the
	// netpoller (internal/loop hands the loop off there).
	wait func()
}

// SyscallConn returns the wrapped socket's, so that code looking for the
// socket (a liveness check, a poller) still finds it.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// CloseWrite shuts the socket's writing side down (net/http half-closes
// before it lets go of a connection with input left unread).
func (c *Conn) CloseWrite() error {
	return c.Conn.(interface{ CloseWrite() error }).CloseWrite()
}

// SetWaitHook has f called each time a read or write is about to wait for
// the socket, before it waits. It must be set before the Conn is used.
func (c *Conn) SetWaitHook(f func()) { c.wait = f }

// ErrWouldBlock: ReadNoWait found nothing to read.
var ErrWouldBlock = errors.New("rawsock: nothing to read now")

// ReadNoWait reads what the socket has, without waiting and whatever its
// read deadline: ErrWouldBlock if it has nothing.
func (c *Conn) ReadNoWait(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	o := noWaitOps.Get().(*op)
	o.p = p
	err := c.rc.Control(o.ctl)
	n, errno := o.done()
	noWaitOps.Put(o)
	if errno == syscall.EAGAIN {
		return 0, ErrWouldBlock
	}
	return c.readDone(n, err, errno)
}

// WriteNoWait writes what the socket's buffer takes of p, without
// waiting and whatever its write deadline: ErrWouldBlock, with how much
// was written, if it did not take all of p.
func (c *Conn) WriteNoWait(p []byte) (int, error) {
	beforeWrite()
	o := noWaitOps.Get().(*op)
	o.p = p
	err := c.rc.Control(o.wctl)
	n, errno := o.done()
	noWaitOps.Put(o)
	if errno == syscall.EAGAIN {
		return n, ErrWouldBlock
	}
	return n, c.failed("write", err, errno)
}

// Wrap returns c with raw reads and writes if it is a TCP or Unix socket,
// else c itself (TLS, pipes).
func Wrap(c net.Conn) net.Conn {
	var sc syscall.Conn
	switch t := c.(type) {
	case *net.TCPConn:
		sc = t
	case *net.UnixConn:
		sc = t
	default:
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil || !supported {
		return c
	}
	return &Conn{Conn: c, rc: rc}
}

// Read reads what the socket has, waiting in the netpoller (with the read
// deadline) while it has nothing.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	o := readOps.Get().(*op)
	o.p, o.wait = p, c.wait
	err := c.rc.Read(o.step)
	n, errno := o.done()
	readOps.Put(o)
	return c.readDone(n, err, errno)
}

// readDone returns a read's result: its error (failed's), io.EOF for a
// read of nothing, else the n bytes read.
func (c *Conn) readDone(n int, err error, errno syscall.Errno) (int, error) {
	if err := c.failed("read", err, errno); err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	afterRead()
	return n, nil
}

// Write writes all of p, waiting in the netpoller (with the write
// deadline) whenever the socket's buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
	beforeWrite()
	o := writeOps.Get().(*op)
	o.p, o.wait = p, c.wait
	err := c.rc.Write(o.step)
	n, errno := o.done()
	writeOps.Put(o)
	return n, c.failed("write", err, errno)
}

// op is one Read or Write in progress: the function the RawConn calls
// and what it found. Ops are pooled, function made once, so that a call
// allocates nothing and an idle connection holds no op.
type op struct {
	step  func(fd uintptr) bool
	ctl   func(fd uintptr) // ReadNoWait's
	wctl  func(fd uintptr) // WriteNoWait's
	p     []byte
	n     int
	errno syscall.Errno
	wait  func() // the Conn's wait hook
}

var (
	readOps   = sync.Pool{New: func() any { o := new(op); o.step = o.read; return o }}
	writeOps  = sync.Pool{New: func() any { o := new(op); o.step = o.write; return o }}
	noWaitOps = sync.Pool{New: func() any { o := new(op); o.ctl, o.wctl = o.readNoWait, o.writeNoWait; return o }}
)

// read makes one read; false (EAGAIN) has the RawConn wait for input.
func (o *op) read(fd uintptr) bool {
	for {
		n, e := rawRead(fd, o.p)
		switch e {
		case syscall.EINTR:
		case syscall.EAGAIN:
			if o.wait != nil {
				o.wait()
			}
			return false
		default:
			o.n, o.errno = n, e
			return true
		}
	}
}

// readNoWait makes one read, whatever it finds (EAGAIN included).
func (o *op) readNoWait(fd uintptr) {
	for {
		o.n, o.errno = rawRead(fd, o.p)
		if o.errno != syscall.EINTR {
			return
		}
	}
}

// writeNoWait writes until all is written, EAGAIN or an error.
func (o *op) writeNoWait(fd uintptr) {
	for o.n < len(o.p) {
		n, e := rawWrite(fd, o.p[o.n:])
		switch e {
		case 0:
			o.n += n
		case syscall.EINTR:
		default:
			o.errno = e
			return
		}
	}
}

// write writes until all is written or an error; false (EAGAIN) has the
// RawConn wait for room.
func (o *op) write(fd uintptr) bool {
	for o.n < len(o.p) {
		n, e := rawWrite(fd, o.p[o.n:])
		switch e {
		case 0:
			o.n += n
		case syscall.EINTR:
		case syscall.EAGAIN:
			if o.wait != nil {
				o.wait()
			}
			return false
		default:
			o.errno = e
			return true
		}
	}
	return true
}

// done returns the op's result and clears it for the pool (it must not
// keep the caller's buffer).
func (o *op) done() (int, syscall.Errno) {
	n, errno := o.n, o.errno
	*o = op{step: o.step, ctl: o.ctl, wctl: o.wctl}
	return n, errno
}

// failed returns the error of a read or write, shaped as net's own socket
// errors are: err from the RawConn (closed, deadline), else the system
// call's errno; nil if neither.
func (c *Conn) failed(op string, err error, errno syscall.Errno) error {
	if err == nil && errno == 0 {
		return nil
	}
	if err == nil {
		err = os.NewSyscallError(op, errno)
	} else if oe, ok := err.(*net.OpError); ok {
		err = oe.Err // the RawConn's ("raw-read"), which would name the socket twice
	}
	network := "tcp"
	if _, ok := c.Conn.(*net.UnixConn); ok {
		network = "unix"
	}
	return &net.OpError{Op: op, Net: network, Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// DialContext dials as a zero net.Dialer does (TCP keepalives on), its
// connect made by StartConnect, and wraps what it opens: for a client
// library's own connections, such as a database driver's.
func DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Control: StartConnect}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}
