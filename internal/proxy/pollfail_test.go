package proxy

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/idle"
	"github.com/zun-wsproxy/zun-wsproxy/internal/loop"
)

// failingPoller parks like idle.Poller and, once failed, does what a
// failed idle.Poller does: it wakes everything parked (nothing is
// readable) and refuses to park more.
type failingPoller struct {
	mu      sync.Mutex
	failed  bool
	next    int
	parked  map[int]func()
	parks   chan struct{} // one per park
	refused chan struct{} // one per Wait refused
}

func (p *failingPoller) Wait(_ syscall.RawConn, wake func()) (func() bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed {
		p.refused <- struct{}{}
		return nil, fmt.Errorf("%w: epoll_wait: bad file descriptor", idle.ErrFailed)
	}
	p.next++
	id := p.next
	p.parked[id] = wake
	p.parks <- struct{}{}
	return func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		_, ok := p.parked[id]
		delete(p.parked, id)
		return ok
	}, nil
}

func (p *failingPoller) fail() {
	p.mu.Lock()
	p.failed = true
	parked := p.parked
	p.parked = nil
	p.mu.Unlock()
	for _, wake := range parked {
		go wake()
	}
}

// Sessions parked on a poller that fails wake up, keep their goroutines
// from then on and relay both ways.
func TestParkedSessionOutlivesPollerFailure(t *testing.T) {
	for _, framed := range []bool{true, false} {
		name := map[bool]string{true: "attach", false: "exec"}[framed]
		t.Run(name, func(t *testing.T) {
			p := &failingPoller{parked: map[int]func(){}, parks: make(chan struct{}, 16), refused: make(chan struct{}, 16)}
			// The goroutine engine's parking, whatever -engine says.
			h := start(t, framed, Options{Poller: p, IdleAfter: 20 * time.Millisecond, Loop: noLoop{}})
			for _, ch := range []chan struct{}{p.parks, p.parks} {
				select {
				case <-ch:
				case <-time.After(settle):
					t.Fatal("directions did not park")
				}
			}
			p.fail()
			// Woken with nothing to read, each direction idles again and
			// tries to park; refused, it keeps its goroutine.
			for _, ch := range []chan struct{}{p.refused, p.refused} {
				select {
				case <-ch:
				case <-time.After(settle):
					t.Fatal("woken directions did not try to park again")
				}
			}
			waitPumps(t, 2, "the poller failed")
			for i := 0; i < 3; i++ {
				h.bothWays(t)
			}
		})
	}
}

// noLoop is a Loop that takes no session: sessions given it run on the
// goroutine engine.
type noLoop struct{}

func (noLoop) Add(syscall.RawConn, func(loop.Events)) (*loop.Reg, error) {
	return nil, errors.New("sessions run on goroutines here")
}
func (noLoop) Post(fn func()) { fn() }
func (noLoop) Handoff()       {}
func (noLoop) Behind() bool   { return false }
