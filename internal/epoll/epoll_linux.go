package epoll

import (
	"fmt"
	"syscall"
	"unsafe"
)

// WakeID is the id of the pipe's events.
const WakeID = 0

// Epoll is an epoll instance and its wake pipe.
type Epoll struct {
	FD           int
	wakeR, wakeW int
	// Events is the buffer of the instance's one waiting goroutine.
	Events [128]syscall.EpollEvent
}

// New creates an epoll instance (close-on-exec) watching its wake pipe.
func New() (*Epoll, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	e := &Epoll{FD: epfd, wakeR: fds[0], wakeW: fds[1]}
	if err := e.Ctl(syscall.EPOLL_CTL_ADD, e.wakeR, syscall.EPOLLIN, WakeID); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Ctl adds (op EPOLL_CTL_ADD) or changes (EPOLL_CTL_MOD) what fd is
// watched for; its events carry id.
func (e *Epoll) Ctl(op, fd int, events uint32, id uint64) error {
	ev := syscall.EpollEvent{Events: events}
	// The event's data is 8 bytes, split by package syscall into Fd and Pad.
	ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
	if err := syscall.EpollCtl(e.FD, op, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// Ready fills Events with what is ready now, without waiting, and
// returns how many. It is a raw system call: one that cannot block need
// not tell Go's scheduler, and telling it wakes the runtime's monitor
// thread whenever that sleeps (on a proxy idle between keystrokes, a
// thread woken and put back to sleep per readiness).
func (e *Epoll) Ready() (int, error) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(e.FD),
		uintptr(unsafe.Pointer(&e.Events[0])), uintptr(len(e.Events)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// Remove stops watching fd.
func (e *Epoll) Remove(fd int) { syscall.EpollCtl(e.FD, syscall.EPOLL_CTL_DEL, fd, nil) }

// ID is the id an event carries.
func ID(ev *syscall.EpollEvent) uint64 { return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32 }

// Interrupt makes the wake pipe readable.
func (e *Epoll) Interrupt() { syscall.Write(e.wakeW, []byte{0}) }

// Drain empties the wake pipe.
func (e *Epoll) Drain() {
	var b [64]byte
	for {
		if n, _ := syscall.Read(e.wakeR, b[:]); n < len(b) {
			return
		}
	}
}

// CloseWake closes the wake pipe, leaving the epoll descriptor to its
// owner.
func (e *Epoll) CloseWake() {
	syscall.Close(e.wakeR)
	syscall.Close(e.wakeW)
}

// Close closes the wake pipe and the epoll descriptor.
func (e *Epoll) Close() error {
	e.CloseWake()
	return syscall.Close(e.FD)
}
