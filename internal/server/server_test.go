package server

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/zun-wsproxy/zun-wsproxy/internal/auth"
	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/docker"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store/zunsql"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
	"github.com/zun-wsproxy/zun-wsproxy/internal/workers"
)

func TestMain(m *testing.M) {
	flag.Parse()
	if e := engine(); e != "loop" && e != "goroutines" {
		fmt.Fprintf(os.Stderr, "-engine %q: loop or goroutines\n", e)
		os.Exit(2)
	}
	goleak.VerifyTestMain(closingWorkers{m})
}

// closingWorkers runs the tests, then ends the pool's idle workers before
// goleak looks for goroutines left.
type closingWorkers struct{ m *testing.M }

func (c closingWorkers) Run() int {
	defer testWorkers.Close()
	return c.m.Run()
}

// testWorkers is the test servers' pool, as main's is its server's: one
// for the process.
var testWorkers = workers.New(0)

// engineFlag: -engine goroutines runs the servers' sessions on the
// goroutine engine instead of the default event loops.
var engineFlag = flag.String("engine", "loop", "the engine of every server's sessions: loop (the default) or goroutines")

// engine is the Options.Engine of the tests' servers.
func engine() string { return *engineFlag }

// newServer wires a Server as main does, against the real MariaDB and
// Docker engine, and serves it on loopback; configure may change the
// options first.
func newServer(t *testing.T, db *testenv.ZunDB, configure ...func(*Options, *ListenOptions)) (*Server, string) {
	t.Helper()
	zdb, err := zunsql.Open(db.DSN(), zunsql.Options{Workers: testWorkers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zdb.Close() })
	opts := Options{
		Resolver: auth.NewAuthorizer(zdb, auth.Options{}),
		Dialer:   docker.NewDialer(docker.Options{APIVersion: testenv.APIVersion, Timeout: 5 * time.Second}),
		Origin:   auth.OriginPolicy{BaseScheme: "ws"},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Engine:   engine(),
		Workers:  testWorkers,
	}
	lopts := ListenOptions{Workers: testWorkers}
	for _, c := range configure {
		c(&opts, &lopts)
	}
	srv := New(opts)
	ln, err := Listen("127.0.0.1:0", lopts)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	})
	return srv, ln.Addr().String()
}

// serveShell serves a Server (newServer) in front of a real container
// running a shell, in a Zun database of its own named db, and returns the
// server and the container's console URL.
func serveShell(t *testing.T, db string, configure ...func(*Options, *ListenOptions)) (*Server, string) {
	t.Helper()
	z := testenv.NewZunDB(t, db)
	d := testenv.NewDocker(t)
	srv, addr := newServer(t, z, configure...)
	c := z.InsertContainer(t, testenv.Container{DockerID: d.Run("sh"), Token: testenv.NewUUID()})
	return srv, fmt.Sprintf("ws://%s/?token=%s&uuid=%s", addr, c.Token, c.UUID)
}

// countGoroutines settles and counts goroutines, but for the pool's idle
// workers, which belong to no session.
func countGoroutines(want int) int {
	var n int
	testenv.WaitFor(3*time.Second, func() bool {
		runtime.GC()
		n = runtime.NumGoroutine() - testWorkers.Idle()
		return n <= want
	})
	return n
}

// countFDs counts this process's open file descriptors.
func countFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// Every session, however it ends, gives back its goroutines and file
// descriptors.
func TestSessionsReleaseEverything(t *testing.T) {
	_, url := serveShell(t, "server")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	session := func(end func(*websocket.Conn)) {
		t.Helper()
		conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"binary"}})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		testenv.Echo(t, conn, "ok")
		end(conn)
	}
	// Warm up pools (database connections, HTTP client) before the baseline.
	session(func(c *websocket.Conn) { c.Close(websocket.StatusNormalClosure, "") })
	baseG, baseFD := countGoroutines(0), countFDs(t)
	ends := map[string]func(*websocket.Conn){
		"close frame": func(c *websocket.Conn) { c.Close(websocket.StatusNormalClosure, "") },
		"vanish":      func(c *websocket.Conn) { c.CloseNow() },
		"going away":  func(c *websocket.Conn) { c.Close(websocket.StatusGoingAway, "tab closed") },
	}
	for name, end := range ends {
		for i := 0; i < 3; i++ {
			session(end)
			if g := countGoroutines(baseG); g > baseG {
				t.Fatalf("%s #%d: %d goroutines, baseline %d", name, i, g, baseG)
			}
			var fds int
			if !testenv.WaitFor(2*time.Second, func() bool { fds = countFDs(t); return fds <= baseFD }) {
				t.Fatalf("%s #%d: %d file descriptors, baseline %d", name, i, fds, baseFD)
			}
		}
	}
}

// stub resolvers and dialers inject faults the real components cannot
// produce on demand.
type resolverFunc func(context.Context, auth.Request) (console.Target, error)

func (f resolverFunc) Resolve(ctx context.Context, r auth.Request) (console.Target, error) {
	return f(ctx, r)
}

type dialerFunc func(context.Context, console.Target) (console.Stream, error)

func (f dialerFunc) Dial(ctx context.Context, t console.Target) (console.Stream, error) {
	return f(ctx, t)
}

func TestErrorAnswers(t *testing.T) {
	cases := []struct {
		name    string
		resolve error
		dial    error
		status  int
	}{
		{"unauthorized", fmt.Errorf("%w: wrong", auth.ErrUnauthorized), nil, 401},
		{"ambiguous", store.ErrAmbiguous, nil, 409},
		{"database down", fmt.Errorf("%w: connection refused", store.ErrUnavailable), nil, 503},
		{"runtime down", nil, errors.New("dial tcp 10.0.0.1:2375: connection refused"), 502},
		{"runtime slow", nil, fmt.Errorf("dial: %w", context.DeadlineExceeded), 504},
		{"unexpected", errors.New("boom"), nil, 500},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := New(Options{
				Resolver: resolverFunc(func(context.Context, auth.Request) (console.Target, error) {
					return console.Target{}, c.resolve
				}),
				Dialer: dialerFunc(func(context.Context, console.Target) (console.Stream, error) {
					return console.Stream{}, c.dial
				}),
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			r := httptest.NewRequest("GET", "/?token=secret-token&uuid=u", nil)
			testenv.UpgradeHeaders(r.Header)
			w := httptest.NewRecorder()
			srv.ServeHTTP(w, r)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d", w.Code, c.status)
			}
			body := w.Body.String()
			if strings.Contains(body, "secret-token") || strings.Contains(body, "10.0.0.1") {
				t.Errorf("body leaks: %q", body)
			}
			if !strings.HasPrefix(body, fmt.Sprint(c.status)) {
				t.Errorf("body %q", body)
			}
		})
	}
}

func TestSniffListener(t *testing.T) {
	certFile, keyFile, _ := testenv.SelfSignedCert(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, sslOnly := range []bool{false, true} {
		ln, err := Listen("127.0.0.1:0", ListenOptions{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, SSLOnly: sslOnly})
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "tls=%v", r.TLS != nil)
		})}
		go hs.Serve(ln)
		// A client that never sends a byte must not block others. The
		// kernel hands it to the listener only after deferAccept
		// (TCP_DEFER_ACCEPT): wait for that, so that the requests below
		// come while the listener waits for its first byte.
		idle, _ := net.Dial("tcp", ln.Addr().String())
		time.Sleep(deferAccept*time.Second + 500*time.Millisecond)
		get := func(scheme string) (string, error) {
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
			resp, err := client.Get(scheme + "://" + ln.Addr().String() + "/")
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return fmt.Sprintf("%d %s", resp.StatusCode, b), nil
		}
		if got, err := get("https"); err != nil || got != "200 tls=true" {
			t.Errorf("ssl_only=%v https: %q %v", sslOnly, got, err)
		}
		got, err := get("http")
		switch {
		case sslOnly && (err != nil || !strings.HasPrefix(got, "400 ")):
			t.Errorf("ssl_only plain http: %q %v", got, err)
		case !sslOnly && (err != nil || got != "200 tls=false"):
			t.Errorf("plain http: %q %v", got, err)
		}
		idle.Close()
		hs.Close()
		ln.Close()
	}
}

// Shutdown ends every running session with 1001 once the drain time is
// over; a session that starts while they are being ended ends at once.
func TestShutdownEndsEverySession(t *testing.T) {
	srv, url := serveShell(t, "shutdown")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open := func() *websocket.Conn {
		t.Helper()
		conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"binary"}})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		return conn
	}
	wantGoingAway := func(conn *websocket.Conn) {
		t.Helper()
		if ce, _ := testenv.ReadToClose(ctx, t, conn); ce.Code != websocket.StatusGoingAway || ce.Reason != "proxy shutting down" {
			t.Fatalf("session ended with %v, want 1001 proxy shutting down", ce)
		}
	}
	var conns []*websocket.Conn
	for i := 0; i < 5; i++ {
		conns = append(conns, open())
	}
	if !testenv.WaitFor(10*time.Second, func() bool { return srv.Sessions() == 5 }) {
		t.Fatalf("%d sessions running, want the 5 opened", srv.Sessions())
	}

	// Sessions being ended: a new one is ended too, not left running.
	srv.stopSessions()
	late := open()
	wantGoingAway(late)
	for _, conn := range conns {
		wantGoingAway(conn)
	}
	expired, cancelDrain := context.WithCancel(context.Background())
	cancelDrain()
	srv.Shutdown(expired)
	if n := srv.Sessions(); n != 0 {
		t.Fatalf("%d sessions still running after Shutdown", n)
	}
}
