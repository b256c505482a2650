package proxy

import "testing"

// Every change of state is refused but those of the table in state.go,
// and a refused one leaves the state as it was.
func TestStateTransitions(t *testing.T) {
	all := []state{admission, running, parked, closing, closed}
	legal := map[[2]state]bool{
		{admission, running}: true, // Start, on pump goroutines
		{admission, parked}:  true, // Start, on an event loop
		{running, parked}:    true, // the last pump goroutine parks
		{parked, running}:    true, // a direction wakes
		{running, closing}:   true, // an end is found
		{parked, closing}:    true, // an end is found while parked
		{closing, closed}:    true, // finished: done is called
	}
	for _, from := range all {
		for _, to := range all {
			st := from
			ok := st.to(to)
			if ok != legal[[2]state{from, to}] {
				t.Errorf("%v → %v: allowed %v, want %v", from, to, ok, !ok)
			}
			if want := map[bool]state{true: to, false: from}[ok]; st != want {
				t.Errorf("%v → %v (allowed %v): state %v, want %v", from, to, ok, st, want)
			}
		}
	}
	// Beyond the table.
	st := closed
	if st.to(state(9)) || st != closed || state(9).String() != "state(9)" {
		t.Errorf("an unknown state was accepted, or named %q", state(9))
	}
	st = state(9)
	if st.to(running) {
		t.Error("an unknown state changed to running")
	}
}

// Only closing and closed are ending.
func TestStateEnding(t *testing.T) {
	for _, c := range []struct {
		st     state
		ending bool
	}{{admission, false}, {running, false}, {parked, false}, {closing, true}, {closed, true}} {
		if got := c.st.ending(); got != c.ending {
			t.Errorf("%v.ending() = %v, want %v", c.st, got, c.ending)
		}
	}
}

// state returns the session's state.
func (h *harness) state() state {
	h.sess.mu.Lock()
	defer h.sess.mu.Unlock()
	return h.sess.st
}
