package server

import (
	"context"
	"errors"
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Limit errors, answered 503 or 429 with Retry-After.
var (
	errTooManySessions = errors.New("too many sessions")
	errRateLimited     = errors.New("too many failed authorizations from this address")
	errBusy            = errors.New("too many handshakes from this address being checked at once")
)

// retryError carries a Retry-After for its answer.
type retryError struct {
	err   error
	after time.Duration
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// sessionSlots bounds concurrent sessions, in total and per container.
type sessionSlots struct {
	mu           sync.Mutex
	max, perKey  int // 0: no bound
	total        int
	perContainer map[string]int
}

func newSessionSlots(max, perKey int) *sessionSlots {
	return &sessionSlots{max: max, perKey: perKey, perContainer: map[string]int{}}
}

// acquire takes a slot for key, or fails when a bound is reached. The
// caller gives it back with release.
func (s *sessionSlots) acquire(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.max > 0 && s.total >= s.max {
		return &retryError{err: errTooManySessions, after: 5 * time.Second}
	}
	if s.perKey > 0 && s.perContainer[key] >= s.perKey {
		return &retryError{err: errTooManySessions, after: 5 * time.Second}
	}
	s.total++
	s.perContainer[key]++
	return nil
}

func (s *sessionSlots) setLimits(max, perKey int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.max, s.perKey = max, perKey
}

func (s *sessionSlots) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

func (s *sessionSlots) release(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.perContainer[key]--; s.perContainer[key] <= 0 {
		delete(s.perContainer, key)
	}
}

// failureLimiter counts failed authorizations (wrong tokens) per client
// in fixed windows: a client's window starts at its first failure, and
// once it has failed limit times in it, it is refused until the window
// ends. A client is an IPv4 address or an IPv6 /64 (client.key): a host
// has a /64 to itself and can send from any address in it.
//
// Its memory is fixed and each check or failure is O(1), however many
// clients fail: the table is set-associative, as a CPU cache is. A
// client's key, hashed with a secret seed, picks one set of limiterWays
// entries, with a lock of its own; a check or failure looks at that set
// only, and nothing ever walks the table. A client that fails when its
// set is full takes the place of
//
//   - an entry whose window has ended (it counts nothing any more); else
//   - the entry with the fewest failures in its window, the one that
//     failed least recently among equals.
//
// So a flood of fresh addresses, each failing once, replaces only
// clients that failed once, least recent first, never one that keeps
// failing.
//
// That is the approximation: a client with n failures is forgotten only
// when the other limiterWays-1 clients of its set each have n or more in
// their windows. An attacker who cannot see the hash, to do that to one
// client, must do it to every set: as many addresses failing n times as
// the table holds, which gains it nothing those addresses did not
// already have. Short of that, counts are exact.
type failureLimiter struct {
	conf  atomic.Pointer[limiterConf]
	now   func() time.Time
	epoch time.Time // times are kept as nanoseconds since it
	seed  maphash.Seed
	nsets int
	// sets is the table, nsets sets allocated at the first failure.
	sets  atomic.Pointer[[]limiterSet]
	alloc sync.Mutex // taken to allocate sets
}

type limiterConf struct {
	limit  int // failures allowed per window; 0: no limit
	window time.Duration
}

const (
	limiterWays = 8
	// maxTracked bounds the clients the limiter remembers, and
	// limiterMemory what they take (2,176 KiB, allocated at the first
	// failure and never more).
	maxTracked    = 1 << 16
	limiterMemory = maxTracked / limiterWays * int(unsafe.Sizeof(limiterSet{}))
)

func newFailureLimiter(limit int, window time.Duration) *failureLimiter {
	return newFailureLimiterSize(limit, window, maxTracked)
}

// newFailureLimiterSize returns a limiter that remembers up to capacity
// clients.
func newFailureLimiterSize(limit int, window time.Duration, capacity int) *failureLimiter {
	l := &failureLimiter{now: time.Now, seed: maphash.MakeSeed(), nsets: max(1, capacity/limiterWays)}
	l.epoch = l.now()
	l.setLimit(limit, window)
	return l
}

func (l *failureLimiter) setLimit(limit int, window time.Duration) {
	if window <= 0 {
		window = time.Minute
	}
	l.conf.Store(&limiterConf{limit: limit, window: window})
}

// check refuses a client that failed too often in its current window.
func (l *failureLimiter) check(client netip.Prefix) error {
	conf := l.conf.Load()
	sets := l.table(false)
	if conf.limit <= 0 || sets == nil {
		return nil
	}
	k := limiterKey(client)
	s := l.set(sets, k)
	s.mu.Lock()
	rest := s.refused(k, l.elapsed(), int64(conf.window), conf.limit)
	s.mu.Unlock()
	if rest > 0 {
		return &retryError{err: errRateLimited, after: time.Duration(rest)}
	}
	return nil
}

// admit lets a handshake go on to its token check, or refuses its client
// as check does. An admitted handshake counts against its client's limit
// while its token is checked, as if it had failed, so that handshakes
// sent at once cannot each pass before any has failed: the client's
// failures and handshakes in flight together stay within the limit. A
// handshake beyond it waits, up to admitWait, for one of them to be
// answered rather than being refused: many consoles opened at once from
// one address (a NAT, a script) are each checked in turn, and wrong
// tokens among them still get no more tries than sent one by one. At most
// admitWaiters wait in a set; one that cannot wait, or waited too long
// (a slow database), is refused 503 errBusy, not 429: no token of it was
// wrong. counted says whether the handshake is counted; the caller ends
// each counted one with done.
func (l *failureLimiter) admit(ctx context.Context, client netip.Prefix) (counted bool, err error) {
	conf := l.conf.Load()
	if conf.limit <= 0 {
		return false, nil
	}
	k := limiterKey(client)
	s := l.set(l.table(true), k)
	var waited *time.Timer
	defer func() {
		if waited != nil {
			waited.Stop()
		}
	}()
	for {
		s.mu.Lock()
		rest, busy := s.admit(k, l.elapsed(), int64(conf.window), conf.limit)
		switch {
		case !busy && rest > 0:
			s.mu.Unlock()
			return false, &retryError{err: errRateLimited, after: time.Duration(rest)}
		case !busy:
			s.mu.Unlock()
			return true, nil
		case s.waiters >= admitWaiters:
			s.mu.Unlock()
			return false, &retryError{err: errBusy, after: admitBusy}
		}
		if s.settled == nil {
			s.settled = make(chan struct{})
		}
		settled := s.settled
		s.waiters++
		s.mu.Unlock()
		if waited == nil {
			waited = time.NewTimer(admitWait)
		}
		var gaveUp bool
		select {
		case <-settled:
		case <-ctx.Done():
			gaveUp = true
		case <-waited.C:
			gaveUp = true
		}
		s.mu.Lock()
		s.waiters--
		s.mu.Unlock()
		if gaveUp {
			return false, &retryError{err: errBusy, after: admitBusy}
		}
	}
}

// done ends a handshake admit let through: failed if its token was wrong
// (counted as fail does), else it no longer counts.
func (l *failureLimiter) done(client netip.Prefix, failed bool) {
	sets := l.table(false)
	if sets == nil {
		return
	}
	conf := l.conf.Load()
	k := limiterKey(client)
	s := l.set(sets, k)
	s.mu.Lock()
	s.settle(k)
	if failed && conf.limit > 0 {
		s.fail(k, l.elapsed(), int64(conf.window))
	}
	s.mu.Unlock()
}

// fail records a failed authorization.
func (l *failureLimiter) fail(client netip.Prefix) {
	conf := l.conf.Load()
	if conf.limit <= 0 {
		return
	}
	k := limiterKey(client)
	s := l.set(l.table(true), k)
	s.mu.Lock()
	s.fail(k, l.elapsed(), int64(conf.window))
	s.mu.Unlock()
}

// table returns the sets, allocating them if create is set; else nil
// before the first failure.
func (l *failureLimiter) table(create bool) []limiterSet {
	if t := l.sets.Load(); t != nil || !create {
		if t == nil {
			return nil
		}
		return *t
	}
	l.alloc.Lock()
	defer l.alloc.Unlock()
	if l.sets.Load() == nil {
		sets := make([]limiterSet, l.nsets)
		l.sets.Store(&sets)
	}
	return *l.sets.Load()
}

func (l *failureLimiter) elapsed() int64 { return int64(l.now().Sub(l.epoch)) }

func (l *failureLimiter) set(sets []limiterSet, k clientKey) *limiterSet {
	return &sets[maphash.Comparable(l.seed, k)%uint64(len(sets))]
}

// clientKey is a client as the limiter keys it: its address as 16 bytes
// (an IPv4 one mapped, an IPv6 /64 with its low half zero, so the two
// never meet), or all ones for peers that are not IP.
type clientKey [16]byte

func limiterKey(p netip.Prefix) clientKey {
	if !p.IsValid() {
		var k clientKey
		for i := range k {
			k[i] = 0xff
		}
		return k
	}
	return p.Masked().Addr().As16()
}

// limiterSet is one set of the limiter's table.
type limiterSet struct {
	mu   sync.Mutex // guards the following
	ways [limiterWays]limiterEntry
	// clock counts the set's failures: an entry's last is its value at
	// the entry's last failure, which orders them however coarse the
	// system clock is.
	clock uint32
	// settled, made when a handshake waits, is closed when one in flight
	// in the set is answered.
	settled chan struct{}
	waiters int // handshakes waiting for settled
}

type limiterEntry struct {
	key   clientKey
	start int64  // the window's start
	fails uint32 // in the window
	// pending: handshakes admitted whose tokens are being checked. An
	// entry with neither failures nor pending handshakes is free.
	pending uint32
	last    uint32 // the set's clock at its last failure or admission
}

// inUse reports whether e holds a client.
func (e *limiterEntry) inUse() bool { return e.fails > 0 || e.pending > 0 }

// failsAt returns e's failures in its window at now: none once it ended.
func (e *limiterEntry) failsAt(now, window int64) uint32 {
	if now-e.start >= window {
		return 0
	}
	return e.fails
}

// find returns k's entry, or nil.
func (s *limiterSet) find(k clientKey) *limiterEntry {
	for i := range s.ways {
		if e := &s.ways[i]; e.inUse() && e.key == k {
			return e
		}
	}
	return nil
}

// refused returns how long k is still refused, or 0.
func (s *limiterSet) refused(k clientKey, now, window int64, limit int) int64 {
	if e := s.find(k); e != nil {
		if rest := e.start + window - now; rest > 0 && int64(e.fails) >= int64(limit) {
			return rest
		}
	}
	return 0
}

// admitWait bounds how long a handshake waits for its client's others in
// flight to be answered (each is bounded by query_timeout); admitBusy is
// the Retry-After of one that waited so long, or whose client went away.
// admitWaiters bounds the handshakes waiting in a set, so that one
// address opening thousands at once costs a bounded wake-up each time one
// is answered.
const (
	admitWait    = 5 * time.Second
	admitBusy    = time.Second
	admitWaiters = 64
)

// admit counts a handshake of k in flight and returns 0, false; or returns
// how long k is refused, if it failed limit times in its window; or busy,
// if its failures and handshakes in flight reach the limit: the handshake
// is to wait for one of them to settle.
func (s *limiterSet) admit(k clientKey, now, window int64, limit int) (rest int64, busy bool) {
	e := s.find(k)
	if e == nil {
		e = s.replace(k, now, window)
		*e = limiterEntry{key: k, start: now}
	}
	fails := e.failsAt(now, window)
	if int64(fails) >= int64(limit) {
		return e.start + window - now, false
	}
	if int64(fails)+int64(e.pending) >= int64(limit) {
		return 0, true
	}
	s.clock++
	e.pending++
	e.last = s.clock
	return 0, false
}

// settle takes one of k's handshakes in flight off its count, and wakes
// the handshakes waiting in the set.
func (s *limiterSet) settle(k clientKey) {
	if e := s.find(k); e != nil && e.pending > 0 {
		e.pending--
	}
	if s.settled != nil {
		close(s.settled)
		s.settled = nil
	}
}

// fail counts a failure of k, in its entry or in the one it replaces.
func (s *limiterSet) fail(k clientKey, now, window int64) {
	s.clock++
	if e := s.find(k); e != nil {
		if e.failsAt(now, window) == 0 {
			e.start, e.fails = now, 1
		} else if e.fails < ^uint32(0) {
			e.fails++
		}
		e.last = s.clock
		return
	}
	e := s.replace(k, now, window)
	*e = limiterEntry{key: k, start: now, fails: 1, last: s.clock}
}

// replace returns the entry a client new to the set takes: a free one, or
// one whose window ended with nothing in flight, else the one with the
// fewest failures and handshakes in flight, the least recently failing
// or admitted among equals.
func (s *limiterSet) replace(k clientKey, now, window int64) *limiterEntry {
	victim, vCount := 0, uint64(0)
	for i := range s.ways {
		e := &s.ways[i]
		count := uint64(e.failsAt(now, window)) + uint64(e.pending)
		// Clock values are compared as serial numbers: they wrap.
		if i == 0 || count < vCount || (count == vCount && int32(e.last-s.ways[victim].last) < 0) {
			victim, vCount = i, count
		}
	}
	return &s.ways[victim]
}
