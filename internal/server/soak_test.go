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
	"runtime"
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
)

var (
	soakFor       = flag.Duration("soak", 40*time.Second, "how long TestSoak runs (CI: the default; longer by hand)")
	soakParkAfter = flag.Duration("soak-park-after", 0, "TestSoak parks idle session directions after this long (0: the proxy's default); short values make parking constant")
)

// echoBackend is wsbench's Docker-attach-compatible backend (echo mode),
// restartable: stop closes it and every connection, as dockerd dying does.
type echoBackend struct {
	mu   sync.Mutex
	addr string
	stop func()
	done chan error
}

func startEchoBackend(t *testing.T, addr string) *echoBackend {
	b := &echoBackend{addr: addr}
	b.start(t)
	t.Cleanup(b.halt)
	return b
}

func (b *echoBackend) start(t *testing.T) {
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old socket may linger a moment
		if ln, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("echo backend: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bench.Serve(ctx, ln) }()
	b.mu.Lock()
	b.addr, b.stop, b.done = ln.Addr().String(), cancel, done
	b.mu.Unlock()
}

func (b *echoBackend) halt() {
	b.mu.Lock()
	stop, done := b.stop, b.done
	b.mu.Unlock()
	stop()
	<-done
}

// soakResolver sends every token to the echo backend.
type soakResolver struct{ backend func() string }

func (s soakResolver) Resolve(_ context.Context, r auth.Request) (console.Target, error) {
	return console.Target{Kind: console.Attach, ContainerUUID: r.UUID, ContainerID: r.UUID,
		URL: "ws://" + s.backend() + "/v1.26/containers/" + r.UUID + "/attach/ws?stream=1&stdin=1&stdout=1"}, nil
}

// TestSoak runs 200 concurrent sessions through the proxy to a
// Docker-compatible attach backend for -soak (40s by default): random
// payloads of random sizes both ways, random client disconnects, backend
// restarts. Every byte echoed before a disconnect must arrive in order, no
// session may hang, and memory must return to its baseline.
func TestSoak(t *testing.T) {
	const concurrency = 200
	backend := startEchoBackend(t, "127.0.0.1:0")
	var backendMu sync.Mutex
	backendAddr := func() string { backendMu.Lock(); defer backendMu.Unlock(); return backend.addr }

	srv := New(Options{
		Resolver: soakResolver{backend: backendAddr},
		Dialer:   docker.NewDialer(docker.Options{Timeout: 5 * time.Second}),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Engine:   engine(),
		Session:  proxy.Options{IdleAfter: *soakParkAfter},
	})
	ln, err := Listen("127.0.0.1:0", ListenOptions{})
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

	var sessions, verified, disconnects, restarts, broken, failures atomic.Int64
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
			backend.halt()
			time.Sleep(100 * time.Millisecond)
			backendMu.Lock()
			backend.start(t)
			backendMu.Unlock()
			restarts.Add(1)
		}
	}()

	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for n := 0; time.Now().Before(deadline); n++ {
				soakSession(ln.Addr().String(), fmt.Sprintf("c%d-%d", w, n), rng, &sessions, &verified, &disconnects, &broken, fail)
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

	// Memory back to baseline once every session has ended.
	waitUntil(func() bool { return srv.Sessions() == 0 })
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapInuse) - int64(before.HeapInuse)
	fmt.Printf("soak: %v, %d sessions (%d concurrent), %d bytes verified, faults injected: %d client disconnects, %d backend restarts (%d sessions broken by them), failures: %d, heap %+d KiB after\n",
		*soakFor, sessions.Load(), concurrency, verified.Load(), disconnects.Load(), restarts.Load(), broken.Load(), failures.Load(), grew>>10)
	if failures.Load() > 0 {
		t.Errorf("%d failures, first ones:\n%s", failures.Load(), strings.Join(firstFailures, "\n"))
	}
	if sessions.Load() < concurrency {
		t.Errorf("only %d sessions ran", sessions.Load())
	}
	if grew > 16<<20 {
		t.Errorf("heap in use grew by %d KiB after all sessions ended", grew>>10)
	}
}

func waitUntil(cond func() bool) {
	for i := 0; i < 200 && !cond(); i++ {
		time.Sleep(25 * time.Millisecond)
	}
}

// soakSession runs one session: random payloads out, the echo in,
// compared as byte streams (the proxy may regroup bytes, never change or
// reorder them).
func soakSession(addr, name string, rng *mrand.Rand, sessions, verified, disconnects, broken *atomic.Int64, fail func(string, ...any)) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+addr+"/?token=t&uuid="+name, &websocket.DialOptions{Subprotocols: []string{"binary"}})
	if err != nil {
		if ctx.Err() != nil {
			fail("%s: handshake hung: %v", name, err)
		}
		return // the backend is restarting: 502
	}
	sessions.Add(1)
	conn.SetReadLimit(1 << 20)
	defer conn.CloseNow()

	var sent bytes.Buffer
	var mu sync.Mutex
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
	messages := 1 + rng.IntN(20)
	cut := -1
	if rng.IntN(10) == 0 {
		cut = rng.IntN(messages) // disconnect abruptly after this message
	}
	for i := 0; i < messages; i++ {
		p := randomText(rng, 1+rng.IntN(64<<10))
		if err := conn.Write(ctx, websocket.MessageBinary, p); err != nil {
			break
		}
		sent.Write(p)
		if i == cut {
			disconnects.Add(1)
			conn.CloseNow()
			<-readDone
			check(name, sent.Bytes(), got, &mu, verified, fail, false)
			return
		}
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
	}
	// Wait for the whole echo, or for the backend restarting under us.
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= sent.Len() {
			break
		}
		select {
		case err := <-readDone:
			var ce websocket.CloseError
			if errors.As(err, &ce) && ce.Code == websocket.StatusInternalError {
				broken.Add(1) // a backend restart: what arrived must still be a prefix
				check(name, sent.Bytes(), got, &mu, verified, fail, false)
				return
			}
			fail("%s: session ended early: %v", name, err)
			return
		case <-time.After(5 * time.Millisecond):
		}
		if ctx.Err() != nil {
			fail("%s: echo hung: %d of %d bytes", name, n, sent.Len())
			return
		}
	}
	check(name, sent.Bytes(), got, &mu, verified, fail, true)
	conn.Close(websocket.StatusNormalClosure, "")
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

// check compares the echo with what was sent: equal when whole, a prefix
// otherwise.
func check(name string, sent, got []byte, mu *sync.Mutex, verified *atomic.Int64, fail func(string, ...any), whole bool) {
	mu.Lock()
	defer mu.Unlock()
	if len(got) > len(sent) || !bytes.Equal(sent[:len(got)], got) {
		fail("%s: echo differs from what was sent (%d bytes sent, %d back)", name, len(sent), len(got))
		return
	}
	if whole && len(got) != len(sent) {
		fail("%s: %d of %d bytes came back", name, len(got), len(sent))
		return
	}
	verified.Add(int64(len(got)))
}
