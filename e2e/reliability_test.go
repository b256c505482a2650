package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// closeOf reads until the session ends and returns the close it got and
// how long that took.
func closeOf(t *testing.T, conn *websocket.Conn) (websocket.CloseError, time.Duration) {
	t.Helper()
	start := time.Now()
	ce, _ := testenv.ReadToClose(ctxTimeout(t, 30*time.Second), t, conn)
	return ce, time.Since(start)
}

// SIGTERM closes the port, to health checks too. The running session
// goes on for shutdown_timeout, not less, and is then closed with 1001;
// the process exits within a close handshake's bound (1 s) after that.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	s := newDeployment(t)
	const drain = 3 * time.Second
	p := startProxy(t, baseConf(s.db), fmt.Sprintf("[websocket_proxy]\nshutdown_timeout = %v\n", drain.Seconds()))
	c := s.attachable(t, "sh")
	conn := attach(t, p, c)
	testenv.Echo(t, conn, "before")
	sigterm := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.logs.WaitLine(t, "shutting down", settle)
	// No new connections, a health check's neither: HAProxy's GET /readyz
	// fails from then on. The running session goes on. (The port closes
	// right after that line is logged; a second is plenty.)
	if !testenv.WaitFor(time.Second, func() bool { return !accepts(p.addr()) }) {
		t.Error("the proxy still accepts connections while draining")
	}
	if resp, err := http.Get("http://" + p.addr() + "/readyz"); err == nil {
		resp.Body.Close()
		t.Errorf("/readyz while draining: %d, want no answer (the port is closed)", resp.StatusCode)
	}
	testenv.Echo(t, conn, "draining")
	ce, _ := closeOf(t, conn)
	closed := time.Since(sigterm)
	if ce.Code != websocket.StatusGoingAway || ce.Reason != "proxy shutting down" {
		t.Fatalf("at the end of the drain: %v", ce)
	}
	if closed < drain {
		t.Errorf("the session was closed %v after SIGTERM, before shutdown_timeout (%v)", closed, drain)
	}
	t.Logf("closed %v after SIGTERM", closed.Round(100*time.Millisecond))
	// shutdown_timeout, the close handshake's bound, and 2 s for a busy
	// machine.
	bound := drain + time.Second + 2*time.Second
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
		if exited := time.Since(sigterm); exited > bound {
			t.Errorf("exited %v after SIGTERM, want within %v", exited, bound)
		}
	case <-time.After(time.Until(sigterm.Add(bound))):
		t.Fatalf("the proxy had not exited %v after SIGTERM (shutdown_timeout %v)", bound, drain)
	}
}

func TestSecondSignalClosesAtOnce(t *testing.T) {
	t.Parallel()
	s := newDeployment(t)
	p := startProxy(t, baseConf(s.db), "[websocket_proxy]\nshutdown_timeout = 120\n")
	c := s.attachable(t, "sh")
	conn := attach(t, p, c)
	testenv.Echo(t, conn, "up")
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.logs.WaitLine(t, "shutting down", settle)
	p.cmd.Process.Signal(syscall.SIGINT)
	// At once: long before shutdown_timeout (120 s).
	ce, after := closeOf(t, conn)
	if ce.Code != websocket.StatusGoingAway || after > settle {
		t.Fatalf("after a second signal: %v after %v", ce, after)
	}
}

func TestHealthEndpoints(t *testing.T) {
	t.Parallel()
	s := newSession(t)
	get := func(addr, path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(s.proxy.addr(), "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(s.proxy.addr(), "/readyz"); code != 200 {
		t.Errorf("/readyz: %d %q", code, body)
	}
	// Database down: alive, not ready.
	p := startProxy(t, baseConf(nil), "")
	if code, _ := get(p.addr(), "/healthz"); code != 200 {
		t.Errorf("/healthz with the database down: %d", code)
	}
	if code, body := get(p.addr(), "/readyz"); code != 503 || !strings.Contains(body, "store") || strings.Contains(body, "127.0.0.1") {
		t.Errorf("/readyz with the database down: %d %q", code, body)
	}
	// Runtime down.
	p = startProxy(t, baseConf(s.db), "[docker]\ndocker_remote_api_port = 1\n")
	if code, body := get(p.addr(), "/readyz"); code != 503 || !strings.Contains(body, "runtime") {
		t.Errorf("/readyz with the runtime down: %d %q", code, body)
	}
}

// Faults between the proxy and Docker: a frozen network is found by the
// heartbeat, a dead daemon at once (by the read that fails, not by a
// heartbeat); the client learns why, and a session beside it is
// untouched.
func TestRuntimeFaults(t *testing.T) {
	s := newDeployment(t)
	const heartbeat = time.Second
	p := startProxy(t, baseConf(s.db), fmt.Sprintf("[websocket_proxy]\nheartbeat = %v\n", heartbeat.Seconds()))
	bystander := s.attachable(t, "sh")
	ctx := ctxTimeout(t, 60*time.Second)
	other := open(ctx, t, p.url(bystander.Token, bystander.UUID, ""), nil)
	// The bystander reads all the time, as real clients do (and so answers
	// the proxy's pings).
	seen := make(chan string, 64)
	go func() {
		var all strings.Builder
		for {
			_, data, err := other.Read(ctx)
			if err != nil {
				close(seen)
				return
			}
			all.Write(data)
			seen <- all.String()
		}
	}()
	bystanderEcho := func(t *testing.T, word string) {
		t.Helper()
		other.Write(ctx, websocket.MessageBinary, []byte("echo "+word+"-$((6*7))\n"))
		for text := range seen {
			if strings.Contains(text, word+"-42") {
				return
			}
		}
		t.Fatalf("the bystander session ended while waiting for %s", word)
	}

	for _, fault := range []string{"freeze", "cut"} {
		t.Run(fault, func(t *testing.T) {
			fwd := testenv.NewForwarder(t, testenv.DockerAddr)
			p.relayThrough(fwd)
			id := s.docker.Run("sh")
			c := s.db.InsertContainer(t, testenv.Container{DockerID: id, Token: testenv.NewUUID(),
				WebsocketURL: strings.Replace(testenv.AttachURL(id), testenv.DockerAddr, fwd.Addr, 1)})
			conn := attach(t, p, c)
			testenv.Echo(t, conn, "pre-"+fault)
			if fault == "freeze" {
				fwd.Freeze()
			} else {
				fwd.Cut()
			}
			ce, after := closeOf(t, conn)
			if ce.Code != websocket.StatusInternalError || ce.Reason != "lost connection to the container" {
				t.Fatalf("client got %v", ce)
			}
			line := p.sessionEnded(t, `container=`+c.UUID)
			byHeartbeat := strings.Contains(line, "no answer to pings for two heartbeat intervals")
			t.Logf("%s: client told after %v: %s", fault, after.Round(10*time.Millisecond), line)
			switch {
			case fault == "freeze" && !byHeartbeat:
				t.Fatalf("a frozen network was not found by the heartbeat: %s", line)
			case fault == "cut" && byHeartbeat:
				t.Fatalf("a dead daemon was found by the heartbeat, not at once: %s", line)
			}
			// The heartbeat finds a silent peer after two intervals, at
			// the next check (at most every second, or half an interval
			// when that is shorter); 2 s more for a busy machine.
			if bound := 2*heartbeat + max(heartbeat/2, time.Second) + 2*time.Second; fault == "freeze" && after > bound {
				t.Fatalf("told after %v, want within %v", after, bound)
			}
			bystanderEcho(t, "bystander-"+fault)
			// The proxy closed the faulted session's Docker side as it
			// ended: only the bystander's is left.
			if d, _ := p.conns(t); d != 1 {
				t.Errorf("%d connections to Docker, want the bystander's only", d)
			}
		})
	}
}

// With the database unreachable, new sessions get 503 quickly while
// running sessions go on; when it is back, new sessions work again.
func TestDatabaseFaults(t *testing.T) {
	db := testenv.NewZunDB(t, "dbfault")
	d := testenv.NewDocker(t)
	fwd := testenv.NewForwarder(t, testenv.MySQLAddr)
	conf := strings.Replace(baseConf(db), testenv.MySQLAddr, fwd.Addr, 1)
	p := startProxy(t, conf, "")
	mk := func() testenv.Container {
		return db.InsertContainer(t, testenv.Container{DockerID: d.Run("sh"), Token: testenv.NewUUID()})
	}
	running, next, later := mk(), mk(), mk()
	ctx := ctxTimeout(t, 60*time.Second)
	conn := attach(t, p, running)
	testenv.Echo(t, conn, "db-up")

	fwd.Cut()
	start := time.Now()
	status, _, _ := handshake(t, p.addr(), "/?token="+next.Token+"&uuid="+next.UUID, nil)
	// query_timeout bounds the lookup; 2 s more for a busy machine.
	if took := time.Since(start); status != 503 || took > queryTimeout+2*time.Second {
		t.Fatalf("with the database cut: %d after %v, want 503 within query_timeout (%v)", status, took, queryTimeout)
	}
	testenv.Echo(t, conn, "db-down") // the running session does not need the database

	fwd.Restore()
	var c2 *websocket.Conn
	var err error
	if !testenv.WaitFor(settle, func() bool {
		c2, _, err = testenv.Open(ctx, p.url(later.Token, later.UUID, ""), dialOptions(nil))
		return err == nil
	}) {
		t.Fatalf("after the database came back: %v", err)
	}
	testenv.Echo(t, c2, "db-back")
	c2.Close(websocket.StatusNormalClosure, "")
	conn.Close(websocket.StatusNormalClosure, "")
	p.waitNoSessions(t)
}

// A database that hangs (it accepts connections and never answers) gets
// the same 503 within query_timeout as one that is down, for each of many
// requests at once, and it never holds more connections than the pool's
// bound (max_pool_size + max_overflow); once the requests are answered,
// no connection to it is left open.
func TestDatabaseHangs(t *testing.T) {
	t.Parallel()
	hung := testenv.NewBlackhole(t, "127.0.0.1:0")
	const pool, overflow, requests = 2, 1, 20
	// A short query_timeout: after the requests, the pool goes on opening
	// the connections they asked for, one at a time, each given up after
	// query_timeout, before the last one closes.
	const queryTimeout = time.Second
	conf := strings.Replace(baseConf(nil), "127.0.0.1:1", hung.Addr, 1)
	p := startProxy(t, conf, fmt.Sprintf("[database]\nmax_pool_size = %d\nmax_overflow = %d\nquery_timeout = %v\n", pool, overflow, queryTimeout.Seconds()))
	type answer struct {
		status int
		took   time.Duration
	}
	answers := make(chan answer, requests)
	for range requests {
		go func() {
			start := time.Now()
			status := refusal(ctxTimeout(t, 30*time.Second), p.url("t", testenv.NewUUID(), ""), nil)
			answers <- answer{status, time.Since(start)}
		}()
	}
	// The connections the proxy holds at once, sampled while the requests
	// wait: each waits query_timeout on its connection, far longer than
	// the samples' interval.
	most := 0
	sample := time.NewTicker(10 * time.Millisecond)
	defer sample.Stop()
	for answered := 0; answered < requests; {
		select {
		case a := <-answers:
			answered++
			// query_timeout bounds each lookup; 2 s more for a busy machine.
			if a.status != 503 || a.took > queryTimeout+2*time.Second {
				t.Errorf("with the database hung: %d after %v, want 503 within query_timeout (%v)", a.status, a.took.Round(time.Millisecond), queryTimeout)
			}
		case <-sample.C:
			_, open := hung.Counts()
			most = max(most, open)
		}
	}
	accepted, _ := hung.Counts()
	t.Logf("%d requests: %d connections to the hung database, at most %d at once", requests, accepted, most)
	if most == 0 || most > pool+overflow {
		t.Errorf("%d connections to the hung database at once, want 1 to %d (max_pool_size + max_overflow)", most, pool+overflow)
	}
	var open int
	if !testenv.WaitFor(settle, func() bool { _, open = hung.Counts(); return open == 0 }) {
		t.Errorf("%d connections to the hung database still open after every request was answered", open)
	}
	if exited, err := p.exited(); exited {
		t.Fatalf("zun-wsproxy exited: %v", err)
	}
}

// The container is killed under a session: the client learns it ended.
func TestContainerKilled(t *testing.T) {
	t.Parallel()
	s := newSession(t)
	c := s.attachable(t, "sh")
	conn := attach(t, s.proxy, c)
	testenv.Echo(t, conn, "alive")
	s.docker.Kill(c.DockerID)
	ce, after := closeOf(t, conn)
	if ce.Code != websocket.StatusNormalClosure || ce.Reason != "container exited" {
		t.Fatalf("after docker kill: %v", ce)
	}
	t.Logf("client told %v after the kill", after.Round(10*time.Millisecond))
	s.proxy.waitNoSessions(t)
}

// A client that reads nothing while the container floods output: the
// proxy's memory stays bounded and the client is let go after
// write_timeout.
func TestSlowClient(t *testing.T) {
	s := newDeployment(t)
	p := startProxy(t, baseConf(s.db), "[websocket_proxy]\nwrite_timeout = 3\n")
	c := s.attachable(t, "sh")
	// A small receive buffer, set before the connection is made, keeps
	// the window the proxy may fill small: its writes stop soon, rather
	// than after megabytes.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", p.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Start `yes` in the container with one frame, then never read.
	io.WriteString(conn, testenv.Handshake("/?token="+c.Token+"&uuid="+c.UUID))
	conn.Write(testenv.Frame(0x82, []byte("yes\n"), false))
	rss := func() int {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				f := strings.Fields(l)
				n, _ := strconv.Atoi(f[1])
				return n
			}
		}
		return 0
	}
	before := rss()
	peak := before
	// write_timeout once the proxy's send buffer is full, and settle for
	// the end to follow.
	deadline := time.Now().Add(3*time.Second + settle)
	line := ""
	for time.Now().Before(deadline) && line == "" {
		time.Sleep(200 * time.Millisecond) // RSS samples
		peak = max(peak, rss())
		if ended := p.logs.Matching(`session ended.*container=` + c.UUID); len(ended) > 0 {
			line = ended[0]
		}
	}
	fmt.Printf("slow client: proxy RSS %d KiB before, %d KiB at most while `yes` ran (+%d KiB)\n", before, peak, peak-before)
	if line == "" || !strings.Contains(line, "write to client") {
		t.Fatalf("the non-reading client was not let go: %q", line)
	}
	p.waitNoSessions(t)
	// The binary is built with -race, whose shadow memory multiplies every
	// heap byte touched; unbounded buffering of `yes` for the seconds until
	// write_timeout would be gigabytes.
	if peak-before > 48<<10 {
		t.Errorf("proxy RSS grew by %d KiB for one stuck client (bound: 48 MiB under -race)", peak-before)
	}
}

// SIGHUP applies a new allowed_origins without dropping sessions.
func TestReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	s := newDeployment(t)
	args := confArgs(t, baseConf(s.db), "[websocket_proxy]\nallowed_origins = old.example\n")
	override := args[3]
	p := startProxyArgs(t, args...)
	c := s.attachable(t, "sh")
	conn := attach(t, p, c)
	newOrigin := http.Header{"Origin": {"http://new.example"}}
	if status, _, _ := handshake(t, p.addr(), "/?token="+c.Token+"&uuid="+c.UUID, newOrigin); status != 403 {
		t.Fatalf("new.example before the reload: %d", status)
	}
	os.WriteFile(override, []byte("[websocket_proxy]\nallowed_origins = new.example\n"), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.logs.WaitLine(t, `configuration reloaded.*allowed_origins=new.example`, settle)
	if status, _, _ := handshake(t, p.addr(), "/?token="+c.Token+"&uuid="+c.UUID, newOrigin); status != 101 {
		t.Fatalf("new.example after the reload: %d", status)
	}
	testenv.Echo(t, conn, "survived-reload")
	conn.Close(websocket.StatusNormalClosure, "")
	p.waitNoSessions(t)
}

// SIGHUP applies new limits and session timeouts to new sessions, and
// running sessions keep theirs; a file that does not parse is logged and
// ignored, and what was running stays; a new engine waits for a restart,
// with a warning.
func TestReloadLimitsAndTimeouts(t *testing.T) {
	t.Parallel()
	s := newDeployment(t)
	args := confArgs(t, baseConf(s.db), "[websocket_proxy]\nmax_sessions_per_container = 100\n")
	override := args[3]
	p := startProxyArgs(t, args...)
	c, other := s.attachable(t, "sh"), s.attachable(t, "sh")
	before := attach(t, p, c)
	testenv.Echo(t, before, "before-reload")
	hup := func(conf, want string) {
		t.Helper()
		if err := os.WriteFile(override, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		n := len(p.logs.Matching(want))
		p.cmd.Process.Signal(syscall.SIGHUP)
		p.logs.WaitLines(t, want, n+1, settle)
	}
	second := func() (int, string, http.Header) {
		return handshake(t, p.addr(), "/?token="+c.Token+"&uuid="+c.UUID, nil)
	}
	if status, _, _ := second(); status != 101 {
		t.Fatalf("a second session of the container before the reload: %d, want 101", status)
	}

	hup("[websocket_proxy]\nmax_sessions_per_container = 1\nidle_timeout = 1\n", `configuration reloaded`)
	// The session opened before holds the container's one slot now.
	if status, body, h := second(); status != 503 || body != "503 Service Unavailable: too many console sessions; retry later\n" || h.Get("Retry-After") == "" {
		t.Fatalf("a second session of the container after max_sessions_per_container = 1: %d %q (Retry-After %q), want 503 with Retry-After", status, body, h.Get("Retry-After"))
	}
	idle := attach(t, p, other)
	if ce, after := closeOf(t, idle); ce.Code != websocket.StatusGoingAway || ce.Reason != "session idle for idle_timeout" {
		t.Fatalf("a new session after idle_timeout = 1: %v after %v, want 1001 \"session idle for idle_timeout\"", ce, after)
	}
	// Idle for as long, the session from before the reload goes on.
	testenv.Echo(t, before, "kept-its-timeouts")

	hup("[websocket_proxy\nmax_sessions_per_container = 5\n", `configuration not reloaded; the running one stays.*override\.conf:1: invalid section header`)
	if status, _, _ := second(); status != 503 {
		t.Fatalf("after a reload of a file that does not parse: %d, want 503 (the limit of 1 stays)", status)
	}
	testenv.Echo(t, before, "after-bad-reload")

	if *engineFlag == "" {
		// The engine is the one the proxy started with; the log says so.
		hup("[websocket_proxy]\nmax_sessions_per_container = 1\nengine = goroutines\n", `engine changed: it takes effect on restart.*running=loop`)
		testenv.Echo(t, before, "after-engine-reload")
	}
}
