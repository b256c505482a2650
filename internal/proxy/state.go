package proxy

import "strconv"

// A session's lifetime is one state machine. Its state (life.st, guarded
// by the Session's mu) changes only through to, which refuses a change
// the table below does not list, and each change is made in one place:
//
//	state      what it holds                       left by
//	admission  its two connections, not yet served Start: → running (pump goroutines)
//	                                               or → parked (served by its event loop)
//	running    one or two pump goroutines          the last one parks: → parked
//	                                               an end is found: → closing
//	parked     no goroutine: its directions wait   a direction wakes (Poller, or
//	           on the Poller or on its loop        the loop hands it over): → running
//	                                               an end is found: → closing
//	closing    the one finisher (finish)           both connections closed and
//	                                               every goroutine ended: → closed
//	closed     nothing                             (final)
//
// Admission begins in the server, which admits a request (a session slot,
// a recording) before the WebSocket handshake is answered and makes the
// Session (New) once it is; the server's session (internal/server) holds
// what it admitted and releases all of it once, when its Session reaches
// closed (the done callback), or itself when the request ends before a
// Session exists.
//
// The move to closing is how one finisher is chosen: whoever sees the end
// first (a pump, the heartbeat timer, Stop or the context) makes it, and
// everyone else is refused. It also takes parked directions off the
// Poller. The finisher then sets the closing deadlines (each connection's
// deadlines have one owner, deadlines.go), sends the close frames, waits
// for the pumps, closes both connections and calls done, once.
//
// Whether the session's sockets are served on an event loop or by pump
// goroutines (engine.go) is its mode, not its state: running and parked
// hold in both.
type state uint8

const (
	admission state = iota
	running
	parked
	closing
	closed
)

var stateNames = [...]string{"admission", "running", "parked", "closing", "closed"}

func (st state) String() string {
	if int(st) < len(stateNames) {
		return stateNames[st]
	}
	return "state(" + strconv.Itoa(int(st)) + ")"
}

// transitions lists, for each state, the states it may change to (a bit
// per state).
var transitions = [...]uint8{
	admission: 1<<running | 1<<parked,
	running:   1<<parked | 1<<closing,
	parked:    1<<running | 1<<closing,
	closing:   1 << closed,
	closed:    0,
}

// to changes the state to next and reports true, or reports false and
// leaves it if the change is not a transition of the table.
func (st *state) to(next state) bool {
	if int(*st) >= len(transitions) || transitions[*st]&(1<<next) == 0 {
		return false
	}
	*st = next
	return true
}

// ending reports whether the session is closing or closed.
func (st state) ending() bool { return st >= closing }
