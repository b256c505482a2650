// Package server accepts console connections: it takes each HTTP request
// through handshake checks, Origin and token authorization and the dial to
// the container runtime, then upgrades it and runs the proxied session. It
// is the one place where errors become HTTP answers.
package server

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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
	"github.com/zun-wsproxy/zun-wsproxy/internal/idle"
	"github.com/zun-wsproxy/zun-wsproxy/internal/loop"
	"github.com/zun-wsproxy/zun-wsproxy/internal/metrics"
	"github.com/zun-wsproxy/zun-wsproxy/internal/proxy"
	"github.com/zun-wsproxy/zun-wsproxy/internal/recording"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
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
	// per processor: proxy.Options.Loop) or on pump goroutines
	// ("goroutines", the default). TLS sessions always use goroutines.
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
	origin   atomic.Pointer[auth.OriginPolicy]
	session  atomic.Pointer[proxy.Options]
	mu       sync.Mutex
	closing  bool // set by Shutdown: no session may start after it
	sessions sync.WaitGroup
	// live are the running sessions, for Shutdown to end: a map entry
	// each is lighter than a context registration each (an idle session
	// should hold little). stopping: they are being ended, and a session
	// starting now ends at once.
	live     map[*proxy.Session]struct{}
	stopping bool
	// poller holds idle sessions' sockets, so they hold no goroutines.
	poller *idle.Poller
	// loops serve sessions on the loop engine; started with the first.
	loopsOnce sync.Once
	loops     *loop.Group
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
	s.live = make(map[*proxy.Session]struct{})
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
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and lets running sessions go on until they end
// or ctx does; then it closes each with 1001 "going away" and waits for
// them to finish closing.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.http.Shutdown(ctx)
	done := make(chan struct{})
	go func() {
		s.sessions.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Info("drain time over: closing the remaining sessions")
		s.stopSessions()
		<-done // each session closes within its close timeouts
	}
	s.loopsOnce.Do(func() {}) // none start from now on
	if s.loops != nil {
		s.loops.Close()
	}
	return s.poller.Close()
}

// loop returns the event loop for a new session, or nil on the goroutine
// engine (or if the loops cannot start: sessions then use goroutines).
func (s *Server) loop() proxy.Loop {
	if s.opts.Engine != "loop" {
		return nil
	}
	s.loopsOnce.Do(func() {
		g, err := loop.NewGroup(0)
		if err != nil {
			s.log.Warn("event loops cannot start: sessions run on goroutines", "error", err)
			return
		}
		s.loops = g
	})
	if s.loops == nil {
		return nil
	}
	return s.loops.Pick()
}

// stopSessions ends every running session with 1001, each in a goroutine
// of its own (each waits for its client's answer to the close), and any
// session that starts from now on.
func (s *Server) stopSessions() {
	s.mu.Lock()
	s.stopping = true
	running := make([]*proxy.Session, 0, len(s.live))
	for sess := range s.live {
		running = append(running, sess)
	}
	s.mu.Unlock()
	for _, sess := range running {
		go sess.Stop()
	}
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
	var info *sessionInfo
	defer func() {
		if info != nil && info.admitted {
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
	if r.URL.Path != "/" && r.URL.Path != s.opts.Path {
		http.Error(w, "404 not found", http.StatusNotFound)
		return
	}
	growStack()
	// One id per console request, in every log line about it, in its
	// audit record and in the X-Session-Id header of a refusal.
	info = &sessionInfo{id: newSessionID(), requested: time.Now(), client: s.clientOf(r)}
	if err := s.failures.admit(r.Context(), info.client.key()); err != nil {
		s.reject(w, r, info, err)
		return
	}
	info.admitted = true
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
	info.admitted = false
	s.failures.done(info.client.key(), false)
	slot := target.ContainerID + "/" + target.ContainerUUID
	if err := s.slots.acquire(slot); err != nil {
		s.reject(w, r, info, err)
		return
	}
	handedOff := false
	defer func() {
		if !handedOff {
			s.slots.release(slot)
		}
	}()
	dial := time.Now()
	stream, err := s.opts.Dialer.Dial(r.Context(), target)
	s.opts.Metrics.BackendDial(target.Kind.String(), time.Since(dial))
	if err != nil {
		s.reject(w, r, info, fmt.Errorf("%w: %w", console.ErrRuntime, err))
		return
	}
	if s.opts.RecordingDir != "" {
		name := target.Name
		if name == "" {
			name = target.ContainerUUID
		}
		info.rec, err = recording.Create(s.opts.RecordingDir, name, info.id, recording.Options{Input: s.opts.RecordInput, Title: name, MaxSize: s.opts.RecordingMaxSize})
		if err != nil {
			stream.Conn.Close()
			s.log.Error("session refused: cannot record it", "session", info.id, "error", err)
			s.reject(w, r, info, errRecording)
			return
		}
	}
	subprotocol, encoding := s.chooseSubprotocol(websocket.Subprotocols(r))
	conn, buffered, err := websocket.Upgrade(w, key, subprotocol)
	if err != nil {
		stream.Conn.Close()
		if info.rec != nil {
			info.rec.Close()
			os.Remove(info.rec.Path())
		}
		s.log.Info("session not started", "session", info.id, "container", target.ContainerUUID, "kind", target.Kind.String(), "client", info.client.text, "error", err)
		return
	}
	opts := *s.session.Load()
	opts.Encoding = encoding
	opts.Poller = s.poller
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
	handedOff = true
	info.target, info.slot, info.subprotocol = target, slot, subprotocol
	s.start(proxy.New(unwrap(conn), buffered, stream, opts), info)
}

// ready answers /readyz: 200 when the store and a runtime answer (as last
// checked, at most readyFor ago) and the proxy is not shutting down; 503
// with a generic reason otherwise.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	s.mu.Lock()
	closing := s.closing
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

// sessionInfo is what the server knows of a console request and its
// session, for logs, metrics and the audit log.
type sessionInfo struct {
	id          string
	requested   time.Time
	client      client
	target      console.Target
	slot        string
	subprotocol string
	rec         *recording.Recorder // nil unless recording
	// admitted: the failure limiter counts the request as in flight
	// until its token is checked (failureLimiter.admit).
	admitted bool
}

// newSessionID returns a short random id for logs and records. It names
// a request and is no secret: it comes from the runtime's generator
// (ChaCha8, seeded by the system), with no system call.
func newSessionID() string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64())
	return hex.EncodeToString(b[:6])
}

// start runs a session, counted for Shutdown. It does not block: the
// session has no goroutine of its own while idle, and the request's
// goroutine and what net/http holds for the connection are freed.
func (s *Server) start(sess *proxy.Session, info *sessionInfo) {
	s.mu.Lock()
	if s.closing {
		// Draining: no new sessions. A cancelled context closes both sides
		// with 1001 at once.
		s.mu.Unlock()
		sess.Run(stopped)
		s.slots.release(info.slot)
		if info.rec != nil {
			info.rec.Close()
		}
		return
	}
	s.sessions.Add(1)
	s.mu.Unlock()
	s.run(sess, info)
}

// run starts a session; it ends in the callback, on whichever goroutine
// sees it end.
func (s *Server) run(sess *proxy.Session, info *sessionInfo) {
	t := info.target
	// The session's attributes are built for each line rather than kept
	// in a logger per session: an idle session should hold little.
	attrs := func(more ...slog.Attr) []slog.Attr {
		a := make([]slog.Attr, 0, 6+len(more))
		a = append(a, slog.String("session", info.id), slog.String("container", t.ContainerUUID), slog.String("kind", t.Kind.String()), slog.String("client", info.client.text))
		if t.Kind == console.Exec {
			a = append(a, slog.String("exec_id", t.ExecID))
		}
		if t.TokenID != "" {
			a = append(a, slog.String("token_id", t.TokenID))
		}
		return append(a, more...)
	}
	bg := context.Background()
	started := time.Now()
	s.opts.Metrics.SessionStarted(t.Kind.String(), started.Sub(info.requested))
	s.log.LogAttrs(bg, slog.LevelInfo, "session started", attrs(slog.String("subprotocol", info.subprotocol))...)
	done := func(res proxy.Result) {
		growStack() // on the pump's goroutine, for the lines below
		defer s.sessions.Done()
		defer s.slots.release(info.slot)
		s.mu.Lock()
		delete(s.live, sess)
		s.mu.Unlock()
		ended := time.Now()
		var recPath string
		if info.rec != nil {
			recPath = info.rec.Path()
			if err := info.rec.Close(); err != nil {
				s.log.LogAttrs(bg, slog.LevelError, "session recording incomplete", attrs(slog.String("file", recPath), slog.Any("error", err))...)
			}
		}
		s.log.LogAttrs(bg, slog.LevelInfo, "session ended", attrs(
			slog.String("duration", ended.Sub(started).Round(time.Millisecond).String()),
			slog.Int64("bytes_to_container", res.ToContainer),
			slog.Int64("bytes_to_client", res.ToClient),
			slog.Int("close_code", res.ClientCode),
			slog.String("reason", res.Reason))...)
		s.opts.Metrics.SessionEnded(t.Kind.String(), res.End, ended.Sub(started), res.ToClient, res.ToContainer)
		err := s.opts.Audit.Write(audit.Record{
			Session: info.id, Kind: t.Kind.String(), ExecID: t.ExecID,
			Container: t.ContainerUUID, Name: t.Name, RuntimeID: t.ContainerID, Host: t.Host,
			TokenID: t.TokenID, ProjectID: t.ProjectID, UserID: t.UserID,
			Client: info.client.text, Subprotocol: info.subprotocol, Start: started, End: ended,
			ToClient: res.ToClient, ToContainer: res.ToContainer, CloseCode: res.ClientCode,
			EndReason: res.End, Detail: res.Reason, Recording: recPath,
		})
		if err != nil {
			s.log.LogAttrs(bg, slog.LevelError, "audit record not written", attrs(slog.Any("error", err))...)
		}
	}
	// Registered and started under one lock, so stopSessions either sees
	// the session or has already set stopping.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		sess.Start(stopped, done)
		return
	}
	s.live[sess] = struct{}{}
	sess.Start(context.Background(), done)
}

// stopped is a cancelled context: a session started with it ends at once
// with 1001.
var stopped = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

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
func (s *Server) reject(w http.ResponseWriter, r *http.Request, info *sessionInfo, err error) {
	status, text, reason := answer(err)
	s.opts.Metrics.Refused(reason)
	w.Header().Set("X-Session-Id", info.id)
	// Only wrong tokens count: any web page can make its visitors'
	// browsers send handshakes with a foreign Origin (403), and those must
	// not lock a visitor's address, or its whole NAT, out of the CLI.
	if info.admitted {
		info.admitted = false
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
