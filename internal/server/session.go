package server

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/audit"
	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/proxy"
	"github.com/zun-wsproxy/zun-wsproxy/internal/recording"
	"github.com/zun-wsproxy/zun-wsproxy/internal/workers"
)

// A console session's lifetime is one state machine (its states and
// transitions are listed in internal/proxy/state.go). Its first state,
// admission, is the server's: admit takes a session slot and counts the
// session among the server's, before its container is dialled and its
// recording made; the proxy.Session, made once the handshake is answered,
// runs the rest (running, parked, closing) and calls back when it is
// closed. Everything the session was admitted with (the slot, the
// container stream until the proxy.Session owns it, the recording, the
// metrics' and the audit log's record of it, its place among the server's
// sessions) is given back once, by release: when the proxy.Session has
// closed, or when the request ends before there is one.
//
// The server's own phases, for Shutdown:
//
//	serving   sessions are admitted and run
//	stopping  Shutdown has begun: sessions are still admitted, but a
//	          session that starts now ends at once with 1001; running
//	          ones go on until they end or the drain time is over, when
//	          they are ended with 1001 (stopSessions)
//	stopped   every admitted session was released after the drain: none
//	          is admitted any more (503), and Shutdown returns
//
// A session admitted before stopped is therefore waited for by Shutdown,
// whatever the moment of its handshake: it has its audit record and its
// finished recording by the time Shutdown returns.
type phase uint8

const (
	serving phase = iota
	stopping
	stopped
)

// session is what the server knows of a console request and holds for its
// session, for logs, metrics and the audit log.
type session struct {
	id          string
	requested   time.Time
	client      client
	target      console.Target
	slot        string
	subprotocol string
	stream      net.Conn            // the container side, until the proxy.Session owns it
	rec         *recording.Recorder // nil unless recording
	started     time.Time
	run         *proxy.Session // once started; guarded by Server.mu
	released    bool           // guarded by Server.mu
	// inFlight: the failure limiter counts the request as in flight
	// until its token is checked (failureLimiter.admit).
	inFlight bool
}

// newSessionID returns a short random id for logs and records. It names
// a request and is no secret: it comes from the runtime's generator
// (ChaCha8, seeded by the system), with no system call.
func newSessionID() string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64())
	return hex.EncodeToString(b[:6])
}

// errShuttingDown: the server has stopped; no session is admitted.
var errShuttingDown = errors.New("proxy shutting down")

// admit takes a session slot for ss and counts ss among the server's
// sessions, which Shutdown waits for: from now on the caller gives them
// back with release.
func (s *Server) admit(ss *session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == stopped {
		return errShuttingDown
	}
	if err := s.slots.acquire(ss.slot); err != nil {
		return err
	}
	s.live[ss] = struct{}{}
	return nil
}

// start runs ss's proxy.Session, which owns its connections from now on.
// It does not block: the session has no goroutine of its own while idle,
// and the request's goroutine and what net/http holds for the connection
// are freed. It ends in release, on whichever goroutine sees it end.
func (s *Server) start(ss *session, sess *proxy.Session) {
	ss.stream = nil // the Session's now
	ss.started = time.Now()
	s.opts.Metrics.SessionStarted(ss.target.Kind.String(), ss.started.Sub(ss.requested))
	s.logLine(slog.LevelInfo, "session started", ss.attrs(slog.String("subprotocol", ss.subprotocol)))
	done := func(res proxy.Result) {
		// On a pump's goroutine or a Stop's as well as on a worker: one
		// step of stack growth for release's lines, not several.
		workers.GrowStack()
		s.release(ss, &res)
	}
	// Registered and started under one lock, so stopSessions either sees
	// the session or it starts in the stopping phase, and ends at once.
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.run = sess
	if s.phase != serving {
		sess.Start(cancelled, done)
		return
	}
	sess.Start(context.Background(), done)
}

// cancelled is a cancelled context: a session started with it ends at
// once with 1001.
var cancelled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// release gives back everything ss was admitted with, once. res is how
// its proxy.Session ended, or nil if the request ended before there was
// one: then it has no audit record, and its recording, which recorded
// nothing, is removed.
func (s *Server) release(ss *session, res *proxy.Result) {
	s.mu.Lock()
	again := ss.released
	ss.released = true
	s.mu.Unlock()
	if again {
		s.log.LogAttrs(context.Background(), slog.LevelError, "session released twice", ss.attrs()...)
		return
	}
	if ss.stream != nil {
		ss.stream.Close()
	}
	var recPath string
	if ss.rec != nil {
		err := ss.rec.Close()
		switch {
		case res == nil:
			os.Remove(ss.rec.Path())
		case err != nil:
			recPath = ss.rec.Path()
			s.log.LogAttrs(context.Background(), slog.LevelError, "session recording incomplete", ss.attrs(slog.String("file", recPath), slog.Any("error", err))...)
		default:
			recPath = ss.rec.Path()
		}
	}
	if res != nil {
		s.report(ss, res, recPath)
	}
	s.slots.release(ss.slot)
	s.mu.Lock()
	delete(s.live, ss)
	if s.drained != nil && len(s.live) == 0 {
		s.phase = stopped
		close(s.drained)
		s.drained = nil
	}
	s.mu.Unlock()
}

// report logs, counts and audits a session that ran.
func (s *Server) report(ss *session, res *proxy.Result, recPath string) {
	t := ss.target
	end := time.Now()
	bg := context.Background()
	s.logLine(slog.LevelInfo, "session ended", ss.attrs(
		slog.String("duration", end.Sub(ss.started).Round(time.Millisecond).String()),
		slog.Int64("bytes_to_container", res.ToContainer),
		slog.Int64("bytes_to_client", res.ToClient),
		slog.Int("close_code", res.ClientCode),
		slog.String("reason", res.Reason)))
	s.opts.Metrics.SessionEnded(t.Kind.String(), res.End, end.Sub(ss.started), res.ToClient, res.ToContainer)
	err := s.opts.Audit.Write(audit.Record{
		Session: ss.id, Kind: t.Kind.String(), ExecID: t.ExecID,
		Container: t.ContainerUUID, Name: t.Name, RuntimeID: t.ContainerID, Host: t.Host,
		TokenID: t.TokenID, ProjectID: t.ProjectID, UserID: t.UserID,
		Client: ss.client.text, Subprotocol: ss.subprotocol, Start: ss.started, End: end,
		ToClient: res.ToClient, ToContainer: res.ToContainer, CloseCode: res.ClientCode,
		EndReason: res.End, Detail: res.Reason, Recording: recPath,
	})
	if err != nil {
		s.log.LogAttrs(bg, slog.LevelError, "audit record not written", ss.attrs(slog.Any("error", err))...)
	}
}

// logLine logs a line of every session's. It goes to the handler as a
// record without the call site, which no handler here prints: slog's
// Logger would walk the stack for it at each line.
func (s *Server) logLine(level slog.Level, msg string, attrs []slog.Attr) {
	ctx := context.Background()
	h := s.log.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.AddAttrs(attrs...)
	h.Handle(ctx, r)
}

// attrs are the session's attributes for a log line, then more. They are
// built for each line rather than kept in a logger per session: an idle
// session should hold little.
func (ss *session) attrs(more ...slog.Attr) []slog.Attr {
	t := ss.target
	a := make([]slog.Attr, 0, 6+len(more))
	a = append(a, slog.String("session", ss.id), slog.String("container", t.ContainerUUID), slog.String("kind", t.Kind.String()), slog.String("client", ss.client.text))
	if t.Kind == console.Exec {
		a = append(a, slog.String("exec_id", t.ExecID))
	}
	if t.TokenID != "" {
		a = append(a, slog.String("token_id", t.TokenID))
	}
	return append(a, more...)
}

// stopSessions ends every running session with 1001, each in a goroutine
// of its own (each waits for its client's answer to the close), and any
// session that starts from now on.
func (s *Server) stopSessions() {
	s.mu.Lock()
	if s.phase == serving {
		s.phase = stopping
	}
	running := make([]*proxy.Session, 0, len(s.live))
	for ss := range s.live {
		if ss.run != nil {
			running = append(running, ss.run)
		}
	}
	s.mu.Unlock()
	for _, sess := range running {
		go sess.Stop()
	}
}
