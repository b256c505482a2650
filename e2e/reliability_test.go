package e2e

import (
	"errors"
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

// closeOf reads until the session ends and returns the close it got.
func closeOf(t *testing.T, conn *websocket.Conn, timeout time.Duration) (websocket.CloseError, time.Duration) {
	t.Helper()
	ctx := ctxTimeout(t, timeout)
	start := time.Now()
	for {
		_, _, err := conn.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("session ended without a close frame: %v", err)
		}
		return ce, time.Since(start)
	}
}

// attachTo opens an attach console of c through p, closed when the test
// ends.
func attachTo(t *testing.T, p *proxy, c testenv.Container) *websocket.Conn {
	t.Helper()
	conn, _, err := dial(ctxTimeout(t, 60*time.Second), p.url(c.Token, c.UUID, ""), nil)
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}

func echo(t *testing.T, conn *websocket.Conn, word string) {
	t.Helper()
	ctx := ctxTimeout(t, 15*time.Second)
	conn.Write(ctx, websocket.MessageBinary, []byte("echo "+word+"-$((6*7))\n"))
	readUntil(ctx, t, conn, word+"-42")
}

func TestGracefulShutdown(t *testing.T) {
	s := newSession(t)
	port := freePort(t)
	p := startProxy(t, port, baseConf(s.db, port), "[websocket_proxy]\nshutdown_timeout = 3\n")
	c := s.attachable(t, "sh")
	conn := attachTo(t, p, c)
	echo(t, conn, "before")
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.logs.waitLine(t, "shutting down", 5*time.Second)
	// No new sessions; the running one goes on during the drain.
	if accepts(p.addr()) {
		t.Error("the proxy still accepts connections while draining")
	}
	echo(t, conn, "draining")
	ce, after := closeOf(t, conn, 10*time.Second)
	if ce.Code != websocket.StatusGoingAway || ce.Reason != "proxy shutting down" {
		t.Fatalf("at the end of the drain: %v", ce)
	}
	t.Logf("closed %v after the drain began", after.Round(100*time.Millisecond))
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the proxy did not exit after the drain")
	}
}

func TestSecondSignalClosesAtOnce(t *testing.T) {
	s := newSession(t)
	port := freePort(t)
	p := startProxy(t, port, baseConf(s.db, port), "[websocket_proxy]\nshutdown_timeout = 120\n")
	c := s.attachable(t, "sh")
	conn := attachTo(t, p, c)
	echo(t, conn, "up")
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.logs.waitLine(t, "shutting down", 5*time.Second)
	p.cmd.Process.Signal(syscall.SIGINT)
	ce, after := closeOf(t, conn, 10*time.Second)
	if ce.Code != websocket.StatusGoingAway || after > 3*time.Second {
		t.Fatalf("after a second signal: %v after %v", ce, after)
	}
}

func TestHealthEndpoints(t *testing.T) {
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
	port := freePort(t)
	p := startProxy(t, port, baseConf(nil, port), "")
	if code, _ := get(p.addr(), "/healthz"); code != 200 {
		t.Errorf("/healthz with the database down: %d", code)
	}
	if code, body := get(p.addr(), "/readyz"); code != 503 || !strings.Contains(body, "store") || strings.Contains(body, "127.0.0.1") {
		t.Errorf("/readyz with the database down: %d %q", code, body)
	}
	// Runtime down.
	port = freePort(t)
	p = startProxy(t, port, baseConf(s.db, port), "[docker]\ndocker_remote_api_port = 1\n")
	if code, body := get(p.addr(), "/readyz"); code != 503 || !strings.Contains(body, "runtime") {
		t.Errorf("/readyz with the runtime down: %d %q", code, body)
	}
}

// Faults between the proxy and Docker: a frozen network is found by the
// heartbeat, a dead daemon at once; the client learns why, and a session
// beside it is untouched.
func TestRuntimeFaults(t *testing.T) {
	s := newSession(t)
	port := freePort(t)
	p := startProxy(t, port, baseConf(s.db, port), "[websocket_proxy]\nheartbeat = 1\n")
	bystander := s.attachable(t, "sh")
	ctx := ctxTimeout(t, 60*time.Second)
	other, _, err := dial(ctx, p.url(bystander.Token, bystander.UUID, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.CloseNow()
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
	bystanderEcho := func(word string) {
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
			id := s.docker.Run("sh")
			c := s.db.InsertContainer(t, testenv.Container{DockerID: id, Token: testenv.NewUUID(),
				WebsocketURL: strings.Replace(testenv.AttachURL(id), testenv.DockerAddr, fwd.Addr, 1)})
			conn, _, err := dial(ctx, p.url(c.Token, c.UUID, ""), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseNow()
			echo(t, conn, "pre-"+fault)
			if fault == "freeze" {
				fwd.Freeze()
			} else {
				fwd.Cut()
			}
			ce, after := closeOf(t, conn, 10*time.Second)
			if ce.Code != websocket.StatusInternalError || ce.Reason != "lost connection to the container" {
				t.Fatalf("client got %v", ce)
			}
			// Two heartbeat intervals and a check interval (2.5 s), plus
			// scheduling slack on a busy machine.
			bound := 4 * time.Second
			if fault == "cut" {
				bound = time.Second
			}
			if after > bound {
				t.Fatalf("told after %v, want within %v", after, bound)
			}
			t.Logf("%s: client told after %v", fault, after.Round(10*time.Millisecond))
			bystanderEcho("bystander-" + fault)
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
	port := freePort(t)
	conf := strings.Replace(baseConf(db, port), testenv.MySQLAddr, fwd.Addr, 1)
	p := startProxy(t, port, conf, "")
	mk := func() testenv.Container {
		return db.InsertContainer(t, testenv.Container{DockerID: d.Run("sh"), Token: testenv.NewUUID()})
	}
	running, next, later := mk(), mk(), mk()
	ctx := ctxTimeout(t, 60*time.Second)
	conn, _, err := dial(ctx, p.url(running.Token, running.UUID, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	echo(t, conn, "db-up")

	fwd.Cut()
	start := time.Now()
	status, _, _ := handshake(t, p.addr(), "/?token="+next.Token+"&uuid="+next.UUID, nil)
	if status != 503 || time.Since(start) > 4*time.Second {
		t.Fatalf("with the database cut: %d after %v, want 503 within query_timeout", status, time.Since(start))
	}
	echo(t, conn, "db-down") // the running session does not need the database

	fwd.Restore()
	var c2 *websocket.Conn
	if !testenv.WaitFor(10*time.Second, func() bool {
		c2, _, err = dial(ctx, p.url(later.Token, later.UUID, ""), nil)
		return err == nil
	}) {
		t.Fatalf("after the database came back: %v", err)
	}
	echo(t, c2, "db-back")
	c2.Close(websocket.StatusNormalClosure, "")
	conn.Close(websocket.StatusNormalClosure, "")
	p.waitNoSessions(t, 2*time.Second)
}

// The container is killed under a session: the client learns it ended.
func TestContainerKilled(t *testing.T) {
	s := newSession(t)
	c := s.attachable(t, "sh")
	ctx := ctxTimeout(t, 30*time.Second)
	conn, _, err := dial(ctx, s.proxy.url(c.Token, c.UUID, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	echo(t, conn, "alive")
	s.docker.Kill(c.DockerID)
	ce, after := closeOf(t, conn, 10*time.Second)
	if ce.Code != websocket.StatusNormalClosure || ce.Reason != "container exited" {
		t.Fatalf("after docker kill: %v", ce)
	}
	t.Logf("client told %v after the kill", after.Round(10*time.Millisecond))
	s.proxy.waitNoSessions(t, 2*time.Second)
}

// A client that reads nothing while the container floods output: the
// proxy's memory stays bounded and the client is let go after
// write_timeout.
func TestSlowClient(t *testing.T) {
	s := newSession(t)
	port := freePort(t)
	p := startProxy(t, port, baseConf(s.db, port), "[websocket_proxy]\nwrite_timeout = 3\n")
	c := s.attachable(t, "sh")
	conn, err := net.Dial("tcp", p.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /?token=%s&uuid=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", c.Token, c.UUID)
	// Start `yes` in the container with one masked frame, then never read.
	cmd := []byte("yes\n")
	frame := []byte{0x82, 0x80 | byte(len(cmd)), 0, 0, 0, 0}
	conn.Write(append(frame, cmd...))
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
	deadline := time.Now().Add(20 * time.Second)
	line := ""
	for time.Now().Before(deadline) && line == "" {
		time.Sleep(200 * time.Millisecond)
		peak = max(peak, rss())
		for _, l := range strings.Split(p.logs.String(), "\n") {
			if strings.Contains(l, "session ended") && strings.Contains(l, c.UUID) {
				line = l
			}
		}
	}
	fmt.Printf("slow client: proxy RSS %d KiB before, %d KiB at most while `yes` ran (+%d KiB)\n", before, peak, peak-before)
	if line == "" || !strings.Contains(line, "write to client") {
		t.Fatalf("the non-reading client was not let go: %q", line)
	}
	p.waitNoSessions(t, 3*time.Second)
	// The binary is built with -race, whose shadow memory multiplies every
	// heap byte touched; unbounded buffering of `yes` for the seconds until
	// write_timeout would be gigabytes.
	if peak-before > 48<<10 {
		t.Errorf("proxy RSS grew by %d KiB for one stuck client (bound: 48 MiB under -race)", peak-before)
	}
}

// SIGHUP applies a new allowed_origins without dropping sessions.
func TestReloadOnSIGHUP(t *testing.T) {
	s := newSession(t)
	port := freePort(t)
	dir := t.TempDir()
	override := dir + "/origins.conf"
	os.WriteFile(override, []byte("[websocket_proxy]\nallowed_origins = old.example\n"), 0o600)
	conf := dir + "/zun.conf"
	os.WriteFile(conf, []byte(baseConf(s.db, port)), 0o600)
	p := startProxyArgs(t, port, "--config-file", conf, "--config-file", override)
	c := s.attachable(t, "sh")
	conn := attachTo(t, p, c)
	newOrigin := http.Header{"Origin": {"http://new.example"}}
	if status, _, _ := handshake(t, p.addr(), "/?token="+c.Token+"&uuid="+c.UUID, newOrigin); status != 403 {
		t.Fatalf("new.example before the reload: %d", status)
	}
	os.WriteFile(override, []byte("[websocket_proxy]\nallowed_origins = new.example\n"), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.logs.waitLine(t, `configuration reloaded.*allowed_origins=new.example`, 5*time.Second)
	if status, _, _ := handshake(t, p.addr(), "/?token="+c.Token+"&uuid="+c.UUID, newOrigin); status != 101 {
		t.Fatalf("new.example after the reload: %d", status)
	}
	echo(t, conn, "survived-reload")
	conn.Close(websocket.StatusNormalClosure, "")
	p.waitNoSessions(t, 2*time.Second)
}
