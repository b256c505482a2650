//go:build !linux

package loop

import "errors"

type poller struct{}

const wakeID = 0

func start() (*poller, error)                     { return nil, errors.New("event loops need Linux (epoll)") }
func (*poller) add(int, uint64) error             { return nil }
func (*poller) remove(int)                        {}
func (*poller) wait(r []uint64) ([]uint64, error) { return r, ErrClosed }
func (*poller) interrupt()                        {}
func (*poller) drain()                            {}
func (*poller) stop()                             {}
func (*poller) close() error                      { return nil }
