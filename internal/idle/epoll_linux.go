package idle

import (
	"fmt"
	"syscall"
)

// poller is the epoll instance behind a Poller. A pipe wakes its wait for
// Close.
type poller struct {
	epfd         int
	wakeR, wakeW int
	events       [128]syscall.EpollEvent
}

// stopID is the epoll data of the pipe that interrupts wait.
const stopID = 0

func start(*Poller) (*poller, error) {
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
	if err := p.ctl(syscall.EPOLL_CTL_ADD, p.wakeR, syscall.EPOLLIN, stopID); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *poller) ctl(op, fd int, events uint32, id uint64) error {
	ev := syscall.EpollEvent{Events: events}
	// The event's data is 8 bytes, split by package syscall into Fd and Pad.
	ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
	if err := syscall.EpollCtl(p.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// add watches fd once (level-triggered, one shot): readable, peer hung up,
// or an error.
func (p *poller) add(fd int, id uint64) error {
	return p.ctl(syscall.EPOLL_CTL_ADD, fd, syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLONESHOT, id)
}

func (p *poller) remove(fd int) {
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
}

// wait blocks until sockets are ready and appends their ids to ready.
func (p *poller) wait(ready []uint64) ([]uint64, error) {
	for {
		n, err := syscall.EpollWait(p.epfd, p.events[:], -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return ready, fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range p.events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == stopID {
				return ready, ErrClosed
			}
			ready = append(ready, id)
		}
		if len(ready) > 0 {
			return ready, nil
		}
	}
}

func (p *poller) interrupt() { syscall.Write(p.wakeW, []byte{0}) }

func (p *poller) close() error {
	syscall.Close(p.wakeR)
	syscall.Close(p.wakeW)
	return syscall.Close(p.epfd)
}
