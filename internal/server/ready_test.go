package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/docker"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store/zunsql"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// readyProbe serves /readyz over the real MariaDB (through a forwarder the
// test can cut) and Docker engine, counting the pings each gets.
type readyProbe struct {
	addr          string
	db            *testenv.Forwarder
	store, engine atomic.Int64
}

func newReadyProbe(t *testing.T) *readyProbe {
	t.Helper()
	z := testenv.NewZunDB(t, "ready")
	p := &readyProbe{db: testenv.NewForwarder(t, testenv.MySQLAddr)}
	zdb, err := zunsql.Open(strings.Replace(z.DSN(), testenv.MySQLAddr, p.db.Addr, 1), zunsql.Options{QueryTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zdb.Close() })
	dialer := docker.NewDialer(docker.Options{APIVersion: testenv.APIVersion, Timeout: 2 * time.Second})
	t.Cleanup(dialer.CloseIdle)
	srv := New(Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		// As main wires it: the store, then the runtime.
		Ready: func(ctx context.Context) error {
			p.store.Add(1)
			if err := zdb.Ping(ctx); err != nil {
				return err
			}
			p.engine.Add(1)
			return dialer.Ping(ctx, "tcp://"+testenv.DockerAddr)
		},
	})
	ln, err := Listen("127.0.0.1:0", ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	})
	return p
}

func (p *readyProbe) get(client *http.Client) (int, error) {
	resp, err := client.Get("http://" + p.addr + "/readyz")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// A flood of /readyz on the public port costs at most one ping of the
// store and of the runtime per readiness period, not one per request; and
// readiness still follows the database within that period.
func TestReadinessFlood(t *testing.T) {
	p := newReadyProbe(t)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 200}}
	defer client.CloseIdleConnections()

	const n = 200
	start := time.Now()
	var wg sync.WaitGroup
	codes := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, err := p.get(client)
			codes <- fmt.Sprint(code, err)
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(codes)
	for c := range codes {
		if c != "200 <nil>" {
			t.Fatalf("a /readyz of the flood got %s", c)
		}
	}
	// Each period the flood spans may have one check, and one more may
	// start as the last ends.
	bound := int64(took/readyFor) + 2
	t.Logf("%d concurrent /readyz in %v: %d store pings, %d runtime pings (bound %d)",
		n, took.Round(time.Millisecond), p.store.Load(), p.engine.Load(), bound)
	if p.store.Load() > bound || p.engine.Load() > bound {
		t.Fatalf("%d /readyz pinged the store %d and the runtime %d times, want at most %d each",
			n, p.store.Load(), p.engine.Load(), bound)
	}

	// The database goes down: 503 within the period (and the ping's own
	// quick failure), without waiting for a request to stop flooding.
	p.db.Cut()
	cut := time.Now()
	var code int
	for code != http.StatusServiceUnavailable && time.Since(cut) < 10*time.Second {
		var err error
		if code, err = p.get(client); err != nil {
			t.Fatal(err)
		}
	}
	flipped := time.Since(cut)
	t.Logf("/readyz answered 503 %v after the database was cut", flipped.Round(time.Millisecond))
	if code != http.StatusServiceUnavailable || flipped > readyFor+time.Second {
		t.Fatalf("/readyz %d %v after the database was cut, want 503 within %v", code, flipped, readyFor+time.Second)
	}
	p.db.Restore()
	back := time.Now()
	for code != http.StatusOK && time.Since(back) < 10*time.Second {
		code, _ = p.get(client)
	}
	if code != http.StatusOK {
		t.Fatalf("/readyz %d after the database came back", code)
	}
}

// A waiter that gives up leaves the check running for the others, and a
// check that panics still lets its waiters go.
func TestReadinessWaiters(t *testing.T) {
	release := make(chan struct{})
	var checks atomic.Int64
	r := &readiness{check: func(context.Context) error {
		checks.Add(1)
		<-release
		panic("check failed badly")
	}}
	leader := make(chan any, 1)
	go func() {
		defer func() { leader <- recover() }()
		r.get(context.Background())
	}()
	testenv.WaitFor(5*time.Second, func() bool { return checks.Load() == 1 })
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.get(gone); err != context.Canceled {
		t.Fatalf("a waiter whose request ended: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- r.get(context.Background()) }()
	close(release)
	if v := <-leader; v == nil {
		t.Fatal("the panic did not reach the leader's caller")
	}
	if err := <-waited; err != errCheckFailed {
		t.Fatalf("a waiter of the panicked check: %v", err)
	}
	if n := checks.Load(); n != 1 {
		t.Fatalf("%d checks for three callers within the period", n)
	}
}
