//go:build !linux

package idle

import "errors"

type poller struct{}

func start(*Poller) (*poller, error) {
	return nil, errors.New("parking idle connections needs Linux (epoll)")
}
func (*poller) add(int, uint64) error             { return nil }
func (*poller) remove(int)                        {}
func (*poller) wait(r []uint64) ([]uint64, error) { return r, ErrClosed }
func (*poller) interrupt()                        {}
func (*poller) close() error                      { return nil }
