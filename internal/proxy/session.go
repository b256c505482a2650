// Package proxy runs console sessions: it pumps a client's WebSocket to a
// container's console stream and back, with bounded buffers and no
// allocation per message, and closes both sides with a close code that says
// why the session ended.
//
// A session waiting between frames parks (run.go) and costs only its
// memory. A peer that stops inside a frame is not parked but ended, once
// FrameTimeout (header_timeout) passes without a byte of the frame: the
// client with 1008 "frame stalled for …", Docker as a lost connection.
// Parking there would keep the pump's state half-way through a frame
// (a chunk read in part, the base64 carry, a control payload) and could
// not help a TLS client, whose reads cannot be waited on from outside; a
// console's frames are keystrokes and pastes that arrive whole within
// milliseconds, so a frame that makes no progress for seconds is a client
// gone or hostile, and ending it bounds what it holds (a goroutine and a
// 64 KiB buffer) to that time.
package proxy

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/rawsock"
	"github.com/zun-wsproxy/zun-wsproxy/internal/utf8tail"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
	"github.com/zun-wsproxy/zun-wsproxy/internal/workers"
)

// Encoding is how the proxy frames container output for the client, chosen
// by the subprotocol the client offered.
type Encoding int

const (
	// Binary sends container output as binary messages (subprotocol
	// "binary", or none).
	Binary Encoding = iota
	// Base64 sends container output as text messages carrying base64, and
	// decodes the client's text messages from base64 (subprotocol "base64"
	// of old websockify clients).
	Base64
)

// Options tune a session.
type Options struct {
	Encoding Encoding
	// CloseTimeout bounds each step of closing: writing a close frame and
	// waiting for the peer's reply. Default 1s.
	CloseTimeout time.Duration
	// MaxMessage bounds a client frame's payload (0: unbounded); a longer
	// one closes the session with 1009.
	MaxMessage int64
	// Resize, when set, makes client text messages control messages (see
	// ParseControl) instead of keystrokes: the web console's subprotocol.
	// Keystrokes then travel in binary messages only. It is called off
	// the client's read path, one call at a time, with the last size asked
	// (sizes asked during a call come down to one); ctx ends with the
	// session, which ends once the call has returned.
	Resize func(ctx context.Context, rows, cols int) error
	// Heartbeat pings Docker's attach socket (and the client, with
	// PingClient) this often; a side that answers nothing for two intervals
	// is declared dead. 0: off.
	Heartbeat time.Duration
	// PingClient includes the client in heartbeats. Off for Zun's CLI:
	// websocket-client, after answering a ping inside recv(), blocks there
	// until a data message arrives, so the CLI would stop sending
	// keystrokes; such clients are watched by TCP keepalive instead.
	PingClient bool
	// IdleTimeout ends a session with no data either way for this long;
	// MaxDuration ends any session this old. 0: off.
	IdleTimeout, MaxDuration time.Duration
	// WriteTimeout disconnects a client that does not take output for this
	// long (backpressure stops the container meanwhile). 0: off.
	WriteTimeout time.Duration
	// FrameTimeout ends a session whose peer stops inside a frame: once a
	// frame has begun, its bytes must keep coming, none of them more than
	// FrameTimeout after the one before (give or take IdleAfter). The
	// client is closed with 1008. 0: off.
	FrameTimeout time.Duration
	// Clock is the time heartbeats, idle_timeout and max_session_duration
	// go by (nil: the system's); connections' deadlines are the system's
	// always.
	Clock Clock
	// CheckInterval is how often heartbeats and timeouts are looked at.
	// Default: twice per heartbeat, and often enough to honour each
	// timeout within a quarter of its length, but for them no more than
	// once a second.
	CheckInterval time.Duration
	// Poller, when set, parks a direction of the session that has had
	// nothing to read for IdleAfter (default 1s): its goroutine ends and
	// the Poller starts a new one when the socket becomes readable, so an
	// idle session holds no goroutine. Only plain sockets park (not TLS).
	// IdleAfter is also how often a frame's progress is looked at.
	Poller    Poller
	IdleAfter time.Duration
	// Loop, with a Poller, serves the session's plain sockets on an event
	// loop instead of pump goroutines (engine.go). Sessions with a Tap or
	// a TLS side run on goroutines.
	Loop Loop
	// FirstOutput, when set, is called once, when the first container
	// output has been written to the client.
	FirstOutput func()
	// Tap, when set, sees the session's data as it is forwarded (session
	// recording). Its methods run on the pump goroutines and must not
	// block for long: they delay the session.
	Tap Tap
	// Workers runs the end of a session served on a loop (nil: a
	// goroutine of its own).
	Workers *workers.Pool
}

// Poller calls wake, in a new goroutine, once the socket behind rc is
// readable; cancel undoes that and reports whether wake will not be called.
type Poller interface {
	Wait(rc syscall.RawConn, wake func()) (cancel func() bool, err error)
}

// Clock tells a session the time and runs its checks later; tests give
// one they move by hand.
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a function a Clock will run: time.Timer's Reset and Stop.
type Timer interface {
	Reset(d time.Duration) bool
	Stop() bool
}

type systemClock struct{}

func (systemClock) Now() time.Time                            { return time.Now() }
func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Why a session ended, as a small fixed set (for metrics labels).
const (
	EndContainerExited = "container_exited" // attach: Docker closed with 1000
	EndExecEnded       = "exec_ended"       // exec: the stream ended
	EndContainerClosed = "container_closed" // Docker closed with another code
	EndContainerLost   = "container_lost"   // the container side failed
	EndClientClosed    = "client_closed"    // the client sent a close frame
	EndClientProtocol  = "client_protocol"  // the client broke the protocol
	EndClientGone      = "client_gone"      // the client vanished or stopped reading
	EndClientStalled   = "client_stalled"   // the client stopped inside a frame
	EndClientNoPong    = "client_no_pong"   // the client missed heartbeats
	EndIdleTimeout     = "idle_timeout"     // idle_timeout
	EndMaxDuration     = "max_duration"     // max_session_duration
	EndShutdown        = "shutdown"         // the proxy is stopping
	EndLoopFailed      = "loop_failed"      // the session's event loop failed
)

// Tap observes a session's data. The slices are only valid during the
// call. Each method is called before the data goes on; an error ends the
// session instead, and the data is not forwarded: the client is closed
// with the Code and Reason of a *TapError (1011 and "internal error"
// for any other error).
type Tap interface {
	// Output is container output, as sent to the client.
	Output(p []byte) error
	// Input is what the client typed, as sent to the container.
	Input(p []byte) error
	// Resize is a terminal size change asked by the client.
	Resize(rows, cols int) error
}

// TapError is how a Tap ends a session.
type TapError struct {
	Code   int    // close code for the client
	Reason string // close reason for the client (at most 123 bytes)
	End    string // the Result's End
	Err    error  // the cause, in the Result's Reason
}

func (e *TapError) Error() string {
	if e.Err == nil {
		return e.Reason
	}
	return e.Reason + ": " + e.Err.Error()
}
func (e *TapError) Unwrap() error { return e.Err }

// EndTap: a Tap failed with an error that is not a *TapError.
const EndTap = "tap_failed"

// tapError is a Tap's error as a *TapError.
func tapError(err error) *TapError {
	var te *TapError
	if !errors.As(err, &te) {
		te = &TapError{Code: websocket.CloseInternalError, Reason: "internal error", End: EndTap, Err: err}
	}
	return te
}

// endFor is how a direction ends after err on side, or as a Tap asked.
func endFor(sd side, err error) end {
	var te *TapError
	if errors.As(err, &te) {
		return end{side: proxySide, why: te.Reason, end: te.End, code: te.Code, err: te.Err}
	}
	return end{side: sd, err: err}
}

// Result tells how a session went.
type Result struct {
	Reason      string // why it ended, for logs
	End         string // why it ended, one of the End* values (metrics)
	ClientCode  int    // close code sent to the client; 0 if none was sent
	ToContainer int64  // payload bytes forwarded from the client
	ToClient    int64  // payload bytes forwarded from the container
}

const (
	// room is the space kept in front of every payload: a frame header
	// (up to 14 bytes) and up to 3 held-back bytes of a UTF-8 character.
	room = websocket.MaxHeaderLen + 3
	// chunk is the most payload read and forwarded at once in bulk.
	chunk = 64 << 10
	// smallChunk is read into an inline array while traffic is
	// interactive, so idle and keystroke-sized sessions hold no pooled
	// buffer.
	smallChunk = 512
)

var smallPool = sync.Pool{New: func() any { return new([room + smallChunk]byte) }}

// bufPool holds bulk buffers: room, a chunk, room for the reader to read
// the next frame's header along with a frame's last chunk, and the slack
// that bulkAt takes.
var bufPool = sync.Pool{New: func() any { b := make([]byte, readAlign+room+chunk+websocket.ReadAhead); return &b }}

// readAlign is what a bulk read's first byte is aligned to. The kernel's
// copy to a destination that is not a multiple of 16 took up to 2.3 times
// the CPU of an aligned one on this project's machines (AMD EPYC, `rep
// movsb`, cache-hot data), and a frame's payload read at room past its
// header lands 3 or 7 bytes past a boundary: aligned, the echo row's CPU
// per MiB read went down by 5-10 % in same-round runs.
const readAlign = 64

// bulkAt returns the part of a bulk buffer a chunk is laid out in: room
// first, then the payload, placed so that the read which follows the pre
// bytes the reader already holds (copied to the payload's start) begins on
// a readAlign boundary.
func bulkAt(bp *[]byte, pre int) []byte {
	b := *bp
	at := uintptr(unsafe.Pointer(unsafe.SliceData(b))) + uintptr(room+pre)
	return b[(readAlign-int(at%readAlign))%readAlign:]
}

// b64Pool holds buffers for base64-encoded (or -decoded) chunks.
var b64Pool = sync.Pool{New: func() any {
	b := make([]byte, room+base64.StdEncoding.EncodedLen(chunk+3))
	return &b
}}

// Session is one console connection: a client WebSocket and a container
// stream. It owns both connections and closes them when it ends.
type Session struct {
	client    net.Conn
	clientDL  deadlines // the client's deadlines
	clientIn  idleConn  // the client, as its reader reads it
	clientR   *websocket.Reader
	clientW   *websocket.Writer
	backend   net.Conn
	backendDL deadlines
	backendIn idleConn
	backendIO io.Writer         // backend, as the pump writes to it (backendOut)
	backendR  *websocket.Reader // attach only
	backendW  *websocket.Writer // attach only
	// execBulk: the exec stream's last read filled the small buffer, so
	// output is streaming and the next read takes a chunk. Kept across
	// the pump's returns: on the loop it reads once per readiness.
	execBulk bool
	pending  []byte // exec only: stream bytes read during the handshake
	opts     Options

	toContainer, toClient atomic.Int64
	// Unix nanoseconds of the last frame from each side and of the last
	// data either way, for heartbeats and idle_timeout.
	clientSeen, backendSeen, dataSeen atomic.Int64
	clientLive, backendLive           liveness // owned by check
	// clientClosed: the client's close frame has been read, so it sends
	// no more data frames (RFC 6455 section 5.5.1) and its connection may
	// be closed without lingering (finish).
	clientClosed atomic.Bool

	// Every write to each socket (engine.go).
	clientOut, backendOut sink

	// The two directions: fromClient pumps client messages to the
	// container, fromContainer container output to the client.
	fromClient, fromContainer direction
	// resize applies the web console's resizes; nil without Resize.
	resize *resizer

	life // start, park, wake and finish (run.go)

	// Owned by the fromContainer pump until it ends, then by finish.
	held  [3]byte // start of a UTF-8 character awaiting its next bytes
	nheld int
	// small carries interactive output; pooled while the pump runs, so a
	// parked session holds none.
	small *[room + smallChunk]byte

	// Owned by the fromClient pump; kept here across parks.
	carry        [3]byte // base64 characters awaiting a full quantum
	ncarry       int
	inMessage    bool             // inside a fragmented client message
	midFin       bool             // on the loop, parked inside a frame: its FIN bit
	midOp        websocket.Opcode // and the opcode its next bytes go with
	decode       bool             // that message is base64 text
	messageBytes int64
}

// New makes a session from a client connection that completed its
// WebSocket handshake (with clientBuffered read past it) and an open
// container stream. The session owns both connections from now on.
func New(client net.Conn, clientBuffered []byte, backend console.Stream, opts Options) *Session {
	if opts.CloseTimeout <= 0 {
		opts.CloseTimeout = time.Second
	}
	if opts.Clock == nil {
		opts.Clock = systemClock{}
	}
	if opts.IdleAfter <= 0 {
		opts.IdleAfter = time.Second
	}
	// The pumps read and write through rawsock: their system calls never
	// block, so the scheduler need not treat them as blocking ones.
	// From here on the session uses the sockets only through them (the loop
	// engine takes them out of Go's poller while it serves them).
	clientIO, backendIO := rawsock.Wrap(client), rawsock.Wrap(backend.Conn)
	s := &Session{
		client:    clientIO,
		clientDL:  deadlines{conn: clientIO},
		backend:   backendIO,
		backendDL: deadlines{conn: backendIO},
		opts:      opts,
	}
	s.clientOut.init(s, clientSide, clientIO, &s.clientDL)
	s.backendOut.init(s, containerSide, backendIO, &s.backendDL)
	s.clientW = websocket.NewWriter(&s.clientOut, false)
	s.backendIO = &s.backendOut
	s.fromClient.out, s.fromContainer.out = &s.backendOut, &s.clientOut
	s.fromClient.init(s, clientSide, clientIO, &s.clientIn, &s.clientDL, s.pumpClient)
	s.fromContainer.init(s, containerSide, backendIO, &s.backendIn, &s.backendDL, s.pumpContainer)
	s.clientR = websocket.NewReader(&s.clientIn, websocket.ReaderOptions{FromClient: true, Buffered: clientBuffered, MaxPayload: opts.MaxMessage})
	s.fromClient.r = s.clientR
	if opts.Resize != nil {
		s.resize = &resizer{apply: opts.Resize}
	}
	s.useLoop(clientIO, backendIO)
	// Writes move deadlines through their owner, which closing overrides.
	s.clientW.SetTimeout(&s.clientOut, opts.WriteTimeout)
	s.clientOut.timeout = opts.WriteTimeout
	if backend.Framed {
		s.backendR = websocket.NewReader(&s.backendIn, websocket.ReaderOptions{Buffered: backend.Buffered})
		s.fromContainer.r = s.backendR
		s.backendW = websocket.NewWriter(&s.backendOut, true)
		var bound time.Duration
		if opts.Heartbeat > 0 {
			// Writes must not hang on a frozen Docker connection longer
			// than the heartbeat takes to find it.
			bound = 2 * opts.Heartbeat
		}
		s.backendW.SetTimeout(&s.backendOut, bound)
		s.backendOut.timeout = bound
	} else {
		s.pending = backend.Buffered
		// An exec stream has no frames: every read waits at a boundary.
		s.fromContainer.boundary = true
	}
	return s
}

// side names who ended a pump.
type side int

const (
	clientSide side = iota
	containerSide
	proxySide
)

// errNoPong: a peer answered nothing for two heartbeat intervals.
var errNoPong = errors.New("no answer to pings for two heartbeat intervals")

// end is how one direction of the pump stopped.
type end struct {
	why  string // proxySide: why the proxy ends the session
	end  string // proxySide with why: its End* value
	side side
	// closed: the peer ended the stream in an orderly way (a close frame,
	// or the end of an exec stream); code is its close code.
	closed bool
	code   int
	err    error
	// park: the direction had nothing to read for IdleAfter, at a point
	// where all its state is in the Session; it may wait on the Poller.
	park bool
}

// checkInterval is how often the session looks at heartbeats and
// timeouts (0: never): CheckInterval, or often enough to honour each
// timeout within a quarter of its length but no more than once a second
// (looking more often buys nothing), and twice per heartbeat (a silent
// peer is found within two and a half heartbeats, however short).
func (s *Session) checkInterval() time.Duration {
	o := s.opts
	var every time.Duration
	shorter := func(d time.Duration) {
		if d > 0 && (every == 0 || d < every) {
			every = d
		}
	}
	for _, d := range []time.Duration{o.IdleTimeout / 4, o.MaxDuration / 4} {
		if d > 0 {
			shorter(max(d, time.Second))
		}
	}
	shorter(o.Heartbeat / 2)
	if every > 0 && o.CheckInterval > 0 {
		every = o.CheckInterval
	}
	return every
}

// check applies the timeouts and heartbeats at now; it reports an end
// when the session must stop.
func (s *Session) check(now, start time.Time) (end, bool) {
	o := s.opts
	switch {
	case o.MaxDuration > 0 && now.Sub(start) >= o.MaxDuration:
		return end{side: proxySide, why: "session reached max_session_duration", end: EndMaxDuration}, true
	case o.IdleTimeout > 0 && now.Sub(time.Unix(0, s.dataSeen.Load())) >= o.IdleTimeout:
		return end{side: proxySide, why: "session idle for idle_timeout", end: EndIdleTimeout}, true
	}
	if o.Heartbeat <= 0 {
		return end{}, false
	}
	if o.PingClient && s.clientLive.silent(s.clientSeen.Load(), now, 2*o.Heartbeat) {
		return end{side: clientSide, err: errNoPong}, true
	}
	// Docker's answers wait in its socket while the proxy, busy writing
	// output to a slow client, is not reading it: that is not its silence.
	if s.backendW != nil && s.backendLive.silent(max(s.backendSeen.Load(), s.clientLive.busyAt), now, 2*o.Heartbeat) {
		return end{side: containerSide, err: fmt.Errorf("docker attach socket: %w", errNoPong)}, true
	}
	// A ping that would wait behind a write in progress is skipped (that
	// write has bounds of its own, and a side whose write does not move
	// is let go above), and one the peer does not take within a check
	// interval is given up: the checks go on, whatever a peer does.
	if o.PingClient {
		s.clientLive.pinged(s.clientW.TryWriteControl(websocket.OpPing, nil, s.every), taken(s.client, &s.toClient), now)
	}
	if s.backendW != nil {
		s.backendLive.pinged(s.backendW.TryWriteControl(websocket.OpPing, nil, s.every), taken(s.backend, &s.toContainer), now)
	}
	return end{}, false
}

// taken is how far the peer of c has taken what the proxy wrote to it:
// the bytes it acknowledged, on TCP, which move while a long write waits;
// else the payload bytes of the messages written to it (relayed).
func taken(c net.Conn, relayed *atomic.Int64) int64 {
	if n, ok := bytesAcked(c); ok {
		return n
	}
	return relayed.Load()
}

// liveness is what the checks know of a side beyond its answers: how far
// it had taken the proxy's bytes at the last check (taken), and when a
// check last had to skip its ping while it went on taking output (Unix
// nanoseconds).
type liveness struct{ took, busyAt int64 }

// pinged notes a check's ping to the side, sent or skipped, and the bytes
// the side has taken. A ping skipped behind a write that moves on is not
// the side's silence: a slow client busy taking a flood of output may get
// no ping for two intervals. A ping sent that it leaves unanswered is,
// however much its socket's buffer still takes.
func (l *liveness) pinged(sent bool, took int64, now time.Time) {
	if !sent && took != l.took {
		l.busyAt = now.UnixNano()
	}
	l.took = took
}

// silent reports whether the side has neither answered (seen: Unix
// nanoseconds of its last frame) nor been busy taking output for longer
// than d.
func (l *liveness) silent(seen int64, now time.Time, d time.Duration) bool {
	return now.Sub(time.Unix(0, max(seen, l.busyAt))) > d
}

// closeBoth sends each side the close it should see after first, and
// unblocks the pump goroutines still running. Connections stay open until
// Run closes them.
func (s *Session) closeBoth(first end) Result {
	var res Result
	clientCode, clientReason := 0, ""
	backendCode := websocket.CloseNormal
	waitForClient := false
	switch first.side {
	case containerSide:
		switch {
		case first.closed && s.backendR == nil:
			res.Reason, clientCode, clientReason = "exec process ended", websocket.CloseNormal, "exec session ended"
			res.End = EndExecEnded
		case first.closed && first.code == websocket.CloseNormal:
			res.Reason, clientCode, clientReason = "container exited", websocket.CloseNormal, "container exited"
			res.End = EndContainerExited
		case first.closed:
			res.Reason = "container closed the console with code " + strconv.Itoa(first.code)
			res.End = EndContainerClosed
			clientCode, clientReason = first.code, "container closed the console"
			if !websocket.CloseCodeSendable(first.code) {
				clientCode = websocket.CloseNormal
			}
			backendCode = clientCode
		default:
			res.Reason = "container connection lost: " + first.err.Error()
			res.End = EndContainerLost
			clientCode, clientReason = websocket.CloseInternalError, "lost connection to the container"
		}
		waitForClient = true
	case clientSide:
		var pe *websocket.ProtocolError
		switch {
		case first.closed:
			res.Reason = "client closed (code " + strconv.Itoa(first.code) + ")"
			res.End = EndClientClosed
			// Echo the client's code, as RFC 6455 section 5.5.1 suggests.
			clientCode = first.code
			if !websocket.CloseCodeSendable(clientCode) {
				clientCode = websocket.CloseNormal
			}
		case errors.As(first.err, &pe):
			res.Reason = "client protocol error: " + pe.Reason
			res.End = EndClientProtocol
			clientCode, clientReason = pe.Code, pe.Reason
		case errors.Is(first.err, errStalled):
			res.Reason = "client stalled: " + first.err.Error()
			res.End = EndClientStalled
			clientCode = websocket.ClosePolicyViolation
			clientReason = fmt.Sprintf("frame stalled for %v", s.opts.FrameTimeout)
		case errors.Is(first.err, errNoPong):
			// Perhaps only half gone: tell it, in case it still listens.
			res.Reason = "client disconnected: " + first.err.Error()
			res.End = EndClientNoPong
			clientCode, clientReason = websocket.CloseGoingAway, "no answer to pings"
		default:
			res.Reason = "client disconnected: " + first.err.Error()
			res.End = EndClientGone
		}
		backendCode = websocket.CloseGoingAway
	case proxySide:
		res.Reason, clientReason, res.End = "proxy shutting down", "proxy shutting down", EndShutdown
		if first.why != "" {
			res.Reason, clientReason, res.End = first.why, first.why, first.end
		}
		if first.err != nil { // a Tap's
			res.Reason += ": " + first.err.Error()
		}
		clientCode = websocket.CloseGoingAway
		if first.code != 0 {
			clientCode = first.code
		}
		backendCode = websocket.CloseGoingAway
		waitForClient = true
	}

	// The closing deadlines, first: from now on no read or write on either
	// side, under way or to come, waits longer than closing allows.
	now := time.Now()
	// Nothing more is wanted from the container side, and Docker's attach
	// endpoint is told we are leaving, unless it is gone.
	tellDocker := s.backendW != nil && !(first.side == containerSide && !first.closed)
	backendWrite := now
	if tellDocker {
		backendWrite = now.Add(s.opts.CloseTimeout)
	}
	s.backendDL.end(now, backendWrite)
	// A close frame to the client may take its time: when the container
	// side ended, the client is not at fault, and a frame being written to
	// it must not be cut (that would corrupt the stream before the close
	// frame), as long as it reads. Then the client has a moment to answer
	// (its reader goroutine returns when the answer, or anything fatal,
	// arrives).
	clientRead, clientWrite := now, now
	if clientCode != 0 {
		bound := s.opts.CloseTimeout
		if first.side == containerSide {
			bound = max(bound, s.opts.WriteTimeout)
			if s.opts.WriteTimeout <= 0 {
				bound = 10 * s.opts.CloseTimeout
			}
		}
		clientWrite = now.Add(bound)
	}
	if waitForClient {
		clientRead = now.Add(s.opts.CloseTimeout)
	}
	s.clientDL.end(clientRead, clientWrite)

	if tellDocker {
		s.backendW.WriteClose(backendCode, "")
		now := time.Now()
		s.backendDL.end(now, now)
	}
	if first.side == containerSide && first.closed {
		// Deliver the last bytes even if they end inside a character.
		s.flushHeld()
	}
	if clientCode != 0 && s.clientW.WriteClose(clientCode, clientReason) == nil {
		res.ClientCode = clientCode
	}
	return res
}

// pumpClient forwards client messages to the container until the client
// closes or fails, the container side fails, or it is time to park.
func (s *Session) pumpClient() end {
	for {
		if d := &s.fromClient; d.mid {
			// On the loop: the rest of a frame whose bytes were late.
			d.mid = false
			h := websocket.Header{Fin: s.midFin, Op: s.midOp, Length: s.clientR.Remaining()}
			if e, ok := s.forwardClientFrame(h, s.decode); !ok {
				return e
			}
			continue
		}
		h, err := s.fromClient.nextFrame(s.clientR)
		if err != nil {
			return s.fromClient.ended(err)
		}
		s.clientSeen.Store(s.opts.Clock.Now().UnixNano())
		switch h.Op {
		case websocket.OpPing:
			rerr, werr := answerPing(s.clientR, s.clientW)
			if rerr != nil {
				return end{side: clientSide, err: rerr}
			}
			if werr != nil && !errors.Is(werr, websocket.ErrCloseSent) {
				return end{side: clientSide, err: werr}
			}
			continue
		case websocket.OpPong:
			// The answer to a heartbeat: an idle peer goes back to sleep
			// at once rather than after IdleAfter.
			if s.fromClient.afterPong(s.clientR) {
				return end{park: true}
			}
			continue
		case websocket.OpClose:
			code, err := readClose(s.clientR)
			if err != nil {
				return end{side: clientSide, err: err}
			}
			s.clientClosed.Store(true)
			return end{side: clientSide, closed: true, code: code}
		case websocket.OpContinuation:
			if !s.inMessage {
				return end{side: clientSide, err: &websocket.ProtocolError{Code: websocket.CloseProtocolError, Reason: "continuation frame outside a message"}}
			}
		default: // text or binary
			if s.inMessage {
				return end{side: clientSide, err: &websocket.ProtocolError{Code: websocket.CloseProtocolError, Reason: "new message inside a fragmented message"}}
			}
			if h.Op == websocket.OpText && s.opts.Resize != nil {
				if err := s.control(h); err != nil {
					return endFor(clientSide, err)
				}
				continue
			}
			s.decode = s.opts.Encoding == Base64 && h.Op == websocket.OpText
		}
		// Frames stream through without buffering; the bound is on what a
		// client may send as one message.
		if s.messageBytes += h.Length; s.opts.MaxMessage > 0 && s.messageBytes > s.opts.MaxMessage {
			return end{side: clientSide, err: &websocket.ProtocolError{Code: websocket.CloseTooBig, Reason: fmt.Sprintf("message larger than %d bytes", s.opts.MaxMessage)}}
		}
		if s.inMessage = !h.Fin; !s.inMessage {
			s.messageBytes = 0
		}
		if e, ok := s.forwardClientFrame(h, s.decode); !ok {
			return e
		}
	}
}

// ctrlPool holds buffers for control frames' payloads, taken when one
// arrives: on the loop engine a pump runs once per message, and a buffer
// on its stack would escape to the heap each time.
var ctrlPool = sync.Pool{New: func() any { return new([125]byte) }}

// answerPing reads a ping's payload from r and answers it with a pong on
// w: the read's error, else the write's.
func answerPing(r *websocket.Reader, w *websocket.Writer) (readErr, writeErr error) {
	buf := ctrlPool.Get().(*[125]byte)
	defer ctrlPool.Put(buf)
	p, err := r.ReadControl(buf[:])
	if err != nil {
		return err, nil
	}
	return nil, w.WriteControl(websocket.OpPong, p)
}

// readClose reads a close frame's payload from r and returns its code.
func readClose(r *websocket.Reader) (int, error) {
	buf := ctrlPool.Get().(*[125]byte)
	defer ctrlPool.Put(buf)
	p, err := r.ReadControl(buf[:])
	if err != nil {
		return 0, err
	}
	code, _, err := websocket.ParseClosePayload(p)
	return code, err
}

// control reads and acts on a control message of the web console.
func (s *Session) control(h websocket.Header) error {
	// Not a control message, as any other text is: 1007.
	if !h.Fin || h.Length > maxControl {
		return &websocket.ProtocolError{Code: websocket.CloseInvalidPayload, Reason: "control messages are single frames of at most 256 bytes"}
	}
	var buf [maxControl]byte
	p := buf[:h.Length]
	if _, err := io.ReadFull(s.clientR, p); err != nil {
		return err
	}
	c, err := ParseControl(p)
	if err != nil {
		return &websocket.ProtocolError{Code: websocket.CloseInvalidPayload, Reason: err.Error()}
	}
	if s.opts.Tap != nil {
		if err := s.opts.Tap.Resize(c.Rows, c.Cols); err != nil {
			return tapError(err)
		}
	}
	s.resize.request(c.Rows, c.Cols)
	return nil
}

// forwardClientFrame forwards one client frame's payload in chunks: to an
// attach WebSocket as fragments of the same message, to an exec stream as
// raw bytes.
func (s *Session) forwardClientFrame(h websocket.Header, decode bool) (end, bool) {
	d := &s.fromClient
	bp, buf, have, key0 := d.takeChunk(min(s.clientR.Buffered(), int(min(h.Length, chunk))))
	kept := false
	defer func() {
		if !kept {
			bufPool.Put(bp)
		}
	}()
	var decoded []byte
	op := h.Op
	if decode {
		dp := b64Pool.Get().(*[]byte)
		defer b64Pool.Put(dp)
		decoded = *dp
		// Decoded, the message is binary: its first frame says so, and
		// its continuation frames stay continuations.
		if op == websocket.OpText {
			op = websocket.OpBinary
		}
	}
	// Relayed to Docker as they are, the client's bytes are unmasked and
	// masked again in one pass, when the write masks them.
	remask := s.backendW != nil && !decode && s.opts.Tap == nil
	for first, remaining := true, h.Length; first || remaining > 0; first = false {
		// A whole chunk of the frame (it is on its way) per write; have
		// bytes of it came before the direction parked inside the frame.
		want := int(min(remaining, int64(chunk-have)))
		if !first {
			buf = bulkAt(bp, min(s.clientR.Buffered(), want))
		}
		var n int
		var key [4]byte
		var err error
		d.resumable = true
		if remask {
			n, key, err = s.clientR.ReadChunkMasked(buf[room+have:], want)
		} else {
			n, err = s.clientR.ReadChunk(buf[room+have:], want)
		}
		d.resumable = false
		if have == 0 {
			key0 = key // unmasks the chunk from its first byte
		}
		// On the loop, the frame's next bytes are late: the chunk waits
		// for them, parked, and the frame is taken up when they come.
		if err == errWouldBlock {
			if have+n > 0 {
				kept = true
				d.keepChunk(bp, buf, have+n, key0)
			}
			return s.lateClientFrame(h.Fin, op), false
		}
		if err != nil {
			return end{side: clientSide, err: err}, false
		}
		remaining -= int64(n)
		n, have, key = have+n, 0, key0
		fin := h.Fin && remaining == 0
		out, off, stop := buf, room, room+n
		if decode {
			m, err := s.decodeBase64(buf[room:room+n], decoded[room:], fin)
			if err != nil {
				return end{side: clientSide, err: err}, false
			}
			out, stop = decoded, room+m
		}
		// Before the write: writing to Docker masks the bytes in place.
		if s.opts.Tap != nil && stop > off {
			if err := s.opts.Tap.Input(out[off:stop]); err != nil {
				return endFor(clientSide, tapError(err)), false
			}
		}
		if s.backendW != nil {
			if remask {
				err = s.backendW.WriteFrameRemask(fin, op, out, off, stop, key)
			} else {
				err = s.backendW.WriteFrame(fin, op, out, off, stop)
			}
			if err != nil {
				return end{side: containerSide, err: fmt.Errorf("write to container: %w", err)}, false
			}
			op = websocket.OpContinuation
		} else if stop > off {
			if _, err := s.backendIO.Write(out[off:stop]); err != nil {
				return end{side: containerSide, err: fmt.Errorf("write to container: %w", err)}, false
			}
		}
		s.toContainer.Add(int64(stop - off))
		s.dataSeen.Store(s.opts.Clock.Now().UnixNano())
	}
	return end{}, true
}

// lateClientFrame parks the client's direction inside a frame, on the
// loop: the frame goes on with op (its first frame's, or continuation
// once some of it went) when its bytes come.
func (s *Session) lateClientFrame(fin bool, op websocket.Opcode) end {
	s.fromClient.mid, s.midFin, s.midOp = true, fin, op
	return end{park: true}
}

// decodeBase64 decodes the carried characters and src into dst and returns
// the decoded length. An incomplete quantum at the end of src is carried to
// the message's next chunk; at the end of the message none may be left.
func (s *Session) decodeBase64(src, dst []byte, fin bool) (int, error) {
	n := 0
	if s.ncarry > 0 {
		var q [4]byte
		copy(q[:], s.carry[:s.ncarry])
		take := copy(q[s.ncarry:], src)
		src = src[take:]
		if s.ncarry+take < 4 {
			s.ncarry += take
			copy(s.carry[:], q[:s.ncarry])
		} else {
			m, err := base64.StdEncoding.Decode(dst, q[:])
			if err != nil {
				return 0, invalidBase64()
			}
			n, s.ncarry = m, 0
		}
	}
	whole := len(src) - len(src)%4
	m, err := base64.StdEncoding.Decode(dst[n:], src[:whole])
	if err != nil {
		return 0, invalidBase64()
	}
	n += m
	if rest := src[whole:]; len(rest) > 0 {
		s.ncarry = copy(s.carry[:], rest)
	}
	if fin && s.ncarry > 0 {
		s.ncarry = 0
		return 0, invalidBase64()
	}
	return n, nil
}

func invalidBase64() error {
	return &websocket.ProtocolError{Code: websocket.CloseInvalidPayload, Reason: "text message is not valid base64"}
}

// pumpContainer forwards container output to the client until the
// container ends or fails, the client side fails, or it is time to park.
func (s *Session) pumpContainer() end {
	if s.small == nil {
		s.small = smallPool.Get().(*[room + smallChunk]byte)
	}
	if s.backendR != nil {
		return s.pumpAttach()
	}
	return s.pumpExec()
}

// pumpAttach relays the frames of Docker's attach WebSocket.
func (s *Session) pumpAttach() end {
	d := &s.fromContainer
	for {
		var remaining int64
		if d.mid {
			// On the loop: the rest of a frame whose bytes were late.
			d.mid = false
			remaining = s.backendR.Remaining()
		} else {
			h, err := d.nextFrame(s.backendR)
			if err != nil {
				return d.ended(err)
			}
			s.backendSeen.Store(s.opts.Clock.Now().UnixNano())
			switch h.Op {
			case websocket.OpPing:
				rerr, werr := answerPing(s.backendR, s.backendW)
				if err := cmp.Or(rerr, werr); err != nil {
					return end{side: containerSide, err: err}
				}
				continue
			case websocket.OpPong:
				if d.afterPong(s.backendR) {
					return end{park: true}
				}
				continue
			case websocket.OpClose:
				code, err := readClose(s.backendR)
				if err != nil {
					return end{side: containerSide, err: err}
				}
				return end{side: containerSide, closed: true, code: code}
			}
			remaining = h.Length
		}
		// Output leaves in binary messages whatever type Docker used
		// (text below API 1.28, with any bytes the process printed): a
		// browser fails the whole connection on a text message that is not
		// UTF-8, and websockify, which Zun's clients were written against,
		// always sends binary.
		d.resumable = true
		for remaining > 0 {
			// Short payloads go through the inline array; only bulk output
			// takes a pooled buffer, and only while it is being forwarded.
			var n int
			var err error
			if remaining <= smallChunk && d.chunk == nil {
				n, err = s.backendR.Read(s.small[room:])
				if n > 0 {
					if e, ok := s.sendToClient(s.small[:], n); !ok {
						d.resumable = false
						return e
					}
				}
			} else {
				// The frame's bytes are on their way (its header says how
				// many): wait for a whole chunk, so that bulk output leaves
				// in as few frames and writes as it came in (on the loop:
				// what has come).
				// have bytes of the chunk came before the direction parked
				// inside the frame.
				bp, buf, have, _ := d.takeChunk(min(s.backendR.Buffered(), int(min(remaining, chunk))))
				n, err = s.backendR.ReadChunk(buf[room+have:], int(min(remaining, int64(chunk-have))))
				if err == errWouldBlock {
					d.resumable = false
					if have+n > 0 {
						d.keepChunk(bp, buf, have+n, [4]byte{})
					} else {
						bufPool.Put(bp)
					}
					d.mid = true
					return end{park: true}
				}
				remaining -= int64(n)
				if have+n > 0 {
					if e, ok := s.sendToClient(buf, have+n); !ok {
						bufPool.Put(bp)
						d.resumable = false
						return e
					}
				}
				bufPool.Put(bp)
				if err != nil && err != io.EOF {
					d.resumable = false
					return end{side: containerSide, err: err}
				}
				continue
			}
			remaining -= int64(n)
			if err == errWouldBlock {
				d.resumable = false
				d.mid = true
				return end{park: true}
			}
			if err != nil && err != io.EOF {
				d.resumable = false
				return end{side: containerSide, err: err}
			}
		}
		d.resumable = false
	}
}

// pumpExec relays the raw byte stream of a hijacked exec connection.
func (s *Session) pumpExec() end {
	if len(s.pending) > 0 {
		for p := s.pending; len(p) > 0; {
			n := copy(s.small[room:], p)
			p = p[n:]
			if e, ok := s.sendToClient(s.small[:], n); !ok {
				return e
			}
		}
		s.pending = nil
	}
	for {
		var n int
		var err error
		if s.execBulk {
			// A full small read means output is streaming: use a chunk
			// until a read comes back short.
			bp := bufPool.Get().(*[]byte)
			buf := bulkAt(bp, 0)
			n, err = s.backendIn.Read(buf[room : room+chunk])
			if n > 0 {
				if e, ok := s.sendToClient(buf, n); !ok {
					bufPool.Put(bp)
					return e
				}
			}
			bufPool.Put(bp)
			if n > 0 { // a read that found nothing says nothing
				s.execBulk = n > smallChunk
			}
		} else {
			n, err = s.backendIn.Read(s.small[room:])
			if n > 0 {
				if e, ok := s.sendToClient(s.small[:], n); !ok {
					return e
				}
			}
			if n > 0 {
				s.execBulk = n == smallChunk
			}
		}
		if n > 0 {
			s.backendSeen.Store(s.opts.Clock.Now().UnixNano())
		}
		if err == io.EOF {
			return end{side: containerSide, closed: true, code: websocket.CloseNormal}
		}
		if err != nil {
			return s.fromContainer.ended(err)
		}
	}
}

// sendToClient sends buf[room:room+n], preceded by any held-back bytes, as
// one client message, holding back an incomplete trailing UTF-8 character
// for the next message.
func (s *Session) sendToClient(buf []byte, n int) (end, bool) {
	start := room - s.nheld
	copy(buf[start:room], s.held[:s.nheld])
	stop := room + n
	keep := utf8tail.Incomplete(buf[start:stop])
	s.nheld = copy(s.held[:], buf[stop-keep:stop])
	stop -= keep
	if stop == start {
		return end{}, true
	}
	if err := s.writeClient(buf, start, stop); err != nil {
		return endFor(clientSide, fmt.Errorf("write to client: %w", err)), false
	}
	return end{}, true
}

// writeClient writes buf[off:stop] as one binary message, or as base64 in
// a text message under the base64 subprotocol.
func (s *Session) writeClient(buf []byte, off, stop int) error {
	n := stop - off
	op := websocket.OpBinary
	if s.opts.Tap != nil {
		if err := s.opts.Tap.Output(buf[off:stop]); err != nil {
			return tapError(err)
		}
	}
	if s.opts.Encoding == Base64 {
		bp := b64Pool.Get().(*[]byte)
		defer b64Pool.Put(bp)
		enc := *bp
		m := base64.StdEncoding.EncodedLen(n)
		base64.StdEncoding.Encode(enc[room:], buf[off:stop])
		buf, off, stop, op = enc, room, room+m, websocket.OpText
	}
	if err := s.clientW.WriteFrame(true, op, buf, off, stop); err != nil {
		return err
	}
	if f := s.opts.FirstOutput; f != nil {
		s.opts.FirstOutput = nil
		f()
	}
	s.toClient.Add(int64(n))
	s.dataSeen.Store(s.opts.Clock.Now().UnixNano())
	return nil
}

// flushHeld sends held-back bytes as they are when the stream has ended.
func (s *Session) flushHeld() {
	if s.nheld == 0 {
		return
	}
	if s.small == nil {
		s.small = smallPool.Get().(*[room + smallChunk]byte)
	}
	copy(s.small[room:], s.held[:s.nheld])
	n := s.nheld
	s.nheld = 0
	s.writeClient(s.small[:], room, room+n)
}
