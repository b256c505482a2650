package loop

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
)

// poller is the epoll instance behind a Loop; a pipe interrupts its wait
// for posted functions and Close.
//
// The loop never blocks in epoll_wait: it asks with a zero timeout, and
// when nothing is ready it waits for the epoll descriptor itself to become
// readable in Go's network poller (ep, an *os.File on it). A goroutine
// blocked in epoll_wait would hold its processor in a system call until
// the scheduler took it back (up to a sysmon tick later, 20 µs to 10 ms),
// so every loop idle in epoll_wait took a processor from the handshakes,
// dials and lookups that run on goroutines.
type poller struct {
	epfd         int
	ep           *os.File
	rc           syscall.RawConn
	wakeR, wakeW int
	stopped      atomic.Bool
	events       [128]syscall.EpollEvent
}

// wakeID is the epoll data of the pipe.
const wakeID = 0

func start() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	p := &poller{epfd: epfd, wakeR: fds[0], wakeW: fds[1]}
	if err := p.ctl(syscall.EPOLL_CTL_ADD, p.wakeR, syscall.EPOLLIN, wakeID); err != nil {
		syscall.Close(epfd)
		syscall.Close(p.wakeR)
		syscall.Close(p.wakeW)
		return nil, err
	}
	// Non-blocking, so that os.NewFile registers it with Go's poller.
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		syscall.Close(p.wakeR)
		syscall.Close(p.wakeW)
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	p.ep = os.NewFile(uintptr(epfd), "epoll")
	rc, err := p.ep.SyscallConn()
	if err != nil {
		p.close()
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	p.rc = rc
	return p, nil
}

func (p *poller) ctl(op, fd int, events uint32, id uint64) error {
	ev := syscall.EpollEvent{Events: events}
	ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
	if err := syscall.EpollCtl(p.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// add watches fd, level-triggered: readable, peer hung up, or an error.
func (p *poller) add(fd int, id uint64) error {
	return p.ctl(syscall.EPOLL_CTL_ADD, fd, syscall.EPOLLIN|syscall.EPOLLRDHUP, id)
}

func (p *poller) remove(fd int) { syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil) }

// wait blocks until sockets are ready and appends their ids to ready.
func (p *poller) wait(ready []uint64) ([]uint64, error) {
	var werr error
	err := p.rc.Read(func(fd uintptr) bool {
		if p.stopped.Load() {
			werr = ErrClosed
			return true
		}
		n, err := syscall.EpollWait(int(fd), p.events[:], 0)
		if err == syscall.EINTR || n == 0 {
			return false // wait in Go's poller for the descriptor to be readable
		}
		if err != nil {
			werr = fmt.Errorf("epoll_wait: %w", err)
			return true
		}
		for _, ev := range p.events[:n] {
			ready = append(ready, uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32)
		}
		return true
	})
	if err != nil {
		return ready, fmt.Errorf("epoll_wait: %w", err)
	}
	return ready, werr
}

func (p *poller) interrupt() { syscall.Write(p.wakeW, []byte{0}) }

func (p *poller) drain() {
	var b [64]byte
	for {
		if n, _ := syscall.Read(p.wakeR, b[:]); n < len(b) {
			return
		}
	}
}

func (p *poller) stop() {
	p.stopped.Store(true)
	p.interrupt()
}

func (p *poller) close() error {
	syscall.Close(p.wakeR)
	syscall.Close(p.wakeW)
	return p.ep.Close()
}
