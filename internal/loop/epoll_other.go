//go:build !linux

package loop

import "errors"

type poller struct{}

const wakeID = 0

func start() (*poller, error) { return nil, errors.New("event loops need Linux (epoll)") }

type event struct {
	id uint64
	ev Events
}

func (*poller) add(int, uint64, Events) error            { return nil }
func (*poller) modify(int, uint64, Events, Events) error { return nil }
func (*poller) remove(int)                               {}
func (*poller) wait(r []event) ([]event, bool, error)    { return r, false, ErrClosed }
func (*poller) interrupt()                               {}
func (*poller) drain()                                   {}
func (*poller) stop()                                    {}
func (*poller) close() error                             { return nil }
func (*poller) closeGate() error                         { return nil }
