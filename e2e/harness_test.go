// Package e2e runs the zun-wsproxy binary as an operator would, against a
// real MariaDB holding Zun's tables, a real Docker engine running real
// containers, and the real python-zunclient.
package e2e

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

var binary string

// onLoops: -loop runs every proxy started from config files on the
// event-loop engine (one more config file sets it).
var onLoops = flag.Bool("loop", false, "run the proxies' sessions on the event-loop engine")

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "zun-wsproxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "zun-wsproxy")
	build := exec.Command("go", "build", "-race", "-o", binary, "./cmd/zun-wsproxy")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build zun-wsproxy: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// logBuffer collects a process's log lines.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuffer) add(s string) {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// waitLine waits for a log line matching re.
func (l *logBuffer) waitLine(t *testing.T, re string, timeout time.Duration) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var found string
	ok := testenv.WaitFor(timeout, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, s := range l.lines {
			if rx.MatchString(s) {
				found = s
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("no log line matching %q within %v; log:\n%s", re, timeout, l)
	}
	return found
}

// proxy is a running zun-wsproxy process.
type proxy struct {
	cmd *exec.Cmd
	// killed: the test killed the process on purpose.
	killed bool
	// host is the listening address when not 127.0.0.1.
	host string
	port int
	logs *logBuffer
	done chan error
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// baseConf is a zun.conf for the test environment: loopback only.
func baseConf(db *testenv.ZunDB, port int) string {
	conn := "mysql+pymysql://zun:nopassword@127.0.0.1:1/zun"
	if db != nil {
		conn = db.URL()
	}
	return fmt.Sprintf(`[DEFAULT]
my_ip = 127.0.0.1
debug = false

[websocket_proxy]
wsproxy_host = 127.0.0.1
wsproxy_port = %d
allowed_origins = dashboard.example.org
backend_timeout = 2
shutdown_timeout = 2

[docker]
docker_remote_api_version = %s
docker_remote_api_host = 127.0.0.1
docker_remote_api_port = 2375

[database]
connection = %s
query_timeout = 2
`, port, testenv.APIVersion, conn)
}

// startProxy writes conf (and override, as a second --config-file when
// not empty) and runs the binary until the test ends.
func startProxy(t *testing.T, port int, conf, override string) *proxy {
	t.Helper()
	return startProxyArgs(t, port, confArgs(t, conf, override)...)
}

// confArgs writes conf (and override, when not empty) and returns the
// --config-file arguments that read them.
func confArgs(t *testing.T, conf, override string) []string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"--config-file", filepath.Join(dir, "zun.conf")}
	if err := os.WriteFile(args[1], []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if override != "" {
		p := filepath.Join(dir, "override.conf")
		if err := os.WriteFile(p, []byte(override), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config-file", p)
	}
	return args
}

// startProxyArgs runs the binary with args, listening on port, until the
// test ends.
func startProxyArgs(t *testing.T, port int, args ...string) *proxy {
	t.Helper()
	return startProxyAt(t, "127.0.0.1", port, args...)
}

// startProxyAt runs the binary with args, listening on host:port, until the
// test ends.
func startProxyAt(t *testing.T, host string, port int, args ...string) *proxy {
	t.Helper()
	if *onLoops && slices.Contains(args, "--config-file") {
		path := filepath.Join(t.TempDir(), "engine.conf")
		if err := os.WriteFile(path, []byte("[websocket_proxy]\nengine = loop\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args[:len(args):len(args)], "--config-file", path)
	}
	return startProxyCmd(t, host, port, exec.Command(binary, args...))
}

// startProxyCmd runs cmd, which runs the binary (perhaps through a
// wrapper that execs it), listening on host:port, until the test ends.
func startProxyCmd(t *testing.T, host string, port int, cmd *exec.Cmd) *proxy {
	t.Helper()
	p := launchProxyCmd(t, host, port, cmd)
	if !testenv.WaitFor(10*time.Second, func() bool { return accepts(p.addr()) }) {
		t.Fatalf("zun-wsproxy did not start listening; log:\n%s", p.logs)
	}
	return p
}

// launchProxyCmd is startProxyCmd without waiting for the proxy to listen.
func launchProxyCmd(t *testing.T, host string, port int, cmd *exec.Cmd) *proxy {
	t.Helper()
	p := &proxy{host: host, port: port, logs: &logBuffer{}, done: make(chan error, 1), cmd: cmd}
	p.cmd.Dir = t.TempDir()
	stderr, _ := p.cmd.StderrPipe()
	p.cmd.Stdout = os.Stdout
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.logs.add(sc.Text())
		}
	}()
	go func() {
		<-scanned
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			if err != nil && !t.Failed() && !p.killed {
				t.Errorf("zun-wsproxy exited with %v after SIGTERM", err)
			}
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			t.Error("zun-wsproxy did not stop on SIGTERM")
		}
		if t.Failed() {
			t.Logf("zun-wsproxy log:\n%s", p.logs)
		}
	})
	return p
}

// accepts reports whether something accepts TCP connections at addr.
func accepts(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// kill kills the process at once, as a crash would.
func (p *proxy) kill() {
	p.killed = true
	p.cmd.Process.Signal(syscall.SIGKILL)
}

func (p *proxy) addr() string { return net.JoinHostPort(p.host, strconv.Itoa(p.port)) }

// url is the console URL Zun's API hands out: base_url?token=…&uuid=….
func (p *proxy) url(token, uuid, execID string) string {
	u := fmt.Sprintf("ws://%s/?token=%s&uuid=%s", p.addr(), token, uuid)
	if execID != "" {
		u += "&exec_id=" + execID
	}
	return u
}

// conns counts the proxy's established TCP connections: to the Docker
// engine, and from clients. A finished session must leave none behind.
func (p *proxy) conns(t *testing.T) (toDocker, fromClients int) {
	t.Helper()
	inodes := map[string]bool{}
	fdDir := fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid)
	entries, _ := os.ReadDir(fdDir)
	for _, e := range entries {
		if link, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	_, dockerPort, _ := net.SplitHostPort(testenv.DockerAddr)
	dp, _ := strconv.Atoi(dockerPort)
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "01" || !inodes[f[9]] { // 01: ESTABLISHED
			continue
		}
		local, _ := strconv.ParseInt(f[1][strings.IndexByte(f[1], ':')+1:], 16, 32)
		remote, _ := strconv.ParseInt(f[2][strings.IndexByte(f[2], ':')+1:], 16, 32)
		switch {
		case int(remote) == dp:
			toDocker++
		case int(local) == p.port:
			fromClients++
		}
	}
	return toDocker, fromClients
}

// waitNoSessions asserts that every connection of finished sessions is
// gone within timeout.
func (p *proxy) waitNoSessions(t *testing.T, timeout time.Duration) {
	t.Helper()
	var d, c int
	if !testenv.WaitFor(timeout, func() bool { d, c = p.conns(t); return d == 0 && c == 0 }) {
		t.Fatalf("after the session: %d connections to Docker and %d from clients still open", d, c)
	}
}

// dial opens a console like a browser or Go client would.
func dial(ctx context.Context, url string, header http.Header) (*websocket.Conn, *http.Response, error) {
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		Subprotocols: []string{"binary", "base64"},
		HTTPHeader:   header,
	})
	if c != nil {
		c.SetReadLimit(4 << 20)
	}
	return c, resp, err
}

// readUntil reads messages until their concatenation contains want.
func readUntil(ctx context.Context, t *testing.T, c *websocket.Conn, want string) string {
	t.Helper()
	var got strings.Builder
	for !strings.Contains(got.String(), want) {
		_, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("waiting for %q: %v; got so far %q", want, err, got.String())
		}
		got.Write(data)
	}
	return got.String()
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
