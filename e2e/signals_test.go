package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// stalledStart runs a standalone proxy whose store is MariaDB behind a
// frozen relay: the proxy connects, then waits in its migration for a
// greeting that does not come until the relay is restored.
func stalledStart(t *testing.T) (*proxy, *testenv.Forwarder) {
	t.Helper()
	db := testenv.NewEmptyDB(t, "startup")
	fwd := testenv.NewForwarder(t, testenv.MySQLAddr)
	fwd.Freeze()
	args := confArgs(t, standaloneConf()+fmt.Sprintf(`
[websocket_proxy]
mode = standalone

[database]
connection = mysql+pymysql://%s:%s@%s/%s
`, testenv.MySQLUser, testenv.MySQLPass, fwd.Addr, db.Name), "")
	p := launchProxyCmd(t, exec.Command(binary, args...))
	if !testenv.WaitFor(settle, func() bool { return fwd.Accepted() > 0 }) {
		t.Fatalf("the proxy did not connect to its store; log:\n%s", p.logs)
	}
	return p, fwd
}

// signalTaken waits until the process has no sig pending: it has taken
// it, to handle it or to die of it.
func signalTaken(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	bit := uint64(1) << (sig - 1)
	pending := func() bool {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return false // gone
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "ShdPnd:"); ok {
				mask, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				return mask&bit != 0
			}
		}
		return false
	}
	if !testenv.WaitFor(5*time.Second, func() bool { return !pending() }) {
		t.Fatalf("%v still pending after 5s", sig)
	}
}

// Signals are handled from the first moment: a SIGHUP while the proxy
// starts (logrotate's, say) is kept and applied once it is ready, and a
// SIGTERM stops start-up with a clean exit.
func TestSignalsDuringStartUp(t *testing.T) {
	t.Run("SIGHUP", func(t *testing.T) {
		p, fwd := stalledStart(t)
		p.cmd.Process.Signal(syscall.SIGHUP)
		signalTaken(t, p.cmd.Process.Pid, syscall.SIGHUP)
		fwd.Restore()
		p.waitListening(t, p.logs.String)
		if !accepts(p.addr()) {
			t.Fatalf("the proxy logged it listens on %s, and does not", p.addr())
		}
		reloaded := p.logs.WaitLine(t, `configuration reloaded`, settle)
		logs := p.logs.String()
		if strings.Index(logs, reloaded) < strings.Index(logs, "zun-wsproxy listening") {
			t.Errorf("the SIGHUP was applied before the proxy was ready")
		}
	})
	t.Run("SIGTERM", func(t *testing.T) {
		p, _ := stalledStart(t)
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			p.done <- err
			if err != nil {
				t.Fatalf("a SIGTERM during start-up: exit %v, want 0", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a SIGTERM during start-up did not stop the proxy within 10s (the migration waits 30s)")
		}
		p.logs.WaitLine(t, `stopped during start-up.*signal=terminated`, settle)
	})
}

// A configuration whose interpolation would grow without bound is
// refused at once on SIGHUP, naming the option; the running one stays.
func TestReloadRefusesInterpolationBomb(t *testing.T) {
	args := confArgs(t, baseConf(nil), "[websocket_proxy]\nallowed_origins = old.example\n")
	override := args[3]
	p := startProxyArgs(t, args...)
	// Each option names the one before four times: 4 MiB at a9, and 4^30
	// times more at a39, from a file of 600 bytes.
	bomb := "[websocket_proxy]\na0 = xxxxxxxxxxxxxxxx\n"
	for i := 1; i < 40; i++ {
		bomb += fmt.Sprintf("a%d = $a%d$a%[2]d$a%[2]d$a%[2]d\n", i, i-1)
	}
	os.WriteFile(override, []byte(bomb+"allowed_origins = $a39\n"), 0o600)
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.logs.WaitLine(t, `configuration not reloaded.*override.conf: \[websocket_proxy\] allowed_origins: interpolation nested deeper than 10 levels`, settle)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refused after %v", d)
	}
	os.WriteFile(override, []byte(bomb[:strings.Index(bomb, "a8 =")]+"allowed_origins = $a7\n"), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.logs.WaitLine(t, `configuration not reloaded.*override.conf: \[websocket_proxy\] allowed_origins: \$a7 expands to more than 65536 bytes`, settle)
	if !accepts(p.addr()) {
		t.Error("the proxy no longer accepts connections")
	}
}
