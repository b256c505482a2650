package loop

import (
	"fmt"
	"sync/atomic"
	"syscall"
)

// poller is the epoll instance behind a Loop; a pipe interrupts its wait
// for posted functions and Close.
type poller struct {
	epfd         int
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
		p.close()
		return nil, err
	}
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
	for {
		if p.stopped.Load() {
			return ready, ErrClosed
		}
		n, err := syscall.EpollWait(p.epfd, p.events[:], -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return ready, fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range p.events[:n] {
			ready = append(ready, uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32)
		}
		if len(ready) > 0 {
			return ready, nil
		}
	}
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
	return syscall.Close(p.epfd)
}
