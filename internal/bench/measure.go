package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/docker"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// session is one client connection, with the proxy's own codec: the same
// client cost direct and through, and no allocation per message.
type session struct {
	conn net.Conn
	r    *websocket.Reader
	w    *websocket.Writer
}

var dialer = docker.NewDialer(docker.Options{Timeout: 10 * time.Second})

// UseTLS sets the TLS configuration of the wss:// sessions measured from
// now on (nil: the system's roots, no session cache); not while a
// measurement runs.
func UseTLS(cfg *tls.Config) {
	dialer = docker.NewDialer(docker.Options{Timeout: 10 * time.Second, TLS: cfg})
}

// uuids are the container uuids of the backend modes, for "{uuid}" in a
// proxy URL (UseUUIDs).
var uuids map[Mode]string

// UseUUIDs sets the container uuid of each backend mode that "{uuid}" in
// a proxy URL stands for, as Zun's clients name containers; not while a
// measurement runs.
func UseUUIDs(m map[Mode]string) { uuids = m }

// open connects to rawURL for a backend mode: "{mode}" in the URL is
// replaced by it and "{uuid}" by its container's uuid (a proxy URL naming
// a container per mode), else it is added as the query parameter mode
// (the backend itself).
func open(ctx context.Context, rawURL string, mode Mode) (*session, error) {
	return openWith(ctx, dialer, rawURL, mode)
}

func openWith(ctx context.Context, dialer *docker.Dialer, rawURL string, mode Mode) (*session, error) {
	target := strings.ReplaceAll(rawURL, "{mode}", string(mode))
	if strings.Contains(target, "{uuid}") {
		id, ok := uuids[mode]
		if !ok {
			return nil, fmt.Errorf("%s: no container uuid for mode %s (wsbench -uuids)", rawURL, mode)
		}
		target = strings.ReplaceAll(target, "{uuid}", id)
	}
	if target == rawURL {
		u, err := url.Parse(rawURL)
		if err != nil {
			return nil, err
		}
		q := u.Query()
		q.Set("mode", string(mode))
		u.RawQuery = q.Encode()
		target = u.String()
	}
	st, err := dialer.Dial(ctx, console.Target{Kind: console.Attach, URL: target})
	if err != nil {
		return nil, err
	}
	return &session{conn: st.Conn, r: websocket.NewReader(st.Conn, websocket.ReaderOptions{Buffered: st.Buffered}), w: websocket.NewWriter(st.Conn, true)}, nil
}

func (s *session) close() {
	s.conn.SetDeadline(time.Now().Add(time.Second))
	s.w.WriteClose(websocket.CloseNormal, "")
	s.conn.Close()
}

// readMessage reads one data message and returns its length. A message
// longer than buf is counted whole, buf overwritten from its start: a
// proxy may regroup a byte stream (Docker's output) into messages of
// other lengths than the backend's.
func (s *session) readMessage(buf []byte) (int, error) {
	total, pos := 0, 0
	for {
		h, err := s.r.NextFrame()
		if err != nil {
			return 0, err
		}
		if h.Op.IsControl() {
			if h.Op == websocket.OpClose {
				return 0, io.EOF
			}
			continue
		}
		for {
			if pos == len(buf) {
				pos = 0
			}
			n, err := s.r.Read(buf[pos:])
			total += n
			pos += n
			if err == io.EOF {
				break
			}
			if err != nil {
				return total, err
			}
		}
		if h.Fin {
			return total, nil
		}
	}
}

// Latency is round-trip time statistics.
type Latency struct {
	Sessions, Samples        int
	P50, P90, P99, P999, Max time.Duration
	Errors                   int64
	// CPU is the processor time the processes pids used from when every
	// session was open until the last round trip (not their setup).
	CPU        time.Duration
	RoundTrips int64
}

// MeasureLatency sends small messages and waits for each echo, on sessions
// concurrent sessions, samples round trips each. The round trips start
// once every session is open.
func MeasureLatency(ctx context.Context, rawURL string, sessions, samples int, pids []int) Latency {
	var mu sync.Mutex
	var all []time.Duration
	var errs, trips atomic.Int64
	var wg, opened sync.WaitGroup
	begin := make(chan struct{})
	for i := 0; i < sessions; i++ {
		wg.Add(1)
		opened.Add(1)
		go func() {
			defer wg.Done()
			s, err := open(ctx, rawURL, Echo)
			opened.Done()
			if err != nil {
				errs.Add(1)
				return
			}
			defer s.close()
			<-begin
			msg := make([]byte, websocket.MaxHeaderLen+16)
			in := make([]byte, 1024)
			rtts := make([]time.Duration, 0, samples)
			for j := 0; j < samples+samples/10; j++ {
				copy(msg[websocket.MaxHeaderLen:], "keystroke-123456")
				start := time.Now()
				if err := s.w.WriteFrame(true, websocket.OpBinary, msg, websocket.MaxHeaderLen, len(msg)); err != nil {
					errs.Add(1)
					return
				}
				for got := 0; got < 16; {
					n, err := s.readMessage(in)
					if err != nil {
						errs.Add(1)
						return
					}
					got += n
				}
				if j >= samples/10 { // the first tenth warms up
					rtts = append(rtts, time.Since(start))
				}
				trips.Add(1)
			}
			mu.Lock()
			all = append(all, rtts...)
			mu.Unlock()
		}()
	}
	opened.Wait()
	cpu := CPUTime(pids)
	close(begin)
	wg.Wait()
	l := Latency{Sessions: sessions, Samples: len(all), Errors: errs.Load(), CPU: CPUTime(pids) - cpu, RoundTrips: trips.Load()}
	if len(all) == 0 {
		return l
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) time.Duration { return all[min(len(all)-1, int(p*float64(len(all))))] }
	l.P50, l.P90, l.P99, l.P999, l.Max = pct(0.5), pct(0.9), pct(0.99), pct(0.999), all[len(all)-1]
	return l
}

// Throughput is bytes per second received by clients.
type Throughput struct {
	Sessions    int
	BytesPerSec float64
	Errors      int64
}

// MeasureThroughput counts 64 KiB messages received for d on sessions
// sessions: echo (the client sends, the backend echoes) or source (the
// backend streams, as container output does).
func MeasureThroughput(ctx context.Context, rawURL string, mode Mode, sessions int, d time.Duration) Throughput {
	var total, errs atomic.Int64
	var wg sync.WaitGroup
	stopAt := time.Now().Add(d)
	for i := 0; i < sessions; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := open(ctx, rawURL, mode)
			if err != nil {
				errs.Add(1)
				return
			}
			defer s.close()
			s.conn.SetDeadline(stopAt.Add(5 * time.Second))
			done := make(chan struct{})
			if mode == Echo {
				go func() {
					defer close(done)
					msg := make([]byte, websocket.MaxHeaderLen+64<<10)
					for time.Now().Before(stopAt) {
						if s.w.WriteFrame(true, websocket.OpBinary, msg, websocket.MaxHeaderLen, len(msg)) != nil {
							return
						}
					}
				}()
			} else {
				close(done)
			}
			in := make([]byte, 64<<10)
			for time.Now().Before(stopAt) {
				n, err := s.readMessage(in)
				if err != nil {
					errs.Add(1)
					break
				}
				total.Add(int64(n))
			}
			s.conn.Close()
			<-done
		}()
	}
	wg.Wait()
	return Throughput{Sessions: sessions, BytesPerSec: float64(total.Load()) / d.Seconds(), Errors: errs.Load()}
}

// Handshakes is sessions opened (and closed) per second.
type Handshakes struct {
	Workers int
	PerSec  float64
	Errors  int64
	// Opened sessions, and those of them over TLS whose TLS session
	// was resumed (no certificate sent, no signature made).
	Opened, Resumed int64
}

// MeasureHandshakes opens and closes sessions on workers parallel workers
// for d. urls are used round robin (single-use tokens need one each).
func MeasureHandshakes(ctx context.Context, urls []string, workers int, d time.Duration) Handshakes {
	var done, errs, resumed atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	stopAt := time.Now().Add(d)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stopAt) {
				u := urls[int(next.Add(1)-1)%len(urls)]
				s, err := open(ctx, u, Sink)
				if err != nil {
					errs.Add(1)
					continue
				}
				if tc, ok := s.conn.(*tls.Conn); ok && tc.ConnectionState().DidResume {
					resumed.Add(1)
				}
				s.close()
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	return Handshakes{Workers: workers, PerSec: float64(done.Load()) / d.Seconds(), Errors: errs.Load(), Opened: done.Load(), Resumed: resumed.Load()}
}

// Idle is the memory a process holds per idle session.
type Idle struct {
	Sessions        int
	RSSBefore       int64   // KiB
	RSSMid          int64   // KiB, after the first half
	RSSAfter        int64   // KiB
	PerSessionBytes float64 // (after - before) / sessions
	MarginalBytes   float64 // (after - mid) / sessions of the second half
	OpenSeconds     float64
	Errors          int64
}

// IdleOptions shape MeasureIdle.
type IdleOptions struct {
	// URLs are used in turn (several backends, for more ports).
	URLs []string
	// Sources are the client's source addresses, used in turn; empty: the
	// system's choice. Each loopback address has its own ephemeral ports.
	Sources []string
	// Parallel handshakes; Settle is the wait after the last one before
	// the RSS is read, for idle sessions to park.
	Parallel int
	Settle   time.Duration
}

// MeasureIdle opens n idle sessions and reports the RSS growth of the
// processes pids (the proxy; nginx's workers) per session.
func MeasureIdle(ctx context.Context, n int, pids []int, o IdleOptions) (Idle, func()) {
	rss := func() (kib int64) {
		for _, p := range pids {
			kib += RSS(p)
		}
		return kib
	}
	dialers := []*docker.Dialer{dialer}
	if len(o.Sources) > 0 {
		dialers = nil
		for _, s := range o.Sources {
			dialers = append(dialers, docker.NewDialer(docker.Options{Timeout: 30 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(s)}}))
		}
	}
	parallel := max(o.Parallel, 1)
	sessions := make([]*session, n)
	var errs atomic.Int64
	// openRange opens sessions [from, to) and returns the time it took.
	openRange := func(from, to int) time.Duration {
		start := time.Now()
		next := atomic.Int64{}
		next.Store(int64(from))
		var wg sync.WaitGroup
		for w := 0; w < parallel; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= to {
						return
					}
					s, err := openWith(ctx, dialers[i%len(dialers)], o.URLs[i%len(o.URLs)], Sink)
					if err != nil {
						errs.Add(1)
						continue
					}
					sessions[i] = s
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	// Half, then the other half: the second half's growth is the cost of
	// one more idle session, free of what the first sessions' burst left
	// behind (goroutines and buffers the runtime keeps for reuse).
	before := rss()
	opened := openRange(0, n/2)
	time.Sleep(o.Settle) // sessions park, buffers go back to pools
	mid := rss()
	firstErrs := errs.Load()
	opened += openRange(n/2, n)
	time.Sleep(o.Settle)
	after := rss()
	open := n - int(errs.Load())
	idle := Idle{Sessions: open, RSSBefore: before, RSSMid: mid, RSSAfter: after, OpenSeconds: opened.Seconds(), Errors: errs.Load()}
	if open > 0 {
		idle.PerSessionBytes = float64(after-before) * 1024 / float64(open)
	}
	if second := n - n/2 - int(errs.Load()-firstErrs); second > 0 {
		idle.MarginalBytes = float64(after-mid) * 1024 / float64(second)
	}
	return idle, func() {
		for _, s := range sessions {
			if s != nil {
				s.conn.Close()
			}
		}
	}
}

// RSS returns a process's resident set size in KiB.
func RSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			if len(f) > 1 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n
			}
		}
	}
	return 0
}

// CPUTime returns the processor time (user and system) the processes pids
// have used so far. Comparing it before and after a measurement gives what
// the work cost the proxy, whatever else the machine was doing. It reads
// each process's CPU clock (nanoseconds, every thread's time, exited ones'
// too); where that cannot be read, /proc's figure in clock ticks of 10 ms,
// too coarse for the shortest rows (a 1-session latency round costs a
// proxy 80-120 ms, and a difference of two readings is off by up to two
// ticks).
func CPUTime(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		if d, ok := processClock(pid); ok {
			total += d
			continue
		}
		total += statCPUTime(pid)
	}
	return total
}

// statCPUTime is pid's user and system time from /proc/PID/stat.
func statCPUTime(pid int) time.Duration {
	f := statFields(pid)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond
}

// statFields returns the fields of /proc/PID/stat after the command name,
// which may hold spaces: state is the first, utime and stime the 12th and
// 13th; nil if it cannot be read.
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// ContextSwitches returns how many times the threads of the processes
// pids have been switched out so far (voluntary and not, from each
// thread's /proc status; threads that have exited are not counted). Per
// unit of work it shows what CPU figures on a shared machine cannot: a
// thread woken and put back to sleep costs a switch each time.
func ContextSwitches(pids []int) int64 {
	var n int64
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid) + "/task"
		tasks, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, t := range tasks {
			b, err := os.ReadFile(dir + "/" + t.Name() + "/status")
			if err != nil {
				continue
			}
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "voluntary_ctxt_switches:") || strings.HasPrefix(l, "nonvoluntary_ctxt_switches:") {
					f := strings.Fields(l)
					v, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
					n += v
				}
			}
		}
	}
	return n
}
