package server

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/auth"
	"github.com/zun-wsproxy/zun-wsproxy/internal/bench"
	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/docker"
	"github.com/zun-wsproxy/zun-wsproxy/internal/proxy"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

var (
	soakFor       = flag.Duration("soak", 40*time.Second, "how long TestSoak runs (CI: the default; longer by hand)")
	soakParkAfter = flag.Duration("soak-park-after", 0, "TestSoak parks idle session directions after this long (0: the proxy's default); short values make parking constant")
)

// echoBackend is wsbench's Docker-attach-compatible backend (echo mode),
// restartable: a restart closes it and every connection, as dockerd dying
// does, and listens again (on another port: the resolver reads the
// current one). It keeps the restarts' times, to which the soak holds
// every session that failed.
type echoBackend struct {
	mu   sync.Mutex // guards all below
	addr string
	stop func()
	done chan error
	down []window // the restarts so far: from the halt to listening again
}

// window is a span of time.
type window struct{ from, to time.Time }

func startEchoBackend(t *testing.T) *echoBackend {
	b := &echoBackend{}
	if err := b.listen(); err != nil {
		t.Fatalf("echo backend: %v", err)
	}
	t.Cleanup(b.halt)
	return b
}

func (b *echoBackend) listen() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bench.Serve(ctx, ln) }()
	b.mu.Lock()
	b.addr, b.stop, b.done = ln.Addr().String(), cancel, done
	b.mu.Unlock()
	return nil
}

func (b *echoBackend) halt() {
	b.mu.Lock()
	stop, done := b.stop, b.done
	b.mu.Unlock()
	stop()
	<-done
}

// restart halts the backend, waits a moment (sessions asked for then are
// refused: 502) and listens again.
func (b *echoBackend) restart() error {
	w := window{from: time.Now()}
	b.halt()
	time.Sleep(100 * time.Millisecond)
	err := b.listen()
	w.to = time.Now()
	b.mu.Lock()
	b.down = append(b.down, w)
	b.mu.Unlock()
	return err
}

// Addr is where the backend listens now.
func (b *echoBackend) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

// restarts returns the restarts so far.
func (b *echoBackend) restarts() []window {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]window(nil), b.down...)
}

// soakResolver sends every token to the echo backend.
type soakResolver struct{ backend *echoBackend }

func (s soakResolver) Resolve(_ context.Context, r auth.Request) (console.Target, error) {
	return console.Target{Kind: console.Attach, ContainerUUID: r.UUID, ContainerID: r.UUID,
		URL: "ws://" + s.backend.Addr() + "/v1.26/containers/" + r.UUID + "/attach/ws?stream=1&stdin=1&stdout=1"}, nil
}

// soakOutcome is how a session of the soak went.
type soakOutcome int

const (
	soakFailed       soakOutcome = iota // counted as a failure already
	soakVerified                        // every byte echoed, in order
	soakDisconnected                    // the client left on purpose; what came back was a prefix
	soakRefused                         // the handshake failed: to be held to the restarts
	soakBroken                          // ended with 1011, what came back a prefix: to be held to the restarts
)

// soakResult is one session's outcome, with its times: the handshake's
// start, and when the session ended (refused, broken or done).
type soakResult struct {
	name         string
	outcome      soakOutcome
	status       int // of a refused handshake
	began, ended time.Time
	verified     int64 // bytes
}

// TestSoak runs 200 concurrent sessions through the proxy to a
// Docker-compatible attach backend for -soak (40s by default): random
// payloads of random sizes both ways, random client disconnects, backend
// restarts. Every byte echoed before a disconnect must arrive in order, no
// session may hang, and memory must return to its baseline. Every session
// that did not end well is accounted for by a fault the test made: a
// refused handshake (502) must overlap a restart, a session ended with
// 1011 must have been running when a restart began, and the client's own
// disconnects are the only others.
func TestSoak(t *testing.T) {
	const concurrency = 200
	backend := startEchoBackend(t)

	srv := New(Options{
		Resolver: soakResolver{backend: backend},
		// 200 handshakes at once on a busy machine take seconds; a dial
		// is a fault only when it hangs, which the sessions' 30 s tell.
		Dialer:  docker.NewDialer(docker.Options{Timeout: 20 * time.Second}),
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Engine:  engine(),
		Session: proxy.Options{IdleAfter: *soakParkAfter},
		Workers: testWorkers,
	})
	ln, err := Listen("127.0.0.1:0", ListenOptions{Workers: testWorkers})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	}()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	var failures atomic.Int64
	var failMu sync.Mutex
	var firstFailures []string
	fail := func(format string, args ...any) {
		failures.Add(1)
		failMu.Lock()
		if len(firstFailures) < 10 {
			firstFailures = append(firstFailures, fmt.Sprintf(format, args...))
		}
		failMu.Unlock()
	}
	deadline := time.Now().Add(*soakFor)
	var wg sync.WaitGroup

	// Restart the backend now and then: every session on it breaks.
	stopRestarts := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stopRestarts:
				return
			case <-time.After(*soakFor / 5):
			}
			if err := backend.restart(); err != nil {
				fail("backend restart: %v", err)
				return
			}
		}
	}()

	results := make(chan soakResult, concurrency)
	var outcomes []soakResult
	tallied := make(chan struct{})
	go func() {
		defer close(tallied)
		for r := range results {
			outcomes = append(outcomes, r)
		}
	}()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for n := 0; time.Now().Before(deadline); n++ {
				results <- soakSession(ln.Addr().String(), fmt.Sprintf("c%d-%d", w, n), rng, fail)
			}
		}(w)
	}
	wgDone := make(chan struct{})
	go func() {
		for time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		close(stopRestarts)
		wg.Wait()
		close(wgDone)
	}()
	select {
	case <-wgDone:
	case <-time.After(*soakFor + 60*time.Second):
		t.Fatal("sessions hung past the soak's end")
	}
	close(results)
	<-tallied

	// Each session that did not end well, held to the faults made.
	restarts := backend.restarts()
	var sessions, verified, disconnects, refused, broken int64
	for _, r := range outcomes {
		switch r.outcome {
		case soakRefused:
			// The proxy read the backend's address and was refused there:
			// the halt came before the refusal, the new address after the
			// handshake began.
			if r.status != http.StatusBadGateway || !slices.ContainsFunc(restarts, func(w window) bool { return !r.began.After(w.to) && !r.ended.Before(w.from) }) {
				fail("%s: handshake refused (status %d) from %s to %s, outside any backend restart",
					r.name, r.status, r.began.Format(time.StampMilli), r.ended.Format(time.StampMilli))
				continue
			}
			refused++
		case soakBroken:
			if !slices.ContainsFunc(restarts, func(w window) bool { return !w.from.Before(r.began) && !w.from.After(r.ended) }) {
				fail("%s: ended with 1011 at %s, though no backend restart began during it (from %s)",
					r.name, r.ended.Format(time.StampMilli), r.began.Format(time.StampMilli))
				continue
			}
			broken++
		case soakDisconnected:
			disconnects++
		}
		if r.outcome != soakFailed && r.outcome != soakRefused {
			sessions++
			verified += r.verified
		}
	}

	// Memory back to baseline once every session has ended.
	if !testenv.WaitFor(5*time.Second, func() bool { return srv.Sessions() == 0 }) {
		t.Errorf("%d sessions still running after every client ended", srv.Sessions())
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapInuse) - int64(before.HeapInuse)
	fmt.Printf("soak: %v, %d sessions (%d concurrent), %d bytes verified, faults injected: %d client disconnects, %d backend restarts (%d sessions broken and %d handshakes refused during them), failures: %d, heap %+d KiB after\n",
		*soakFor, sessions, concurrency, verified, disconnects, len(restarts), broken, refused, failures.Load(), grew>>10)
	if failures.Load() > 0 {
		t.Errorf("%d failures, first ones:\n%s", failures.Load(), strings.Join(firstFailures, "\n"))
	}
	if sessions < concurrency {
		t.Errorf("only %d sessions ran", sessions)
	}
	if grew > 16<<20 {
		t.Errorf("heap in use grew by %d KiB after all sessions ended", grew>>10)
	}
}

// soakStall is how long a session may make no progress before it counts
// as hung: far beyond any pause of a working proxy (a backend restart
// breaks its sessions at once).
const soakStall = 15 * time.Second

// soakSession runs one session: random payloads out, the echo in,
// compared as byte streams (the proxy may regroup bytes, never change or
// reorder them). What it cannot judge alone, a refused handshake or a
// 1011, it returns for TestSoak to hold to the restarts.
func soakSession(addr, name string, rng *mrand.Rand, fail func(string, ...any)) soakResult {
	res := soakResult{name: name, began: time.Now()}
	// A session is judged by its progress, not by a wall-clock total: on
	// a loaded machine 200 sessions share little throughput (at a load of
	// 3 under -race, about 3 MB/s in all: a session's 600 KB took over
	// 30 s), while a session the proxy stops serving makes no progress at
	// all. Its echo must advance within soakStall of its last progress,
	// and each write end within soakStall; the context only bounds the
	// whole. The handshake has 30 s: above the Docker dialer's 20 s, so
	// that a dial a restart made hang is answered (and held to the
	// restart) first.
	dial, cancelDial := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelDial()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, status, err := testenv.Open(dial, "ws://"+addr+"/?token=t&uuid="+name, &websocket.DialOptions{Subprotocols: []string{"binary"}})
	if err != nil {
		res.ended = time.Now()
		if dial.Err() != nil {
			fail("%s: handshake hung: %v", name, err)
			return res
		}
		res.outcome, res.status = soakRefused, status
		return res
	}
	conn.SetReadLimit(1 << 20)
	defer conn.CloseNow()

	var sent bytes.Buffer
	var mu sync.Mutex // guards got
	got := make([]byte, 0, 1<<16)
	readDone := make(chan error, 1)
	go func() {
		for {
			_, data, err := conn.Read(ctx)
			if err != nil {
				readDone <- err
				return
			}
			mu.Lock()
			got = append(got, data...)
			mu.Unlock()
		}
	}()
	// check compares the echo with what was sent: equal when whole, a
	// prefix otherwise.
	check := func(outcome soakOutcome, whole bool) soakResult {
		res.ended = time.Now()
		mu.Lock()
		defer mu.Unlock()
		switch {
		case len(got) > sent.Len() || !bytes.Equal(sent.Bytes()[:len(got)], got):
			fail("%s: echo differs from what was sent (%d bytes sent, %d back)", name, sent.Len(), len(got))
		case whole && len(got) != sent.Len():
			fail("%s: %d of %d bytes came back", name, len(got), sent.Len())
		default:
			res.outcome, res.verified = outcome, int64(len(got))
		}
		return res
	}
	messages := 1 + rng.IntN(20)
	cut := -1
	if rng.IntN(10) == 0 {
		cut = rng.IntN(messages) // disconnect abruptly after this message
	}
	for i := 0; i < messages; i++ {
		p := randomText(rng, 1+rng.IntN(64<<10))
		wctx, cancelWrite := context.WithTimeout(ctx, soakStall)
		err := conn.Write(wctx, websocket.MessageBinary, p)
		cancelWrite()
		if err != nil {
			break // the read below says why
		}
		sent.Write(p)
		if i == cut {
			conn.CloseNow()
			<-readDone
			return check(soakDisconnected, false)
		}
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
	}
	// Wait for the whole echo, or for the backend restarting under us.
	progress, last := time.Now(), -1
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= sent.Len() {
			break
		}
		if n != last {
			progress, last = time.Now(), n
		}
		select {
		case err := <-readDone:
			var ce websocket.CloseError
			if errors.As(err, &ce) && ce.Code == websocket.StatusInternalError && ce.Reason == "lost connection to the container" {
				return check(soakBroken, false)
			}
			fail("%s: session ended early: %v", name, err)
			return res
		case <-time.After(5 * time.Millisecond):
		}
		if stalled := time.Since(progress); stalled > soakStall || ctx.Err() != nil {
			fail("%s: echo hung: %d of %d bytes, none for %v", name, n, sent.Len(), stalled.Round(time.Second))
			return res
		}
	}
	conn.Close(websocket.StatusNormalClosure, "")
	return check(soakVerified, true)
}

// randomText is terminal-like output of about n bytes: ASCII mixed with
// 2-, 3- and 4-byte characters. (Bytes that end inside a character are
// held back until the next ones, by design; random binary would leave some
// waiting at the end of a test.)
func randomText(rng *mrand.Rand, n int) []byte {
	chars := []string{"a", "Z", "0", " ", "\n", "é", "ж", "€", "✓", "😀", "𝄞"}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(chars[rng.IntN(len(chars))])
	}
	return b.Bytes()
}
