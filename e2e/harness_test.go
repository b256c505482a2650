// Package e2e runs the zun-wsproxy binary as an operator would, against a
// real MariaDB holding Zun's tables, a real Docker engine running real
// containers, and the real python-zunclient.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
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
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

var binary string

// engineFlag: -engine goroutines runs every proxy started from config
// files on that engine instead of the default (one more config file sets
// it).
var engineFlag = flag.String("engine", "", "the engine of the proxies' sessions (loop, goroutines; default: the proxy's own default)")

func TestMain(m *testing.M) {
	flag.Parse()
	// The tests wait on processes, containers and databases far more than
	// on the processors: four run at once, unless -parallel says how many.
	// (Those with bounds a busy machine could break run alone.)
	parallel := false
	flag.Visit(func(f *flag.Flag) { parallel = parallel || f.Name == "test.parallel" })
	if !parallel {
		flag.Set("test.parallel", "4")
	}
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

// proxy is a running zun-wsproxy process.
type proxy struct {
	cmd *exec.Cmd
	// killed: the test killed the process on purpose.
	killed bool
	// host and port: where the console listener is bound, as the process
	// logged it (the tests' configurations ask for port 0: a free one).
	host string
	port int
	logs *testenv.LogBuffer
	done chan error
	// relays: the ports of relays (testenv.Forwarder) its sessions reach
	// Docker through, besides the engine's own port.
	relays []int
}

// queryTimeout is baseConf's [database] query_timeout.
const queryTimeout = 2 * time.Second

// baseConf is a zun.conf for the test environment: loopback only, on a
// free port.
func baseConf(db *testenv.ZunDB) string {
	conn := "mysql+pymysql://zun:nopassword@127.0.0.1:1/zun"
	if db != nil {
		conn = db.URL()
	}
	return fmt.Sprintf(`[DEFAULT]
my_ip = 127.0.0.1
debug = false

[websocket_proxy]
wsproxy_host = 127.0.0.1
wsproxy_port = 0
allowed_origins = dashboard.example.org
backend_timeout = 2
shutdown_timeout = 2

[docker]
docker_remote_api_version = %s
docker_remote_api_host = 127.0.0.1
docker_remote_api_port = 2375

[database]
connection = %s
query_timeout = %v
`, testenv.APIVersion, conn, queryTimeout.Seconds())
}

// startProxy writes conf (and override, as a second --config-file when
// not empty) and runs the binary until the test ends.
func startProxy(t *testing.T, conf, override string) *proxy {
	t.Helper()
	return startProxyArgs(t, confArgs(t, conf, override)...)
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

// startProxyArgs runs the binary with args until the test ends, once it
// listens.
func startProxyArgs(t *testing.T, args ...string) *proxy {
	t.Helper()
	if *engineFlag != "" && slices.Contains(args, "--config-file") {
		path := filepath.Join(t.TempDir(), "engine.conf")
		if err := os.WriteFile(path, []byte("[websocket_proxy]\nengine = "+*engineFlag+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args[:len(args):len(args)], "--config-file", path)
	}
	return startProxyCmd(t, exec.Command(binary, args...))
}

// startProxyCmd runs cmd, which runs the binary (perhaps through a
// wrapper that execs it), until the test ends, once it listens.
func startProxyCmd(t *testing.T, cmd *exec.Cmd) *proxy {
	t.Helper()
	p := launchProxyCmd(t, cmd)
	p.waitListening(t, p.logs.String)
	return p
}

// launchProxyCmd is startProxyCmd without waiting for the proxy to listen.
func launchProxyCmd(t *testing.T, cmd *exec.Cmd) *proxy {
	t.Helper()
	p := &proxy{logs: &testenv.LogBuffer{}, done: make(chan error, 1), cmd: cmd}
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
			p.logs.Add(sc.Text())
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

// listeningLine is the start-up line naming a listener's bound address,
// in the text and the JSON log formats.
var listeningLine = regexp.MustCompile(`(zun-wsproxy|token API|metrics) listening"?[ ,]"?address"?[=:]"?([^"\s,]+)`)

// listenAddr returns the address a listener ("zun-wsproxy", "token API"
// or "metrics") is bound to, from the line logs (the process's log so
// far) holds for it; "" if none yet.
func listenAddr(logs, listener string) string {
	for _, m := range listeningLine.FindAllStringSubmatch(logs, -1) {
		if m[1] == listener {
			return m[2]
		}
	}
	return ""
}

// exited reports whether the process has ended, and how.
func (p *proxy) exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		return true, err
	default:
		return false, nil
	}
}

// waitListening waits until logs (the process's log so far: standard
// error, or a log file) says its console listener is bound, and takes
// its address; the listener queues connections from then on.
func (p *proxy) waitListening(t *testing.T, logs func() string) {
	t.Helper()
	var addr string
	var gone bool
	var exit error
	testenv.WaitFor(10*time.Second, func() bool {
		if gone, exit = p.exited(); gone {
			return true
		}
		addr = listenAddr(logs(), "zun-wsproxy")
		return addr != ""
	})
	host, port, err := net.SplitHostPort(addr)
	switch {
	case gone:
		t.Fatalf("zun-wsproxy exited (%v) before it listened; log:\n%s", exit, logs())
	case err != nil:
		t.Fatalf("zun-wsproxy did not say it listens within 10s; log:\n%s", logs())
	}
	p.host = host
	p.port, _ = strconv.Atoi(port)
}

// sideAddr waits for the token API or metrics listener ("token API",
// "metrics") to be bound and returns its address. Side listeners are
// bound after the console's.
func (p *proxy) sideAddr(t *testing.T, listener string) string {
	t.Helper()
	var addr string
	if !testenv.WaitFor(10*time.Second, func() bool { addr = listenAddr(p.logs.String(), listener); return addr != "" }) {
		t.Fatalf("no %s listener within 10s; log:\n%s", listener, p.logs)
	}
	return addr
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

// conns counts the proxy's TCP connections (its descriptors, in any
// state): to the Docker engine or a relay before it, and from clients. A
// finished session must leave none behind.
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
	backends := append([]int{dp}, p.relays...)
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] == "0A" || !inodes[f[9]] { // 0A: LISTEN
			continue
		}
		local, _ := strconv.ParseInt(f[1][strings.IndexByte(f[1], ':')+1:], 16, 32)
		remote, _ := strconv.ParseInt(f[2][strings.IndexByte(f[2], ':')+1:], 16, 32)
		switch {
		case slices.Contains(backends, int(remote)):
			toDocker++
		case int(local) == p.port:
			fromClients++
		}
	}
	return toDocker, fromClients
}

// relayThrough has conns count connections to fwd as Docker connections.
func (p *proxy) relayThrough(fwd *testenv.Forwarder) {
	_, port, _ := net.SplitHostPort(fwd.Addr)
	n, _ := strconv.Atoi(port)
	p.relays = append(p.relays, n)
}

// settle is testenv.Settle: below the intervals that could end a session
// by themselves (heartbeat and write_timeout: 30 s by default).
const settle = testenv.Settle

// sessionEnded waits for the line logging the end of a session whose
// attributes match re, and returns it. The proxy has closed the
// session's Docker connection when it logs the end.
func (p *proxy) sessionEnded(t *testing.T, re string) string {
	t.Helper()
	return p.logs.WaitLine(t, `session ended.*`+re, settle)
}

// waitNoSessions asserts that every connection of finished sessions is
// gone: the Docker side as the session ends, a client's after the close
// handshake.
func (p *proxy) waitNoSessions(t *testing.T) {
	t.Helper()
	var d, c int
	if !testenv.WaitFor(settle, func() bool { d, c = p.conns(t); return d == 0 && c == 0 }) {
		t.Fatalf("after the session: %d connections to Docker and %d from clients still open", d, c)
	}
}

// auditOf waits for the n-th record of the audit log at path and returns
// it. The proxy writes a session's record after logging its end.
func auditOf(t *testing.T, path string, n int) map[string]any {
	t.Helper()
	var lines []string
	if !testenv.WaitFor(settle, func() bool {
		data, _ := os.ReadFile(path)
		lines = strings.SplitAfter(string(data), "\n")
		return len(lines) > n // the last is what follows the n-th newline
	}) {
		t.Fatalf("audit log %s has %d records, want %d:\n%s", path, len(lines)-1, n, strings.Join(lines, ""))
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[n-1]), &rec); err != nil {
		t.Fatalf("audit record %q: %v", lines[n-1], err)
	}
	return rec
}

// dialOptions are a browser's or Go client's: the binary and base64
// subprotocols offered, as websockify's clients do.
func dialOptions(header http.Header) *websocket.DialOptions {
	return &websocket.DialOptions{Subprotocols: []string{"binary", "base64"}, HTTPHeader: header}
}

// open opens a console, closed when the test ends; it fails the test
// unless the console opens.
func open(ctx context.Context, t *testing.T, url string, header http.Header) *websocket.Conn {
	t.Helper()
	c, status, err := testenv.Open(ctx, url, dialOptions(header))
	if c == nil {
		t.Fatalf("open %s: status %d: %v", url, status, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// refusal opens a console that must be refused and returns the answer's
// status: 101 when it opened after all, 0 when no HTTP answer came.
func refusal(ctx context.Context, url string, header http.Header) int {
	return testenv.Refused(ctx, url, dialOptions(header))
}

// attach opens c's attach console through p.
func attach(t *testing.T, p *proxy, c testenv.Container) *websocket.Conn {
	t.Helper()
	return open(ctxTimeout(t, 60*time.Second), t, p.url(c.Token, c.UUID, ""), nil)
}

// ctxTimeout is a context that ends after d or with the test.
func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// metrics reads the metrics page at addr (the metrics listener) and
// returns each series' value by its name and labels, as the page writes
// them: `zun_wsproxy_sessions_active{kind="attach"}`.
func metrics(t *testing.T, addr string) map[string]string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	values := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); !strings.HasPrefix(l, "#") {
			if i := strings.LastIndexByte(l, ' '); i > 0 {
				values[l[:i]] = l[i+1:]
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("metrics page: %v", err)
	}
	return values
}
