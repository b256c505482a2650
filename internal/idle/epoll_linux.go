package idle

import (
	"fmt"
	"syscall"

	"github.com/zun-wsproxy/zun-wsproxy/internal/epoll"
)

// poller is the epoll instance behind a Poller; its wake pipe interrupts
// wait for Close.
type poller struct{ ep *epoll.Epoll }

func start(*Poller) (*poller, error) {
	ep, err := epoll.New()
	if err != nil {
		return nil, err
	}
	return &poller{ep: ep}, nil
}

// add watches fd once (level-triggered, one shot): readable, peer hung up,
// or an error.
func (p *poller) add(fd int, id uint64) error {
	return p.ep.Ctl(syscall.EPOLL_CTL_ADD, fd, syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLONESHOT, id)
}

func (p *poller) remove(fd int) { p.ep.Remove(fd) }

// wait blocks until sockets are ready and appends their ids to ready.
func (p *poller) wait(ready []uint64) ([]uint64, error) {
	for {
		n, err := syscall.EpollWait(p.ep.FD, p.ep.Events[:], -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return ready, fmt.Errorf("epoll_wait: %w", err)
		}
		for i := range p.ep.Events[:n] {
			id := epoll.ID(&p.ep.Events[i])
			if id == epoll.WakeID {
				return ready, ErrClosed
			}
			ready = append(ready, id)
		}
		if len(ready) > 0 {
			return ready, nil
		}
	}
}

func (p *poller) interrupt() { p.ep.Interrupt() }

func (p *poller) close() error { return p.ep.Close() }
