package e2e

import (
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/config"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// staticBuild is `make build` into a directory of its own, once for all
// the packaging tests: the binary an operator installs.
var staticBuild struct {
	once sync.Once
	dir  string
	err  error
}

func staticBinary(t *testing.T) string {
	t.Helper()
	staticBuild.once.Do(func() {
		staticBuild.dir = filepath.Join(filepath.Dir(binary), "static")
		staticBuild.err = runMake("build", "BIN_DIR="+staticBuild.dir)
	})
	if staticBuild.err != nil {
		t.Fatal(staticBuild.err)
	}
	return filepath.Join(staticBuild.dir, "zun-wsproxy")
}

// runMake runs a target of the repository's Makefile.
func runMake(args ...string) error {
	cmd := exec.Command("make", append([]string{"-s", "-C", testenv.RepoRoot()}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// `make build` gives a static binary: no program interpreter (ld.so) and
// no dynamic section, so it runs in a scratch image and on any Linux.
func TestStaticBuild(t *testing.T) {
	f, err := elf.Open(staticBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary has a %v program header: it is dynamically linked", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}
}

// unitFile is the systemd unit an operator installs.
var unitFile = filepath.Join(testenv.RepoRoot(), "deploy", "systemd", "zun-wsproxy.service")

func systemdAnalyze(t *testing.T) string {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is missing (Debian's systemd package): run scripts/test-env.sh")
	}
	return analyze
}

// unitDirectives reads a unit file's Key=value lines (comments and
// section headers skipped), in order.
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[k] = append(out[k], v)
		}
	}
	return out
}

// The systemd unit passes systemd-analyze verify with no word of warning,
// its sandbox rates "OK" or better in systemd-analyze security, and its
// limits fit the proxy's defaults.
func TestSystemdUnit(t *testing.T) {
	analyze := systemdAnalyze(t)
	unit, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	// verify checks that ExecStart's program exists: point it at the
	// binary make build gives, in a copy of the unit.
	const installed = "ExecStart=/usr/bin/zun-wsproxy "
	if strings.Count(string(unit), installed) != 1 {
		t.Fatalf("the unit has no line starting %q", installed)
	}
	copyPath := filepath.Join(t.TempDir(), "zun-wsproxy.service")
	text := strings.Replace(string(unit), installed, "ExecStart="+staticBinary(t)+" ", 1)
	if err := os.WriteFile(copyPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// --man=no: Documentation= is a web page, not a manual page to find.
	out, err := exec.Command(analyze, "verify", "--man=no", copyPath).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// security rates exposure from 0 (locked down) to 10; above 2.0 would
	// mean the sandboxing lost its teeth.
	out, err = exec.Command(analyze, "security", "--offline=yes", "--threshold=20", copyPath).CombinedOutput()
	level := regexp.MustCompile(`Overall exposure level for zun-wsproxy.service: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || level == nil {
		t.Errorf("systemd-analyze security: %v (want exposure at most 2.0)\n%s", err, out)
	} else {
		t.Logf("systemd-analyze security: exposure %s", level[1])
	}

	defaults, err := config.Load(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := unitDirectives(t, unitFile)
	checks := []struct {
		key  string
		want func(int) bool
		why  string
	}{
		{"LimitNOFILE", func(n int) bool { return n >= 2*defaults.Proxy.MaxSessions+defaults.Database.MaxOpen }, fmt.Sprintf(
			"at least 2 descriptors x max_sessions (%d) + the database pool (%d)", defaults.Proxy.MaxSessions, defaults.Database.MaxOpen)},
		{"TimeoutStopSec", func(n int) bool { return time.Duration(n)*time.Second > defaults.Proxy.ShutdownTimeout }, fmt.Sprintf(
			"above shutdown_timeout (%v), or SIGKILL cuts the drain short", defaults.Proxy.ShutdownTimeout)},
	}
	for _, c := range checks {
		v := d[c.key]
		n, err := strconv.Atoi(strings.Join(v, ""))
		if len(v) != 1 || err != nil || !c.want(n) {
			t.Errorf("%s=%s, want %s", c.key, strings.Join(v, ","), c.why)
		}
	}
	for key, want := range map[string]string{"Type": "notify", "ExecReload": "/bin/kill -HUP $MAINPID", "User": "zun", "Restart": "on-failure"} {
		if got := strings.Join(d[key], ","); got != want {
			t.Errorf("%s=%s, want %s", key, got, want)
		}
	}
}

// notification is one datagram the proxy sent to NOTIFY_SOCKET, and,
// when it names where the proxy listens (STATUS=listening on …), whether
// that port accepted a connection right when it arrived.
type notification struct {
	state     string
	accepting bool
}

// notifySocket listens where systemd would (NOTIFY_SOCKET, for the
// processes the test starts) and passes on what arrives.
func notifySocket(t *testing.T) <-chan notification {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	listening := regexp.MustCompile(`(?m)^STATUS=listening on (\S+)$`)
	got := make(chan notification, 16)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			note := notification{state: string(buf[:n])}
			if m := listening.FindStringSubmatch(note.state); m != nil {
				note.accepting = accepts(m[1])
			}
			select {
			case got <- note:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); c.Close(); <-done })
	return got
}

func nextNotification(t *testing.T, got <-chan notification) notification {
	t.Helper()
	select {
	case n := <-got:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no notification on NOTIFY_SOCKET within 10 s")
		return notification{}
	}
}

// Under systemd's Type=notify: READY=1 once the port accepts consoles,
// RELOADING=1 (with its time) then READY=1 around a SIGHUP reload, and
// STOPPING=1 when SIGTERM starts the drain, while a session still runs.
func TestSystemdNotify(t *testing.T) {
	got := notifySocket(t)
	db := testenv.NewZunDB(t, "e2e")
	docker := testenv.NewDocker(t)
	p := startProxy(t, baseConf(db), "")

	ready := nextNotification(t, got)
	if want := fmt.Sprintf("READY=1\nSTATUS=listening on %s\n", p.addr()); ready.state != want {
		t.Errorf("first notification %q, want %q", ready.state, want)
	}
	if !ready.accepting {
		t.Error("READY=1 came before the port accepted connections")
	}

	p.cmd.Process.Signal(syscall.SIGHUP)
	reloading := nextNotification(t, got)
	if !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*\n$`).MatchString(reloading.state) {
		t.Errorf("on SIGHUP %q, want RELOADING=1 and MONOTONIC_USEC", reloading.state)
	}
	if n := nextNotification(t, got); n.state != "READY=1\n" {
		t.Errorf("after the reload %q, want READY=1", n.state)
	}
	p.logs.WaitLine(t, "configuration reloaded", settle)

	c := db.InsertContainer(t, testenv.Container{DockerID: docker.Run("sh"), Token: testenv.NewUUID()})
	conn := attach(t, p, c)
	testenv.Echo(t, conn, "before")

	p.cmd.Process.Signal(syscall.SIGTERM)
	if n := nextNotification(t, got); n.state != "STOPPING=1\nSTATUS=stopping, sessions draining: 1\n" {
		t.Errorf("on SIGTERM %q, want STOPPING=1 and the sessions draining", n.state)
	}
	// The drain lets the running session go on.
	testenv.Echo(t, conn, "during")
}

// addressFamilies are the socket families RestrictAddressFamilies= may
// name in the unit, with their numbers (socket's first argument).
var addressFamilies = map[string]int{"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16}

// unitSeccompProfile writes the unit's SystemCallFilter= and
// RestrictAddressFamilies= as a Docker seccomp profile: the system calls
// systemd would allow (its groups as systemd-analyze lists them), socket
// only for the allowed families, EPERM for the rest as
// SystemCallErrorNumber=EPERM says. systemd enforces both with seccomp
// too, so a proxy that works under this profile works under the unit.
func unitSeccompProfile(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(systemdAnalyze(t), "syscall-filter").Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter: %v", err)
	}
	groups := map[string][]string{}
	var group string
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "@"):
			group = line
		case strings.HasPrefix(line, "    ") && !strings.HasPrefix(strings.TrimSpace(line), "#") && group != "":
			groups[group] = append(groups[group], strings.TrimSpace(line))
		case strings.TrimSpace(line) == "":
			group = ""
		}
	}
	var expand func(name string, into map[string]bool, on bool)
	expand = func(name string, into map[string]bool, on bool) {
		if !strings.HasPrefix(name, "@") {
			into[name] = on
			return
		}
		if groups[name] == nil {
			t.Fatalf("systemd-analyze knows no group %s", name)
		}
		for _, n := range groups[name] {
			expand(n, into, on)
		}
	}
	unit := unitDirectives(t, unitFile)
	allowed := map[string]bool{}
	for _, v := range unit["SystemCallFilter"] {
		deny := strings.HasPrefix(v, "~")
		for _, name := range strings.Fields(strings.TrimPrefix(v, "~")) {
			expand(name, allowed, !deny)
		}
	}
	if len(allowed) == 0 {
		t.Fatal("the unit has no SystemCallFilter=")
	}
	type arg struct {
		Index int    `json:"index"`
		Value int    `json:"value"`
		Op    string `json:"op"`
	}
	type rule struct {
		Names  []string `json:"names"`
		Action string   `json:"action"`
		Args   []arg    `json:"args,omitempty"`
	}
	var names []string
	for name, on := range allowed {
		if on && name != "socket" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	rules := []rule{{Names: names, Action: "SCMP_ACT_ALLOW"}}
	for _, v := range unit["RestrictAddressFamilies"] {
		for _, family := range strings.Fields(v) {
			n, ok := addressFamilies[family]
			if !ok {
				t.Fatalf("RestrictAddressFamilies=%s: add its number to the test", family)
			}
			rules = append(rules, rule{Names: []string{"socket"}, Action: "SCMP_ACT_ALLOW", Args: []arg{{0, n, "SCMP_CMP_EQ"}}})
		}
	}
	profile, _ := json.Marshal(map[string]any{
		"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": int(syscall.EPERM),
		"architectures": []string{"SCMP_ARCH_X86_64"}, "syscalls": rules,
	})
	path := filepath.Join(t.TempDir(), "seccomp.json")
	if err := os.WriteFile(path, profile, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The container image (make image, FROM scratch) runs the proxy as uid
// 65534 with zun.conf mounted at /etc/zun/zun.conf, serves a console of
// a real container found in Zun's database, and stops cleanly on docker
// stop; all of it under the systemd unit's system call filter and
// address families. It shares the host's network (as Kolla runs
// zun_wsproxy): the test's dockerd has no bridge, and everything stays
// on loopback.
func TestContainerImage(t *testing.T) {
	dockerCLI, err := exec.LookPath("docker")
	if err != nil {
		t.Fatal("the docker command is missing (Debian's docker.io): run scripts/test-env.sh")
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(dockerCLI, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	image := "zun-wsproxy-test/wsproxy:" + hex.EncodeToString(suffix)
	staticBinary(t)
	start := time.Now()
	if err := runMake("image", "BIN_DIR="+staticBuild.dir, "IMAGE="+image); err != nil {
		t.Fatal(err)
	}
	t.Logf("make image: %v", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() { exec.Command(dockerCLI, "rmi", "-f", image).Run() })

	db := testenv.NewZunDB(t, "e2e")
	docker := testenv.NewDocker(t)
	c := db.InsertContainer(t, testenv.Container{DockerID: docker.Run("sh"), Token: testenv.NewUUID()})
	conf := filepath.Join(t.TempDir(), "zun.conf")
	if err := os.WriteFile(conf, []byte(baseConf(db)), 0o600); err != nil {
		t.Fatal(err)
	}
	// Readable by the image's user only, as an operator would mount it.
	if err := os.Chown(conf, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	name := "zun-wsproxy-test-image-" + hex.EncodeToString(suffix)
	id := run("run", "-d", "--name", name, "--label", "zun-wsproxy-test=1", "--network", "host",
		"--security-opt", "no-new-privileges", "--security-opt", "seccomp="+unitSeccompProfile(t),
		"-v", conf+":/etc/zun/zun.conf:ro", image)
	t.Cleanup(func() { exec.Command(dockerCLI, "rm", "-f", id).Run() })
	// Of the containerized proxy the harness knows its log only.
	var started []byte
	var addr string
	if !testenv.WaitFor(settle, func() bool {
		started, _ = exec.Command(dockerCLI, "logs", id).CombinedOutput()
		addr = listenAddr(string(started), "zun-wsproxy")
		return addr != ""
	}) {
		t.Fatalf("the containerized proxy does not say it listens; its log:\n%s", started)
	}
	host, port, _ := net.SplitHostPort(addr)
	p := &proxy{host: host}
	p.port, _ = strconv.Atoi(port)

	// The process runs as the image's user, not root.
	if user := run("inspect", "-f", "{{.Config.User}}", id); user != "65534:65534" {
		t.Errorf("image user %q, want 65534:65534", user)
	}
	status, err := os.ReadFile("/proc/" + run("inspect", "-f", "{{.State.Pid}}", id) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	// Real, effective, saved and file system ids.
	for _, want := range []string{"Uid:\t65534\t65534\t65534\t65534\n", "Gid:\t65534\t65534\t65534\t65534\n"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("the proxy in the container does not run with %q:\n%s", want, status)
		}
	}

	conn := attach(t, p, c)
	testenv.Echo(t, conn, "image")
	conn.Close(websocket.StatusNormalClosure, "")

	// docker stop sends SIGTERM to the proxy (PID 1 in the container): it
	// drains and exits 0 well before docker's 10 s grace.
	start = time.Now()
	run("stop", id)
	if code := run("inspect", "-f", "{{.State.ExitCode}}", id); code != "0" || time.Since(start) > 8*time.Second {
		t.Errorf("docker stop: exit code %s after %v, want 0 within shutdown_timeout", code, time.Since(start))
	}
	logs := run("logs", id)
	if !strings.Contains(logs, "msg=stopped") {
		t.Errorf("the containerized proxy's log has no \"stopped\" line:\n%s", logs)
	}
	// A system call the filter refused would show as EPERM.
	if strings.Contains(logs, "operation not permitted") {
		t.Errorf("the containerized proxy met a refused system call:\n%s", logs)
	}
}
