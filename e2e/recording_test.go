package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/recording"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// startProxyOnSmallFS runs the binary with args in a mount namespace of its
// own, where dir is a tmpfs of size bytes (nothing of it is seen outside,
// and it goes with the process). The test reaches its files through
// inside(path).
func startProxyOnSmallFS(t *testing.T, size int, dir string, args ...string) (p *proxy, inside func(string) string) {
	t.Helper()
	return startProxyOnTmpfs(t, "size="+strconv.Itoa(size), dir, args...)
}

// startProxyOnTmpfs is startProxyOnSmallFS with the tmpfs's mount options
// (mode=0700 and opts).
func startProxyOnTmpfs(t *testing.T, opts, dir string, args ...string) (p *proxy, inside func(string) string) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-c", `mount -t tmpfs -o "mode=0700,$1" zun-wsproxy-test "$2" && shift 2 && exec "$@"`,
		"sh", opts, dir, binary}, args...)...)
	// Go makes the new namespace's mounts private before the command runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	p = startProxyCmd(t, cmd)
	return p, func(path string) string { return fmt.Sprintf("/proc/%d/root%s", p.cmd.Process.Pid, path) }
}

// recorded runs a session that types cmd and reads until the proxy closes
// it, and returns the close and the output the client got.
func recorded(t *testing.T, p *proxy, c testenv.Container, cmd string) (websocket.CloseError, string) {
	t.Helper()
	ctx := ctxTimeout(t, 30*time.Second)
	conn := attach(t, p, c)
	if err := conn.Write(ctx, websocket.MessageBinary, []byte(cmd+"\n")); err != nil {
		t.Fatal(err)
	}
	return testenv.ReadToClose(ctx, t, conn)
}

// A session that should be recorded is never unrecorded, on a filesystem
// of 64 KiB: past max_size it is ended (1008), on a full disk it is refused
// before the upgrade (503), when the disk fills under it it is ended
// (1011); each end is audited, and the recording holds exactly the output
// the client got.
func TestRecordingFailsClosed(t *testing.T) {
	t.Parallel()
	db := testenv.NewZunDB(t, "recfull")
	d := testenv.NewDocker(t)
	// One proxy records on an ordinary disk with a small max_size, one on
	// a tmpfs of 64 KiB with the default max_size; they share the audit log.
	auditFile := filepath.Join(t.TempDir(), "audit.log")
	const maxSize = 16 << 10
	recDir := t.TempDir()
	pl := startProxy(t, baseConf(db), fmt.Sprintf("[recording]\ndir = %s\nmax_size = %d\n[audit]\nfile = %s\n", recDir, maxSize, auditFile))
	dir := t.TempDir() // the mount point: the tmpfs covers it inside only
	p, inside := startProxyOnSmallFS(t, 64<<10, dir, confArgs(t, baseConf(db),
		fmt.Sprintf("[recording]\ndir = %s\n[audit]\nfile = %s\n", dir, auditFile))...)
	files := map[*proxy]func(string) string{pl: func(path string) string { return path }, p: inside}
	shell := func() testenv.Container {
		return db.InsertContainer(t, testenv.Container{DockerID: d.Run("sh"), Token: testenv.NewUUID()})
	}
	// The marker is printed only when all the output was: the typed line
	// the terminal echoes does not hold it.
	flood := "yes 0123456789abcdef | head -c 200000; echo flood-$((6*7))"
	check := func(t *testing.T, p *proxy, n int, ce websocket.CloseError, got string, code websocket.StatusCode, reason, endReason string) {
		t.Helper()
		if ce.Code != code || ce.Reason != reason {
			t.Fatalf("client got %v after %d bytes, want %d %q", ce, len(got), code, reason)
		}
		if strings.Contains(got, "flood-42") {
			t.Fatalf("the session went on to the end of the output")
		}
		rec := auditOf(t, auditFile, n)
		if rec["end_reason"] != endReason || rec["close_code"] != float64(code) || rec["bytes_to_client"] != float64(len(got)) {
			t.Fatalf("audit record %v", rec)
		}
		path := fmt.Sprint(rec["recording"])
		fi, err := os.Stat(files[p](path))
		if err != nil {
			t.Fatal(err)
		}
		_, events, err := recording.ReadFile(files[p](path))
		if err != nil {
			t.Fatalf("recording %s (%d bytes) does not read: %v", path, fi.Size(), err)
		}
		var out strings.Builder
		for _, e := range events {
			if e.Kind == "o" {
				out.WriteString(e.Data)
			}
		}
		if out.String() != got {
			t.Fatalf("the recording holds %d bytes of output, the client got %d", out.Len(), len(got))
		}
		t.Logf("%s: %d bytes to the client, recording of %d bytes", endReason, len(got), fi.Size())
		if endReason == "recording_limit" && fi.Size() > maxSize {
			t.Fatalf("recording of %d bytes, over max_size %d", fi.Size(), maxSize)
		}
	}

	t.Run("max_size reached", func(t *testing.T) {
		ce, got := recorded(t, pl, shell(), flood)
		check(t, pl, 1, ce, got, websocket.StatusPolicyViolation, "recording size limit reached", "recording_limit")
	})

	fill := inside(dir + "/fill")
	t.Run("disk full", func(t *testing.T) {
		f, err := os.Create(fill)
		if err != nil {
			t.Fatal(err)
		}
		for buf := make([]byte, 4096); err == nil; {
			_, err = f.Write(buf)
		}
		f.Close()
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("filling the disk: %v", err)
		}
		c := shell()
		status, body, _ := handshake(t, p.addr(), "/?token="+c.Token+"&uuid="+c.UUID, nil)
		if status != 503 || !strings.Contains(body, "recording unavailable") {
			t.Fatalf("with the disk full: %d %q, want 503 recording unavailable", status, body)
		}
		if casts, _ := filepath.Glob(inside(dir + "/*.cast")); len(casts) != 0 {
			t.Errorf("recordings on the full disk: %v, want none", casts)
		}
	})

	t.Run("disk fills during the session", func(t *testing.T) {
		// One page free (tmpfs allocates by pages): room for the header
		// and a line or two, not for the bulk of the output.
		fi, err := os.Stat(fill)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(fill, fi.Size()-4096); err != nil {
			t.Fatal(err)
		}
		ce, got := recorded(t, p, shell(), flood)
		check(t, p, 2, ce, got, websocket.StatusInternalError, "session recording failed", "recording_failed")
	})
}

// A session whose recording cannot be created is refused before the
// upgrade (503 "session recording unavailable", counted as
// recording_unavailable), leaving no connection to Docker; once the
// recording directory can take it, sessions are recorded again.
func TestRecordingUnavailable(t *testing.T) {
	t.Parallel()
	s := newDeployment(t)
	const metricsConf = "[metrics]\nlisten = 127.0.0.1:0\n"
	// Each case starts a proxy whose [recording] dir cannot be used and
	// returns it, the directory the recordings go to, and how to make it
	// usable.
	cases := []struct {
		name  string
		start func(t *testing.T) (p *proxy, dir string, repair func())
	}{
		{"a file, not a directory", func(t *testing.T) (*proxy, string, func()) {
			dir := filepath.Join(t.TempDir(), "recordings")
			os.WriteFile(dir, nil, 0o600)
			p := startProxy(t, baseConf(s.db), metricsConf+"[recording]\ndir = "+dir+"\n")
			return p, dir, func() { os.Remove(dir) }
		}},
		{"under a file", func(t *testing.T) (*proxy, string, func()) {
			file := filepath.Join(t.TempDir(), "var")
			os.WriteFile(file, nil, 0o600)
			dir := filepath.Join(file, "recordings")
			p := startProxy(t, baseConf(s.db), metricsConf+"[recording]\ndir = "+dir+"\n")
			return p, dir, func() { os.Remove(file) }
		}},
		{"read-only filesystem", func(t *testing.T) (*proxy, string, func()) {
			dir := t.TempDir() // the mount point: the tmpfs covers it inside only
			p, inside := startProxyOnTmpfs(t, "ro", dir, confArgs(t, baseConf(s.db), metricsConf+"[recording]\ndir = "+dir+"\n")...)
			return p, inside(dir), func() {
				ns := fmt.Sprintf("--mount=/proc/%d/ns/mnt", p.cmd.Process.Pid)
				if out, err := exec.Command("nsenter", ns, "mount", "-o", "remount,rw", dir).CombinedOutput(); err != nil {
					t.Fatalf("remount %s read-write: %v: %s", dir, err, out)
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, dir, repair := tc.start(t)
			c := s.attachable(t, "sh")
			status, body, _ := handshake(t, p.addr(), "/?token="+c.Token+"&uuid="+c.UUID, nil)
			if status != 503 || !strings.Contains(body, "session recording unavailable") {
				t.Fatalf("%d %q, want 503 session recording unavailable", status, body)
			}
			p.logs.WaitLine(t, `session refused: cannot record it`, settle)
			if got := metrics(t, p.sideAddr(t, "metrics"))[`zun_wsproxy_handshakes_refused_total{reason="recording_unavailable"}`]; got != "1" {
				t.Errorf("refusals counted as recording_unavailable: %s, want 1", got)
			}
			if d, _ := p.conns(t); d != 0 {
				t.Errorf("%d connections to Docker after the refusal", d)
			}
			repair()
			conn := attach(t, p, c)
			testenv.Echo(t, conn, "recorded")
			conn.Close(websocket.StatusNormalClosure, "")
			p.sessionEnded(t, "container="+c.UUID)
			if casts, _ := filepath.Glob(filepath.Join(dir, "*.cast")); len(casts) != 1 {
				t.Errorf("recordings in %s: %v, want the session's", dir, casts)
			}
		})
	}
}
