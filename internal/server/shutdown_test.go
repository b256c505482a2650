package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/audit"
	"github.com/zun-wsproxy/zun-wsproxy/internal/auth"
	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/docker"
	"github.com/zun-wsproxy/zun-wsproxy/internal/recording"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// Shutdown racing handshakes: whatever the interleaving (a handshake
// before the drain, during it, between its upgrade and its session's
// start, while the sessions are being ended), every session that was
// upgraded has exactly one audit record and a finished recording by the
// time Shutdown returns, and nothing is left behind: no slot, no open
// recording, no goroutine.
func TestShutdownRacesHandshakes(t *testing.T) {
	const (
		iterations = 40
		clients    = 6
	)
	backend := startEchoBackend(t)
	dialer := docker.NewDialer(docker.Options{Timeout: 10 * time.Second})
	rng := mrand.New(mrand.NewPCG(1, 2))
	baseG := -1
	for it := range iterations {
		dir := t.TempDir()
		recDir := filepath.Join(dir, "recordings")
		auditPath := filepath.Join(dir, "audit.log")
		auditLog, err := audit.Open(auditPath)
		if err != nil {
			t.Fatal(err)
		}
		srv := New(Options{
			Resolver:     soakResolver{backend: backend},
			Dialer:       dialer,
			Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
			Engine:       engine(),
			Audit:        auditLog,
			RecordingDir: recDir,
		})
		ln, err := Listen("127.0.0.1:0", ListenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		u := &neturl.URL{Scheme: "ws", Host: ln.Addr().String(), Path: "/", RawQuery: "token=t&uuid=race"}

		// Clients open sessions one after another until the proxy stops
		// answering; each session is read until the proxy closes it.
		var upgraded, goingAway atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					conn, err := net.Dial("tcp", u.Host)
					if err != nil {
						return // not listening any more
					}
					conn.SetDeadline(time.Now().Add(20 * time.Second))
					rest, err := websocket.ClientHandshake(conn, u, http.Header{"Sec-WebSocket-Protocol": {"binary"}})
					if err != nil {
						conn.Close()
						continue // refused, or cut off by the shutdown
					}
					upgraded.Add(1)
					if code := readToClose(conn, rest); code == websocket.CloseGoingAway {
						goingAway.Add(1)
					}
					conn.Close()
				}
			}()
		}
		// Let a few sessions start, then shut down with a short drain, so
		// that handshakes land before, during and after it.
		if !testenv.WaitFor(10*time.Second, func() bool { return upgraded.Load() >= clients/2 }) {
			t.Fatalf("iteration %d: only %d sessions upgraded", it, upgraded.Load())
		}
		drain, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(3000))*time.Microsecond)
		srv.Shutdown(drain)
		cancel()
		// What Shutdown's caller sees when it returns (main exits then).
		records, openRecordings, slots := auditLines(t, auditPath), openFilesUnder(t, recDir), srv.Sessions()
		if err := <-served; err != nil {
			t.Fatalf("iteration %d: Serve: %v", it, err)
		}
		close(stop)
		wg.Wait()
		auditLog.Close()

		if n := upgraded.Load(); int64(len(records)) != n || goingAway.Load() != n {
			t.Fatalf("iteration %d: %d sessions upgraded, %d closed with 1001, %d audit records when Shutdown returned", it, n, goingAway.Load(), len(records))
		}
		if len(openRecordings) > 0 {
			t.Fatalf("iteration %d: recordings still open after Shutdown: %v", it, openRecordings)
		}
		if slots != 0 {
			t.Fatalf("iteration %d: %d session slots held after Shutdown", it, slots)
		}
		seen := map[string]bool{}
		for _, r := range records {
			if seen[r.Session] {
				t.Fatalf("iteration %d: two audit records for session %s", it, r.Session)
			}
			seen[r.Session] = true
			if _, _, err := recording.ReadFile(r.Recording); err != nil {
				t.Fatalf("iteration %d: session %s's recording: %v", it, r.Session, err)
			}
		}
		casts, _ := filepath.Glob(filepath.Join(recDir, "*.cast"))
		if len(casts) != len(records) {
			t.Fatalf("iteration %d: %d recordings for %d audit records", it, len(casts), len(records))
		}
		if baseG < 0 {
			baseG = countGoroutines(0) // after the first: pools warmed up
		} else if g := countGoroutines(baseG); g > baseG {
			t.Fatalf("iteration %d: %d goroutines, %d after the first", it, g, baseG)
		}
	}
}

// readToClose reads a session as a client does until the proxy's close
// frame, answers it, and returns its code (0 if the connection ended
// without one).
func readToClose(conn net.Conn, buffered []byte) int {
	r, w := websocket.NewReader(conn, websocket.ReaderOptions{Buffered: buffered}), websocket.NewWriter(conn, true)
	var ctrl [125]byte
	for {
		h, err := r.NextFrame()
		if err != nil {
			return 0
		}
		if h.Op != websocket.OpClose {
			if _, err := io.Copy(io.Discard, r); err != nil {
				return 0
			}
			continue
		}
		p, err := r.ReadControl(ctrl[:])
		if err != nil {
			return 0
		}
		code, _, err := websocket.ParseClosePayload(p)
		if err != nil {
			return 0
		}
		w.WriteClose(code, "")
		io.Copy(io.Discard, conn) // until the proxy closes it
		return code
	}
}

// auditLines reads an audit log's records.
func auditLines(t *testing.T, path string) []audit.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []audit.Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit record %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// openFilesUnder lists the files under dir this process has open.
func openFilesUnder(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var open []string
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
			open = append(open, fmt.Sprintf("fd %s: %s", e.Name(), filepath.Base(target)))
		}
	}
	return open
}

// Once Shutdown has returned, a request that reaches admission is refused
// (503): no session starts that Shutdown would not have waited for.
func TestNoSessionAdmittedAfterShutdown(t *testing.T) {
	dialed := false
	srv := New(Options{
		Resolver: resolverFunc(func(context.Context, auth.Request) (console.Target, error) {
			return console.Target{Kind: console.Attach, ContainerUUID: "u", ContainerID: "c"}, nil
		}),
		Dialer: dialerFunc(func(context.Context, console.Target) (console.Stream, error) {
			dialed = true
			return console.Stream{}, errors.New("not to be dialled")
		}),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/?token=t&uuid=u", nil)
	testenv.UpgradeHeaders(r.Header)
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, r)
	if body := w.Body.String(); w.Code != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") || dialed {
		t.Fatalf("after Shutdown: %d %q (dialled: %v), want 503 shutting down and no dial", w.Code, body, dialed)
	}
	if n := srv.Sessions(); n != 0 {
		t.Fatalf("%d session slots held", n)
	}
}
