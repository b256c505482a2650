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
	"sync/atomic"
	"syscall"
	"time"
)

// Conn is a socket whose Read and Write make raw system calls. Deadlines,
// Close and the rest are the wrapped connection's, or, once the socket has
// been out of Go's network poller (Unpoll), those of the *os.File that
// Repoll made for it.
type Conn struct {
	// The wrapped connection: its addresses stay, but after Unpoll it is
	// closed (the socket lives on in fd, then in h): unwrap nothing from
	// a Conn that may have been unpolled.
	net.Conn
	rc syscall.RawConn // the handle's (unpolledRawConn while unpolled)
	// wait, when set, is called before a read or write waits in the
	// netpoller (internal/loop hands the loop off there).
	wait func()

	// fd is the socket's descriptor while it is out of Go's poller
	// (Unpoll), else -1: then h holds it.
	fd atomic.Int32
	// closed: Close was called.
	closed atomic.Bool
	// repollErr: the last Repoll could not register the socket (it then
	// cannot wait).
	repollErr atomic.Pointer[error]
	mu        sync.Mutex // guards h and rc changes, the deadlines and closing
	h         handle
	// The deadlines last asked for, given to the next handle (Repoll),
	// and as sinceBase's nanoseconds (0: none) for unpolled reads and
	// writes.
	rdl, wdl     time.Time
	rdlNs, wdlNs atomic.Int64
	dyn          dynRawConn
}

// clockBase is when deadlines are counted from, on the monotonic clock
// (as net's are: a wall clock that jumps moves no deadline).
var clockBase = time.Now()

// sinceBase is t for rdlNs and wdlNs: nanoseconds from clockBase, at least
// 1 (one in the past is past), or 0 for none.
func sinceBase(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(int64(t.Sub(clockBase)), 1)
}

// expired reports whether deadline ns (0: none) has passed.
func expired(ns *atomic.Int64) bool {
	d := ns.Load()
	return d != 0 && int64(time.Since(clockBase)) >= d
}

// handle is what holds the socket in Go's poller: the wrapped net.Conn,
// then the *os.File of each Repoll.
type handle interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
	Close() error
}

// SyscallConn returns the socket's, so that code looking for the socket (a
// liveness check, a poller) still finds it, unpolled or not.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return &c.dyn, nil }

// CloseWrite shuts the socket's writing side down (net/http half-closes
// before it lets go of a connection with input left unread).
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return c.failed("close", net.ErrClosed, 0)
	}
	if fd := c.fd.Load(); fd >= 0 {
		return c.failed("close", nil, errnoOf(syscall.Shutdown(int(fd), syscall.SHUT_WR)))
	}
	if cw, ok := c.h.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	var err error
	if cerr := c.rc.Control(func(fd uintptr) { err = syscall.Shutdown(int(fd), syscall.SHUT_WR) }); cerr != nil {
		return c.failed("close", cerr, 0)
	}
	return c.failed("close", nil, errnoOf(err))
}

// Close closes the socket. While unpolled it must not race a read or
// write (the descriptor number could be reused under it).
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Swap(true) {
		return c.failed("close", net.ErrClosed, 0)
	}
	if fd := c.fd.Load(); fd >= 0 {
		c.h, c.rc = closedHandle{}, closedHandle{}
		c.fd.Store(-1)
		return c.failed("close", nil, errnoOf(syscall.Close(int(fd))))
	}
	if err := c.h.Close(); err != nil {
		if pe, ok := err.(*os.PathError); ok {
			// An *os.File's, as net words it (failed would take it for
			// a use after Close, as closed is set).
			return &net.OpError{Op: "close", Net: c.network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: pe.Err}
		}
		return err
	}
	return nil
}

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline, as a net.Conn's (while unpolled,
// for reads, and for the handle Repoll makes).
func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(&c.rdl, &c.rdlNs, t, handle.SetReadDeadline)
}

// SetWriteDeadline sets the write deadline, as SetReadDeadline the read one.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(&c.wdl, &c.wdlNs, t, handle.SetWriteDeadline)
}

func (c *Conn) setDeadline(at *time.Time, ns *atomic.Int64, t time.Time, set func(handle, time.Time) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	*at = t
	ns.Store(sinceBase(t))
	if c.fd.Load() >= 0 {
		return nil
	}
	return c.setFailed(set(c.h, t))
}

// setFailed returns a deadline's error as net words it: an *os.File's
// (after Repoll) names the file, not the connection.
func (c *Conn) setFailed(err error) error {
	if err == nil || !c.closed.Load() {
		return err
	}
	if _, ok := err.(*net.OpError); ok {
		return err
	}
	return &net.OpError{Op: "set", Net: c.network(), Addr: c.LocalAddr(), Err: net.ErrClosed}
}

// Unpoll takes the socket out of Go's network poller, until Repoll. A
// socket in it wakes the thread that idles in the poller each time it
// becomes ready, whether or not a goroutine waits for it; an event loop
// that serves the socket from its own epoll set, while that thread idles
// on the other processor, would have it woken (and preempt the loop) once
// every few reads, for nothing. Go has no call that takes a descriptor
// out of its poller but closing it, so the socket is kept open on a
// duplicate of its descriptor, and the poller's is closed.
//
// Nothing else may use the Conn (no read, write or wait under way) while
// Unpoll or Repoll runs. While unpolled, reads and writes make their
// system calls directly; a Read or Write that has to wait calls the wait
// hook (the event loop's: it takes the session off the loop) and Repolls
// (unless the hook did), so that a session that ends, closing its sockets
// without waiting, never puts them back in the poller. Deadlines hold as
// on a net.Conn: a Read or Write past its deadline fails (ReadNoWait and
// WriteNoWait, as always, go by none), and they are kept for Repoll.
func (c *Conn) Unpoll() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() || c.fd.Load() >= 0 {
		return nil
	}
	nfd, errno := -1, syscall.Errno(0)
	if err := c.rc.Control(func(fd uintptr) { nfd, errno = dupCloexec(fd) }); err != nil {
		return c.failed("unpoll", err, 0)
	}
	if errno != 0 {
		return c.failed("dup", nil, errno)
	}
	// The poller lets go; the socket stays open on nfd. (Close waits for
	// I/O under way on the handle: there must be none, see above.)
	c.h.Close()
	c.h, c.rc = nil, unpolledRawConn{}
	c.fd.Store(int32(nfd))
	c.repollErr.Store(nil)
	return nil
}

// Repoll puts an unpolled socket back in Go's poller, with the deadlines
// asked for meanwhile.
func (c *Conn) Repoll() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	fd := c.fd.Load()
	if fd < 0 {
		return nil
	}
	// Non-blocking, so os.NewFile registers it with the poller.
	f := os.NewFile(uintptr(fd), "socket")
	rc, _ := f.SyscallConn() // fails only for a nil file
	c.h, c.rc = f, rc
	c.fd.Store(-1)
	c.repollErr.Store(nil)
	// Deadlines take only in the poller: one that does not take says the
	// registration failed (epoll_ctl: ENOMEM, ENOSPC at max_user_watches).
	// The socket can then not wait: reads and writes that would, fail
	// with errRepoll.
	if err := f.SetReadDeadline(c.rdl); err != nil {
		c.repollErr.Store(&err)
		return c.failed("repoll", errRepoll, 0)
	}
	f.SetWriteDeadline(c.wdl)
	return nil
}

// errRepoll: a socket could not go back into Go's poller, and cannot wait.
var errRepoll = errors.New("socket could not return to the network poller")

// errUnpolled: the socket's RawConn was asked to wait (Read, Write) while
// the socket was out of Go's poller.
var errUnpolled = errors.New("socket is out of the network poller")

// dynRawConn is a Conn's socket as a syscall.RawConn, unpolled or not.
type dynRawConn struct{ c *Conn }

func (d *dynRawConn) Control(f func(fd uintptr)) error {
	c := d.c
	c.mu.Lock()
	if fd := c.fd.Load(); fd >= 0 {
		defer c.mu.Unlock()
		f(uintptr(fd))
		return nil
	}
	rc := c.rc
	c.mu.Unlock()
	return rc.Control(f)
}

// Read and Write wait in Go's poller: unpolled, rc (unpolledRawConn)
// refuses.
func (d *dynRawConn) Read(f func(fd uintptr) bool) error  { return d.c.rc.Read(f) }
func (d *dynRawConn) Write(f func(fd uintptr) bool) error { return d.c.rc.Write(f) }

// unpolledRawConn is an unpolled Conn's rc: nothing is to use it (reads
// and writes go to fd), but a use fails rather than panics.
type unpolledRawConn struct{}

func (unpolledRawConn) Control(func(uintptr)) error    { return errUnpolled }
func (unpolledRawConn) Read(func(uintptr) bool) error  { return errUnpolled }
func (unpolledRawConn) Write(func(uintptr) bool) error { return errUnpolled }

// closedHandle is a closed Conn's handle: everything fails.
type closedHandle struct{}

func (closedHandle) SetReadDeadline(time.Time) error  { return net.ErrClosed }
func (closedHandle) SetWriteDeadline(time.Time) error { return net.ErrClosed }
func (closedHandle) Close() error                     { return net.ErrClosed }
func (closedHandle) Control(func(uintptr)) error      { return net.ErrClosed }
func (closedHandle) Read(func(uintptr) bool) error    { return net.ErrClosed }
func (closedHandle) Write(func(uintptr) bool) error   { return net.ErrClosed }

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	return syscall.EIO
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
	if fd := c.fd.Load(); fd >= 0 {
		n, errno := readOnce(uintptr(fd), p)
		if errno == syscall.EAGAIN {
			return 0, ErrWouldBlock
		}
		return c.readDone(n, nil, errno)
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
	if fd := c.fd.Load(); fd >= 0 {
		n, errno := writeAll(uintptr(fd), p)
		if errno == syscall.EAGAIN {
			return n, ErrWouldBlock
		}
		return n, c.failed("write", nil, errno)
	}
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
	w := &Conn{Conn: c, rc: rc, h: c.(handle)}
	w.fd.Store(-1)
	w.dyn.c = w
	return w
}

// Read reads what the socket has, waiting in the netpoller (with the read
// deadline) while it has nothing.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	wait := c.wait
	if fd := c.fd.Load(); fd >= 0 {
		if expired(&c.rdlNs) {
			return 0, c.failed("read", os.ErrDeadlineExceeded, 0)
		}
		n, errno := readOnce(uintptr(fd), p)
		if errno != syscall.EAGAIN {
			return c.readDone(n, nil, errno)
		}
		if wait != nil {
			wait()
			wait = nil // told once per wait
		}
		if c.Repoll() != nil {
			return 0, c.failed("read", errRepoll, 0)
		}
	}
	o := readOps.Get().(*op)
	o.p, o.wait = p, wait
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
	done, wait := 0, c.wait
	if fd := c.fd.Load(); fd >= 0 {
		if expired(&c.wdlNs) {
			return 0, c.failed("write", os.ErrDeadlineExceeded, 0)
		}
		n, errno := writeAll(uintptr(fd), p)
		if errno != syscall.EAGAIN {
			return n, c.failed("write", nil, errno)
		}
		if wait != nil {
			wait()
			wait = nil // told once per wait
		}
		if c.Repoll() != nil {
			return n, c.failed("write", errRepoll, 0)
		}
		done = n
	}
	o := writeOps.Get().(*op)
	o.p, o.wait = p[done:], wait
	err := c.rc.Write(o.step)
	n, errno := o.done()
	writeOps.Put(o)
	return done + n, c.failed("write", err, errno)
}

// readOnce makes one read, retried if interrupted.
func readOnce(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, e := rawRead(fd, p)
		if e != syscall.EINTR {
			return n, e
		}
	}
}

// writeAll writes until all of p is written, EAGAIN or an error.
func writeAll(fd uintptr, p []byte) (int, syscall.Errno) {
	done := 0
	for done < len(p) {
		n, e := rawWrite(fd, p[done:])
		switch e {
		case 0:
			done += n
		case syscall.EINTR:
		default:
			return done, e
		}
	}
	return done, 0
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
func (o *op) readNoWait(fd uintptr) { o.n, o.errno = readOnce(fd, o.p) }

// writeNoWait writes until all is written, EAGAIN or an error.
func (o *op) writeNoWait(fd uintptr) { o.n, o.errno = writeAll(fd, o.p) }

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
	} else if c.repollErr.Load() != nil && !c.closed.Load() && err != errRepoll {
		err = errRepoll // the wait's own error ("not pollable") says less
	} else if err != net.ErrClosed && err != errUnpolled && c.closed.Load() {
		err = net.ErrClosed // an *os.File's "use of closed file", as net says it
	} else if oe, ok := err.(*net.OpError); ok {
		err = oe.Err // the RawConn's ("raw-read"), which would name the socket twice
	}
	return &net.OpError{Op: op, Net: c.network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

func (c *Conn) network() string {
	if _, ok := c.Conn.(*net.UnixConn); ok {
		return "unix"
	}
	return "tcp"
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
