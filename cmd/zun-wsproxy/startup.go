package main

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"syscall"
)

// startUp reads the signals while the proxy starts. SIGINT or SIGTERM
// cancels ctx, which the steps that can wait (the store's migration) take;
// a SIGHUP is kept for when the proxy is ready, as what it would reload is
// only now being read for the first time.
type startUp struct {
	ctx    context.Context
	cancel context.CancelFunc
	quit   chan struct{}
	once   sync.Once
	done   chan struct{} // closed when watch returns; then the fields below are final

	hup  bool      // a SIGHUP came
	stop os.Signal // the SIGINT or SIGTERM that came, if any
}

func watchStartUp(signals <-chan os.Signal) *startUp {
	ctx, cancel := context.WithCancel(context.Background())
	s := &startUp{ctx: ctx, cancel: cancel, quit: make(chan struct{}), done: make(chan struct{})}
	go s.watch(signals)
	return s
}

func (s *startUp) watch(signals <-chan os.Signal) {
	defer close(s.done)
	for {
		select {
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				s.hup = true
				continue
			}
			s.stop = sig
			s.cancel()
			return
		case <-s.quit:
			return
		}
	}
}

// finish ends the watch (the caller reads the signals from now on) and
// reports whether a SIGHUP came and which signal, if any, stopped start-up.
func (s *startUp) finish() (hup bool, stop os.Signal) {
	s.once.Do(func() { close(s.quit) })
	<-s.done
	s.cancel() // start-up's steps are over
	return s.hup, s.stop
}

// stoppedStarting is serve's clean end when a signal stops start-up.
func stoppedStarting(log *slog.Logger, sig os.Signal) error {
	log.Info("stopped during start-up", "signal", sig.String())
	return nil
}
