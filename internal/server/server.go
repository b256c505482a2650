// Package server accepts console connections: it takes each HTTP request
// through handshake checks, Origin and token authorization and the dial to
// the container runtime, then upgrades it and runs the proxied session. It
// is the one place where errors become HTTP answers.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/audit"
	"github.com/zun-wsproxy/zun-wsproxy/internal/auth"
	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/front"
	"github.com/zun-wsproxy/zun-wsproxy/internal/idle"
	"github.com/zun-wsproxy/zun-wsproxy/internal/loop"
	"github.com/zun-wsproxy/zun-wsproxy/internal/metrics"
	"github.com/zun-wsproxy/zun-wsproxy/internal/proxy"
	"github.com/zun-wsproxy/zun-wsproxy/internal/recording"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
	"github.com/zun-wsproxy/zun-wsproxy/internal/workers"
)

// Resolver turns an authorized request into the console it may open.
type Resolver interface {
	Resolve(ctx context.Context, r auth.Request) (console.Target, error)
}

// Dialer opens the container side of a console.
type Dialer interface {
	Dial(ctx context.Context, t console.Target) (console.Stream, error)
}

// Resizer sets a console's terminal size (for the web console).
type Resizer interface {
	Resize(ctx context.Context, t console.Target, rows, cols int) error
}

// Options configure a Server.
type Options struct {
	Resolver Resolver
	Dialer   Dialer
	// Resizer serves the web console's resize messages; nil refuses its
	// subprotocol.
	Resizer Resizer
	// Console serves the web console page and its assets under /console;
	// nil means 404 there.
	Console http.Handler
	// Ready reports whether the proxy can serve new sessions (its store and
	// a container runtime answer), for /readyz; nil means always ready. It
	// runs once at a time and its result is kept for a second (ready.go).
	Ready  func(context.Context) error
	Origin auth.OriginPolicy
	Logger *slog.Logger
	// Path is the proxy's path besides "/" (base_url's path); every other
	// path is 404.
	Path string
	// Session tunes each proxied session (its Encoding is set per client).
	Session proxy.Options
	// Engine runs sessions of plain sockets on event loops ("loop", one
	// per processor: proxy.Options.Loop; the default, also when empty)
	// or on pump goroutines ("goroutines"). TLS sessions always use
	// goroutines.
	Engine string
	// ReadHeaderTimeout bounds reading a request's headers, against slow
	// clients holding connections open (default 10s).
	ReadHeaderTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (default 16 KiB).
	MaxHeaderBytes int
	// MaxSessions and MaxSessionsPerContainer bound concurrent sessions
	// (0: no bound); beyond them requests get 503 with Retry-After.
	MaxSessions, MaxSessionsPerContainer int
	// AuthFailureLimit refuses (429) a client (an IPv4 address, an IPv6
	// /64) after this many wrong tokens (401) within AuthFailureWindow;
	// 0: off.
	AuthFailureLimit  int
	AuthFailureWindow time.Duration
	// TrustedProxies are the peers believed when they name the client (by
	// X-Forwarded-For; by a PROXY header, which the listener reads): share
	// it with Listen. Nil trusts no one.
	TrustedProxies *TrustedProxies
	// Metrics, Audit: nil when off.
	Metrics *metrics.Metrics
	Audit   *audit.Log
	// RecordingDir, when set, records every session there (asciicast v2);
	// RecordInput records keystrokes too. A session whose recording
	// cannot be created is refused (503), and one whose recording fails
	// or reaches RecordingMaxSize (0: no bound) is ended: recording is for
	// audit (record.go).
	RecordingDir     string
	RecordInput      bool
	RecordingMaxSize int64
	// Workers runs each connection's set-up and each loop session's end
	// (nil: a goroutine of its own for each). Its owner closes it after
	// Shutdown.
	Workers *workers.Pool
}

// Server serves console connections. It owns the sessions it starts and
// ends them on Shutdown.
type Server struct {
	opts     Options
	log      *slog.Logger
	http     *http.Server
	slots    *sessionSlots
	failures *failureLimiter
	readyz   *readiness // nil: always ready
	trusted  *TrustedProxies
	// What Reload may change, read at each request.
	origin  atomic.Pointer[auth.OriginPolicy]
	session atomic.Pointer[proxy.Options]
	mu      sync.Mutex // guards phase, live, drained
	phase   phase      // serving, stopping, stopped (session.go)
	// live are the admitted sessions not yet released, for Shutdown to
	// wait for and end: a map entry each is lighter than a context
	// registration each (an idle session should hold little).
	live map[*session]struct{}
	// drained, while Shutdown waits, is closed when the last of live is
	// released.
	drained chan struct{}
	// poller holds idle sessions' sockets, so they hold no goroutines.
	poller *idle.Poller
	// loops serve sessions on the loop engine; started with the first.
	loopsOnce sync.Once
	loops     *loop.Group
	// fronts serve console handshakes ahead of net/http, one per Serve.
	fronts []*front.Listener
}

// New returns a Server.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = 10 * time.Second
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = 16 << 10
	}
	if opts.AuthFailureWindow <= 0 {
		opts.AuthFailureWindow = time.Minute
	}
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		slots:    newSessionSlots(opts.MaxSessions, opts.MaxSessionsPerContainer),
		failures: newFailureLimiter(opts.AuthFailureLimit, opts.AuthFailureWindow),
		trusted:  opts.TrustedProxies,
	}
	if s.trusted == nil {
		s.trusted = NewTrustedProxies(nil)
	}
	if opts.Ready != nil {
		s.readyz = &readiness{check: opts.Ready}
	}
	s.origin.Store(&opts.Origin)
	s.session.Store(&opts.Session)
	s.live = make(map[*session]struct{})
	s.poller = idle.New()
	s.poller.OnFail = func(err error) {
		// Parked sessions are woken and carry on with goroutines.
		s.log.Error("idle sessions can no longer be parked", "error", err)
	}
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		// Nothing but a handshake is read before the upgrade.
		ReadTimeout:    opts.ReadHeaderTimeout,
		MaxHeaderBytes: opts.MaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
	}
	return s
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.poller.Start(); err != nil && !errors.Is(err, idle.ErrClosed) {
		// Sessions still work; idle ones keep their goroutines.
		s.log.Warn("idle sessions will not be parked", "error", err)
	}
	// The event loops, if the engine is theirs, are there from the start,
	// as the Poller is.
	s.loop()
	fl := front.New(ln, s, front.Options{
		Takes:          s.consolePath,
		HeaderTimeout:  s.opts.ReadHeaderTimeout,
		MaxHeaderBytes: s.opts.MaxHeaderBytes,
		Logger:         s.log,
		Workers:        s.opts.Workers,
	})
	s.mu.Lock()
	s.fronts = append(s.fronts, fl)
	s.mu.Unlock()
	err := s.http.Serve(fl)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and lets running sessions go on until they end
// or ctx does; then it closes each with 1001 "going away" and waits for
// them to finish closing. A session whose handshake is under way meanwhile
// ends at once with 1001; every session admitted is released (its audit
// record written, its recording finished) before Shutdown returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.phase == serving {
		s.phase = stopping
	}
	s.mu.Unlock()
	// These return once every request (net/http's, then the fronts')
	// has ended or been upgraded (or ctx ends): admitted sessions are in
	// live by then, or are admitted later while still stopping.
	s.http.Shutdown(ctx)
	s.mu.Lock()
	fronts := s.fronts
	s.mu.Unlock()
	for _, fl := range fronts {
		fl.Wait(ctx)
	}
	s.mu.Lock()
	drained := s.drained
	if len(s.live) == 0 {
		s.phase = stopped
	} else if drained == nil {
		drained = make(chan struct{})
		s.drained = drained
	}
	s.mu.Unlock()
	if drained != nil {
		select {
		case <-drained:
		case <-ctx.Done():
			s.log.Info("drain time over: closing the remaining sessions")
			s.stopSessions()
			<-drained // each session closes within its close timeouts
		}
	}
	s.loopsOnce.Do(func() {}) // none start from now on
	if s.loops != nil {
		if err := s.loops.Close(); err != nil {
			s.log.Error("event loops", "error", err)
		}
	}
	return s.poller.Close()
}

// loop returns the event loop for a new session, or nil on the goroutine
// engine (or if the loops cannot start: sessions then use goroutines).
func (s *Server) loop() proxy.Loop {
	if s.opts.Engine == "goroutines" {
		return nil
	}
	s.loopsOnce.Do(func() {
		g, err := loop.NewGroup(0)
		if err != nil {
			s.log.Warn("event loops cannot start: sessions run on goroutines", "error", err)
			return
		}
		g.OnFail(func(err error) {
			s.log.Error("event loop failed: its sessions end with 1011, new ones run on the other loops or on goroutines", "error", err)
		})
		s.loops = g
	})
	if s.loops == nil {
		return nil
	}
	// Every loop failed: no loop, and not a nil *loop.Loop inside a
	// non-nil proxy.Loop, which sessions would take for a loop.
	if l := s.loops.Pick(); l != nil {
		return l
	}
	return nil
}

// Reloadable is what a running server takes on without a restart (SIGHUP):
// it applies to new requests and sessions; running sessions keep theirs.
type Reloadable struct {
	Origin                               auth.OriginPolicy
	Session                              proxy.Options
	MaxSessions, MaxSessionsPerContainer int
	AuthFailureLimit                     int
	AuthFailureWindow                    time.Duration
	TrustedProxies                       []netip.Prefix
}

// Reload applies r.
func (s *Server) Reload(r Reloadable) {
	s.origin.Store(&r.Origin)
	s.session.Store(&r.Session)
	s.slots.setLimits(r.MaxSessions, r.MaxSessionsPerContainer)
	s.failures.setLimit(r.AuthFailureLimit, r.AuthFailureWindow)
	s.trusted.Set(r.TrustedProxies)
}

// Sessions returns how many sessions are running.
func (s *Server) Sessions() int { return s.slots.count() }

// ServeHTTP takes one request down the data path: handshake checks, Origin,
// token, dial, upgrade, session.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var info *session
	defer func() {
		if info != nil && info.inFlight {
			s.failures.done(info.client.key(), false)
		}
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			// Logged without the request: its query holds a token.
			s.log.Error("panic serving a request", "client", s.clientOf(r).text, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			// Else net/http answers 200. Once answered or upgraded, this
			// writes nothing.
			w.Header().Set("Connection", "close")
			http.Error(w, "500 Internal Server Error: internal error", http.StatusInternalServerError)
		}
	}()
	switch r.URL.Path {
	case "/healthz":
		io.WriteString(w, "ok\n")
		return
	case "/readyz":
		s.ready(w, r)
		return
	}
	if s.opts.Console != nil && (r.URL.Path == "/console" || strings.HasPrefix(r.URL.Path, "/console/")) {
		s.opts.Console.ServeHTTP(w, r)
		return
	}
	if !s.consolePath(r.URL.Path) {
		http.Error(w, "404 not found", http.StatusNotFound)
		return
	}
	// One id per console request, in every log line about it, in its
	// audit record and in the X-Session-Id header of a refusal.
	info = &session{id: newSessionID(), requested: time.Now(), client: s.clientOf(r)}
	counted, err := s.failures.admit(r.Context(), info.client.key())
	if err != nil {
		s.reject(w, r, info, err)
		return
	}
	info.inFlight = counted
	key, err := websocket.CheckRequest(r)
	if err != nil {
		s.reject(w, r, info, err)
		return
	}
	if err := s.origin.Load().Check(r.Header.Get("Origin"), r.Host, s.forwardedProto(r)); err != nil {
		s.reject(w, r, info, err)
		return
	}
	req, err := auth.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.reject(w, r, info, err)
		return
	}
	lookup := time.Now()
	target, err := s.opts.Resolver.Resolve(r.Context(), req)
	s.opts.Metrics.StoreLookup(time.Since(lookup))
	if err != nil {
		s.reject(w, r, info, err)
		return
	}
	info.inFlight = false
	s.failures.done(info.client.key(), false)
	info.target, info.slot = target, target.ContainerID+"/"+target.ContainerUUID
	if err := s.admit(info); err != nil {
		s.reject(w, r, info, err)
		return
	}
	// Admitted: released when its proxy.Session has closed, or here if
	// the request ends before there is one.
	started := false
	defer func() {
		if !started {
			s.release(info, nil)
		}
	}()
	dial := time.Now()
	stream, err := s.opts.Dialer.Dial(r.Context(), target)
	s.opts.Metrics.BackendDial(target.Kind.String(), time.Since(dial))
	if err != nil {
		s.reject(w, r, info, fmt.Errorf("%w: %w", console.ErrRuntime, err))
		return
	}
	info.stream = stream.Conn
	if s.opts.RecordingDir != "" {
		name := target.Name
		if name == "" {
			name = target.ContainerUUID
		}
		info.rec, err = recording.Create(s.opts.RecordingDir, name, info.id, recording.Options{Input: s.opts.RecordInput, Title: name, MaxSize: s.opts.RecordingMaxSize})
		if err != nil {
			s.log.Error("session refused: cannot record it", "session", info.id, "error", err)
			s.reject(w, r, info, errRecording)
			return
		}
	}
	subprotocol, encoding := s.chooseSubprotocol(websocket.Subprotocols(r))
	conn, buffered, err := websocket.Upgrade(w, key, subprotocol)
	if err != nil {
		s.log.Info("session not started", "session", info.id, "container", target.ContainerUUID, "kind", target.Kind.String(), "client", info.client.text, "error", err)
		return
	}
	opts := *s.session.Load()
	opts.Encoding = encoding
	opts.Poller = s.poller
	opts.Workers = s.opts.Workers
	if lp := s.loop(); lp != nil {
		opts.Loop = lp
	}
	if info.rec != nil {
		opts.Tap = recordingTap{info.rec}
	}
	if s.opts.Metrics != nil {
		opts.FirstOutput = func() { s.opts.Metrics.FirstOutput(time.Since(info.requested)) }
	}
	if subprotocol == proxy.ConsoleSubprotocol {
		opts.PingClient = true
		opts.Resize = func(ctx context.Context, rows, cols int) error {
			return s.opts.Resizer.Resize(ctx, target, rows, cols)
		}
	}
	started = true
	info.subprotocol = subprotocol
	s.start(info, proxy.New(unwrap(conn), buffered, stream, opts))
}

// consolePath reports whether path is where console handshakes come.
func (s *Server) consolePath(path string) bool { return path == "/" || path == s.opts.Path }

// ready answers /readyz: 200 when the store and a runtime answer (as last
// checked, at most readyFor ago) and the proxy is not shutting down; 503
// with a generic reason otherwise.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	s.mu.Lock()
	closing := s.phase != serving
	s.mu.Unlock()
	var err error
	if closing {
		err = errors.New("shutting down")
	} else if s.readyz != nil {
		err = s.readyz.get(r.Context())
	}
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %s\n", err)
		return
	}
	io.WriteString(w, "ready\n")
}

// chooseSubprotocol selects the web console's protocol when offered (and
// resizes can be served); else "binary" when offered, as websockify does;
// else "base64" for old clients that offer only that; else none.
func (s *Server) chooseSubprotocol(offered []string) (string, proxy.Encoding) {
	if s.opts.Resizer != nil {
		for _, p := range offered {
			if p == proxy.ConsoleSubprotocol {
				return p, proxy.Binary
			}
		}
	}
	b64 := false
	for _, p := range offered {
		switch p {
		case "binary":
			return "binary", proxy.Binary
		case "base64":
			b64 = true
		}
	}
	if b64 {
		return "base64", proxy.Base64
	}
	return "", proxy.Binary
}

// answer maps an error to the HTTP status and the short text a client
// gets, and names the refusal from a fixed set (the metrics' label). Texts
// never carry tokens, addresses or database details.
func answer(err error) (status int, text, reason string) {
	var he *websocket.HandshakeError
	switch {
	case errors.As(err, &he):
		reason = "other"
		switch he.Status {
		case http.StatusBadRequest:
			reason = "bad_request"
		case http.StatusUpgradeRequired:
			reason = "bad_version"
		}
		return he.Status, he.Reason, reason
	case errors.Is(err, errRateLimited):
		return http.StatusTooManyRequests, "too many failed attempts from this address; retry later", "rate_limited"
	case errors.Is(err, errBusy):
		return http.StatusServiceUnavailable, "too many console requests from this address at once; retry later", "client_busy"
	case errors.Is(err, errTooManySessions):
		return http.StatusServiceUnavailable, "too many console sessions; retry later", "too_many_sessions"
	case errors.Is(err, auth.ErrOrigin):
		return http.StatusForbidden, "origin not allowed", "forbidden_origin"
	case errors.Is(err, auth.ErrMalformed):
		return http.StatusBadRequest, err.Error(), "bad_request"
	case errors.Is(err, auth.ErrUnauthorized):
		return http.StatusUnauthorized, "invalid token or unknown container", "unauthorized"
	case errors.Is(err, store.ErrAmbiguous):
		return http.StatusConflict, "more than one container has this name; use its uuid", "ambiguous_name"
	case errors.Is(err, store.ErrUnavailable):
		return http.StatusServiceUnavailable, "container database unavailable", "store_unavailable"
	case errors.Is(err, console.ErrNotRunning):
		return http.StatusConflict, "container is not running", "not_running"
	case errors.Is(err, errShuttingDown):
		return http.StatusServiceUnavailable, "proxy shutting down; retry later", "shutting_down"
	case errors.Is(err, errRecording):
		return http.StatusServiceUnavailable, "session recording unavailable; retry later", "recording_unavailable"
	case errors.Is(err, console.ErrRuntime) && isTimeout(err):
		return http.StatusGatewayTimeout, "container runtime did not answer in time", "runtime_timeout"
	case errors.Is(err, console.ErrRuntime):
		return http.StatusBadGateway, "container runtime unreachable", "runtime_unreachable"
	}
	return http.StatusInternalServerError, "internal error", "other"
}

// errRecording: the session's recording could not be created.
var errRecording = errors.New("session recording unavailable")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// reject answers a refused request and logs why, without its query string.
func (s *Server) reject(w http.ResponseWriter, r *http.Request, info *session, err error) {
	status, text, reason := answer(err)
	s.opts.Metrics.Refused(reason)
	w.Header().Set("X-Session-Id", info.id)
	// Only wrong tokens count: any web page can make its visitors'
	// browsers send handshakes with a foreign Origin (403), and those must
	// not lock a visitor's address, or its whole NAT, out of the CLI.
	if info.inFlight {
		info.inFlight = false
		s.failures.done(info.client.key(), status == http.StatusUnauthorized)
	} else if status == http.StatusUnauthorized {
		s.failures.fail(info.client.key())
	}
	var re *retryError
	if errors.As(err, &re) {
		w.Header().Set("Retry-After", strconv.Itoa(int(re.after.Round(time.Second)/time.Second)+1))
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelWarn
	}
	s.log.Log(r.Context(), level, "request refused", "session", info.id, "status", status, "client", info.client.text, "error", err.Error())
	if status == http.StatusUpgradeRequired {
		w.Header().Set("Sec-WebSocket-Version", "13")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Connection", "close")
	w.WriteHeader(status)
	fmt.Fprintf(w, "%d %s: %s\n", status, http.StatusText(status), text)
}
