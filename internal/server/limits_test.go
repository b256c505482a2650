package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/auth"
	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

func TestSessionSlots(t *testing.T) {
	s := newSessionSlots(3, 2)
	for i, c := range []struct {
		key string
		ok  bool
	}{{"a", true}, {"a", true}, {"a", false}, {"b", true}, {"c", false}} {
		err := s.acquire(c.key)
		if (err == nil) != c.ok {
			t.Fatalf("acquire #%d %s: %v", i, c.key, err)
		}
		if err != nil && !errors.Is(err, errTooManySessions) {
			t.Fatalf("error kind %v", err)
		}
	}
	s.release("a")
	if err := s.acquire("c"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	s.release("a")
	s.release("b")
	s.release("c")
	if s.total != 0 || len(s.perContainer) != 0 {
		t.Fatalf("leftovers %d %v", s.total, s.perContainer)
	}
}

// clientAt is a client at addr.
func clientAt(addr string) client { return client{addr: netip.MustParseAddr(addr)} }

func TestFailureLimiter(t *testing.T) {
	type step struct {
		after time.Duration // the clock moves on first
		addr  string
		fails int           // failures recorded, then a check
		want  time.Duration // the check's Retry-After; 0: allowed
	}
	cases := []struct {
		name  string
		limit int
		steps []step
	}{
		{"limited until the window ends", 3, []step{
			{0, "192.0.2.1", 2, 0},
			{0, "192.0.2.1", 1, time.Minute},
			{30 * time.Second, "192.0.2.1", 0, 30 * time.Second},
			{30 * time.Second, "192.0.2.1", 0, 0},
		}},
		{"another address is not limited", 3, []step{
			{0, "192.0.2.1", 3, time.Minute},
			{0, "192.0.2.2", 0, 0},
			{0, "2001:db8::1", 0, 0},
		}},
		{"a window starts at the first failure after the last one ended", 3, []step{
			{0, "192.0.2.1", 2, 0},
			{61 * time.Second, "192.0.2.1", 2, 0},
			{58 * time.Second, "192.0.2.1", 1, 2 * time.Second},
		}},
		{"failures in earlier windows do not add up", 3, []step{
			{0, "192.0.2.1", 2, 0},
			{time.Minute, "192.0.2.1", 2, 0},
			{time.Minute, "192.0.2.1", 2, 0},
		}},
		{"an IPv6 /64 is one client", 3, []step{
			{0, "2001:db8:0:1::1", 1, 0},
			{0, "2001:db8:0:1::2", 1, 0},
			{0, "2001:db8:0:1:ffff:ffff:ffff:ffff", 1, time.Minute},
			{0, "2001:db8:0:1:abcd::9", 0, time.Minute},
			{0, "2001:db8:0:2::1", 0, 0},
			{0, "2001:db8:1:1::1", 0, 0},
		}},
		{"an IPv4 address is one client", 3, []step{
			{0, "192.0.2.1", 3, time.Minute},
			{0, "192.0.2.0", 0, 0},
			{0, "192.0.2.255", 0, 0},
			{0, "::ffff:192.0.2.2", 0, 0},
		}},
		{"IPv4 and the IPv6 /64 around ::ffff:0:0/96 are apart", 1, []step{
			{0, "::1", 1, time.Minute},
			{0, "0.0.0.1", 0, 0},
			{0, "::2", 0, time.Minute},
		}},
		{"limit 0 is off", 0, []step{
			{0, "192.0.2.1", 100, 0},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			now := time.Unix(1000, 0)
			l := newFailureLimiter(c.limit, time.Minute)
			l.now = func() time.Time { return now }
			for i, s := range c.steps {
				now = now.Add(s.after)
				for range s.fails {
					l.fail(clientAt(s.addr).key())
				}
				err := l.check(clientAt(s.addr).key())
				var re *retryError
				switch {
				case s.want == 0 && err != nil:
					t.Fatalf("step %d (%s): %v, want allowed", i, s.addr, err)
				case s.want != 0 && (!errors.As(err, &re) || !errors.Is(err, errRateLimited)):
					t.Fatalf("step %d (%s): %v, want limited", i, s.addr, err)
				case s.want != 0 && re.after != s.want:
					t.Fatalf("step %d (%s): Retry-After %v, want %v", i, s.addr, re.after, s.want)
				}
			}
		})
	}
}

// Which client a failure in a full set replaces: one whose window
// ended, else the one with the fewest failures, the least recently
// failing among equals.
func TestLimiterSetReplacement(t *testing.T) {
	// failures: clients from to to (keys, inclusive) fail times each, at
	// second at.
	type failures struct{ from, to, times, at int }
	cases := []struct {
		name string
		do   []failures
		want map[int]uint32 // the clients remembered, with their failures
	}{
		{"a fresh client replaces the oldest single failure",
			[]failures{{1, 1, 3, 0}, {2, 2, 1, 1}, {3, 3, 1, 2}, {4, 8, 1, 3}, {9, 10, 1, 4}},
			map[int]uint32{1: 3, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1}},
		{"a client that keeps failing outlasts a flood",
			[]failures{{1, 1, 2, 0}, {2, 1000, 1, 1}, {1, 1, 1, 2}},
			map[int]uint32{1: 3, 994: 1, 995: 1, 996: 1, 997: 1, 998: 1, 999: 1, 1000: 1}},
		{"the least recently failing among equals, however coarse the clock",
			[]failures{{1, 8, 1, 0}, {8, 8, 1, 0}, {7, 7, 1, 0}, {6, 6, 1, 0}, {5, 5, 1, 0}, {4, 4, 1, 0}, {3, 3, 1, 0}, {2, 2, 1, 0}, {1, 1, 1, 0}, {9, 9, 1, 0}},
			map[int]uint32{1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 2, 9: 1}},
		{"ended windows go first",
			[]failures{{1, 7, 5, 0}, {8, 8, 5, 30}, {9, 9, 1, 61}},
			map[int]uint32{8: 5, 9: 1}},
		{"else the fewest failures",
			[]failures{{1, 1, 1, 0}, {2, 8, 2, 0}, {9, 9, 1, 1}},
			map[int]uint32{2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 2, 8: 2, 9: 1}},
	}
	window := int64(time.Minute)
	key := func(i int) clientKey { return clientKey{14: byte(i >> 8), 15: byte(i)} }
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var s limiterSet
			var now int64
			for _, f := range c.do {
				now = int64(f.at) * int64(time.Second)
				for k := f.from; k <= f.to; k++ {
					for range f.times {
						s.fail(key(k), now, window)
					}
				}
			}
			got := map[int]uint32{}
			for _, e := range s.ways {
				if e.fails > 0 && now-e.start < window {
					got[int(e.key[14])<<8|int(e.key[15])] = e.fails
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("remembered %v, want %v", got, c.want)
			}
		})
	}
}

// floodAddr is the i-th address of a flood, each in a /64 of its own.
func floodAddr(i int) string { return floodClient(i).addr.String() }

func floodClient(i int) client {
	a := [16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i), 15: 1}
	return client{addr: netip.AddrFrom16(a)}
}

// A flood of fresh addresses costs the same at each address however
// many came before, stays within the limiter's memory bound, and pushes
// out none of the addresses that keep failing: an attacker inside the
// flood is limited after exactly its limit of failures.
func TestFailureLimiterFlood(t *testing.T) {
	const flood = 200_000
	now := time.Unix(1000, 0)
	l := newFailureLimiter(20, time.Minute)
	l.now = func() time.Time { return now }
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	n := 0
	// One handshake of the flood: a check, then its failure.
	fresh := func(count int) {
		for range count {
			k := floodClient(n).key()
			n++
			if err := l.check(k); err != nil {
				t.Fatalf("fresh address %s: %v", floodAddr(n-1), err)
			}
			l.fail(k)
			if n%1000 == 0 && time.Since(start) > 20*time.Second {
				t.Fatalf("%d fresh addresses took %v: each costs more the more there are", n, time.Since(start))
			}
		}
	}
	attacker := func(addr string, fails int, between int) {
		t.Helper()
		for i := range fails {
			if err := l.check(clientAt(addr).key()); err != nil {
				t.Fatalf("%s limited before its failure %d of %d: %v", addr, i+1, fails, err)
			}
			l.fail(clientAt(addr).key())
			fresh(between)
		}
	}
	// An attacker who failed twice before the flood, one who starts once
	// the limiter holds as many addresses as it can, and one inside an
	// IPv6 /64 who changes address at every try.
	attacker("192.0.2.1", 2, 0)
	fresh(flood / 2)
	attacker("192.0.2.1", 18, 1000)
	attacker("198.51.100.7", 20, 1000)
	for i := range 20 {
		attacker(fmt.Sprintf("2001:db8:ffff:1::%x", i+1), 1, 1000)
	}
	fresh(flood - n)
	for _, a := range []string{"192.0.2.1", "198.51.100.7", "2001:db8:ffff:1::99"} {
		if err := l.check(clientAt(a).key()); !errors.Is(err, errRateLimited) {
			t.Errorf("%s after its 20 failures during a flood of %d addresses: %v, want limited", a, n, err)
		}
	}
	t.Logf("%d fresh addresses in %v", n, time.Since(start))
	if got := l.tracked(); got > maxTracked {
		t.Errorf("%d clients tracked, past the bound of %d", got, maxTracked)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew %d KiB for %d addresses", grown>>10, n)
	// The slack is for what else the process allocates meanwhile.
	if grown > int64(limiterMemory)+256<<10 {
		t.Errorf("heap grew %d KiB, past the limiter's bound of %d KiB", grown>>10, limiterMemory>>10)
	}
	runtime.KeepAlive(l)
}

// Only token failures count: a web page can make its visitor's browser
// send handshakes with its own Origin, and those must not lock the
// visitor's address (or its whole NAT) out of the CLI. Wrong tokens still
// do.
func TestOriginRefusalsDoNotLockOut(t *testing.T) {
	_, url := serveShell(t, "originlimit", func(o *Options, _ *ListenOptions) {
		o.AuthFailureLimit, o.AuthFailureWindow = 3, time.Minute
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func(url string, header http.Header) (*websocket.Conn, int) {
		t.Helper()
		conn, status, err := testenv.Open(ctx, url, &websocket.DialOptions{HTTPHeader: header, Subprotocols: []string{"binary"}})
		if status == 0 {
			t.Fatalf("dial: %v", err)
		}
		return conn, status
	}
	evil := http.Header{"Origin": {"http://evil.example"}}
	var got []int
	for range 20 {
		_, code := dial(url, evil)
		got = append(got, code)
	}
	conn, code := dial(url, nil)
	got = append(got, code)
	if want := strings.Repeat("403 ", 20) + "101"; strings.Trim(fmt.Sprint(got), "[]") != want {
		t.Fatalf("20 bad-Origin handshakes, then the CLI: %v, want %s", got, want)
	}
	testenv.Echo(t, conn, "ok") // the CLI session after bad-Origin handshakes
	conn.Close(websocket.StatusNormalClosure, "")

	wrong := strings.Replace(url, "token=", "token=wrong", 1)
	got = nil
	for range 4 {
		_, code := dial(wrong, nil)
		got = append(got, code)
	}
	if fmt.Sprint(got) != "[401 401 401 429]" {
		t.Errorf("4 wrong tokens: %v, want [401 401 401 429]", got)
	}
}

// tracked counts the clients remembered.
func (l *failureLimiter) tracked() int {
	n := 0
	sets := l.table(false)
	for i := range sets {
		s := &sets[i]
		s.mu.Lock()
		for _, e := range s.ways {
			if e.fails > 0 {
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// Each check and failure costs the same however many clients the
// limiter holds: the table is full and every failure is a fresh client
// that replaces one.
func BenchmarkFailureLimiter(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("tracked=%d", n), func(b *testing.B) {
			l := newFailureLimiterSize(20, time.Minute, n)
			for i := range n {
				l.fail(floodClient(i).key())
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				k := floodClient(n + i).key()
				l.check(k)
				l.fail(k)
			}
		})
	}
}

// gatedResolver holds every Resolve until release is closed, telling
// entered of each: handshakes it holds are all in flight at once.
type gatedResolver struct {
	Resolver
	entered chan struct{}
	release chan struct{}
}

func (g gatedResolver) Resolve(ctx context.Context, r auth.Request) (console.Target, error) {
	g.entered <- struct{}{}
	<-g.release
	return g.Resolver.Resolve(ctx, r)
}

// concurrentHandshakes sends n handshakes at once from one address to a
// server whose failure limit is limit, each with url's token made wrong
// or not, lets limit of them reach the token check before any is
// answered, and returns the answers' statuses.
func concurrentHandshakes(t *testing.T, name string, n, limit int, wrong bool) (map[int]int, string) {
	gate := gatedResolver{entered: make(chan struct{}, n), release: make(chan struct{})}
	_, url := serveShell(t, name, func(o *Options, _ *ListenOptions) {
		o.AuthFailureLimit, o.AuthFailureWindow = limit, time.Minute
		gate.Resolver = o.Resolver
		o.Resolver = gate
	})
	if wrong {
		url = strings.Replace(url, "token=", "token=wrong", 1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	codes := make(chan int, n)
	for range n {
		go func() {
			c, status, _ := testenv.Open(ctx, url, &websocket.DialOptions{Subprotocols: []string{"binary"}})
			if c != nil {
				c.CloseNow()
			}
			codes <- status
		}()
	}
	// limit handshakes reach the token check; none is answered first.
	for range limit {
		select {
		case <-gate.entered:
		case c := <-codes:
			t.Fatalf("a handshake answered %d before any token was checked", c)
		case <-ctx.Done():
			t.Fatal("handshakes did not reach the token check")
		}
	}
	close(gate.release)
	got := map[int]int{}
	for range n {
		select {
		case c := <-codes:
			got[c]++
		case <-ctx.Done():
			t.Fatalf("handshakes not answered: %v", got)
		}
	}
	if entered := limit + len(gate.entered); entered > n {
		t.Fatalf("%d token checks for %d handshakes", entered, n)
	}
	return got, url
}

// Wrong tokens sent at once from one address are held to the limit too:
// each handshake counts against it from before its token is checked, not
// only once the check has failed.
func TestFailureLimitHoldsForConcurrentHandshakes(t *testing.T) {
	const limit, n = 3, 16
	got, wrong := concurrentHandshakes(t, "concurrentlimit", n, limit, true)
	if want := map[int]int{401: limit, 429: n - limit}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%d wrong tokens at once with a limit of %d: answers %v, want %v", n, limit, got, want)
	}
	// Once they are answered, the address stays limited.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, status, _ := testenv.Open(ctx, wrong, nil); status != http.StatusTooManyRequests {
		t.Errorf("a wrong token after them: %d, want 429", status)
	}
}

// Many consoles opened at once from one address with right tokens all
// open: those beyond the limit wait for the others' token checks rather
// than being refused.
func TestConcurrentHandshakesFromOneAddressOpen(t *testing.T) {
	const limit, n = 3, 16
	got, _ := concurrentHandshakes(t, "concurrentopen", n, limit, false)
	if want := map[int]int{101: n}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%d right tokens at once with a limit of %d: answers %v, want %v", n, limit, got, want)
	}
}

// A handshake admitted while the limit is off is not counted, so that its
// end takes nothing off another's count once a reload turns the limit on.
func TestAdmitUncountedWhileOff(t *testing.T) {
	l := newFailureLimiter(0, time.Minute)
	client := netip.MustParsePrefix("192.0.2.1/32")
	if counted, err := l.admit(context.Background(), client); counted || err != nil {
		t.Fatalf("limit off: counted %v, %v; want not counted", counted, err)
	}
	l.setLimit(1, time.Minute)
	if counted, err := l.admit(context.Background(), client); !counted || err != nil {
		t.Fatalf("limit 1: counted %v, %v; want counted", counted, err)
	}
	// The first handshake ends uncounted (no done); the second still
	// holds the only place: a third must wait, and gives up with 503.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.admit(ctx, client); !errors.Is(err, errBusy) {
		t.Fatalf("a third while the second is in flight: %v, want errBusy", err)
	}
}

// At most admitWaiters handshakes wait in a set; others are refused with
// errBusy at once. A waiter is let in when a handshake in flight ends, and
// one whose client goes away gives up with errBusy.
func TestAdmitWaitersBounded(t *testing.T) {
	l := newFailureLimiterSize(1, time.Minute, limiterWays) // one set
	client := netip.MustParsePrefix("192.0.2.1/32")
	if counted, err := l.admit(context.Background(), client); !counted || err != nil {
		t.Fatalf("first: %v, %v", counted, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := make(chan error, admitWaiters)
	for range admitWaiters {
		go func() {
			counted, err := l.admit(ctx, client)
			if counted {
				l.done(client, false)
			}
			results <- err
		}()
	}
	s := &l.table(false)[0]
	if !testenv.WaitFor(10*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.waiters == admitWaiters
	}) {
		t.Fatalf("%d handshakes not all waiting", admitWaiters)
	}
	if _, err := l.admit(context.Background(), client); !errors.Is(err, errBusy) {
		t.Fatalf("one more than %d waiting: %v, want errBusy at once", admitWaiters, err)
	}
	// The first ends: the waiters go in one at a time, each ending at once.
	l.done(client, false)
	for range admitWaiters {
		if err := <-results; err != nil {
			t.Fatalf("a waiter: %v, want admitted", err)
		}
	}
	// One waiting for a handshake that does not end gives up when its
	// client goes.
	if counted, err := l.admit(context.Background(), client); !counted || err != nil {
		t.Fatalf("again: %v, %v", counted, err)
	}
	go func() {
		_, err := l.admit(ctx, client)
		results <- err
	}()
	if !testenv.WaitFor(10*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.waiters == 1
	}) {
		t.Fatal("the handshake is not waiting")
	}
	cancel()
	if err := <-results; !errors.Is(err, errBusy) {
		t.Fatalf("a waiter whose client went: %v, want errBusy", err)
	}
}
