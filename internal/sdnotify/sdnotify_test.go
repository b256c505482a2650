package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listen is systemd's end: a datagram socket at name (a path or @name).
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotify(t *testing.T) {
	sockets := map[string]string{
		"path":     filepath.Join(t.TempDir(), "notify"),
		"abstract": fmt.Sprintf("@zun-wsproxy-sdnotify-test-%d", os.Getpid()),
	}
	for kind, socket := range sockets {
		t.Run(kind, func(t *testing.T) {
			c := listen(t, socket)
			if _, err := os.Stat(socket); kind == "abstract" && !os.IsNotExist(err) {
				t.Fatalf("%s is a file (%v), not an abstract socket", socket, err)
			}
			t.Setenv("NOTIFY_SOCKET", socket)
			n, err := FromEnv()
			if err != nil {
				t.Fatal(err)
			}
			for _, lines := range [][]string{{Ready}, {Ready, Status("listening on 127.0.0.1:6784")}, {Stopping}} {
				if err := n.Notify(lines...); err != nil {
					t.Fatal(err)
				}
				if got, want := receive(t, c), strings.Join(lines, "\n")+"\n"; got != want {
					t.Errorf("datagram %q, want %q", got, want)
				}
			}
		})
	}
}

// Reloading carries the time of the reload on CLOCK_MONOTONIC, in
// microseconds, in the same datagram as RELOADING=1.
func TestReloading(t *testing.T) {
	c := listen(t, filepath.Join(t.TempDir(), "notify"))
	n, err := New(c.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	before := monotonicUsec()
	if err := n.Notify(Reloading()); err != nil {
		t.Fatal(err)
	}
	after := monotonicUsec()
	got := receive(t, c)
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("datagram %q, want RELOADING=1 and MONOTONIC_USEC=…", got)
	}
	usec, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	if err != nil || usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC %s, want a number in [%d, %d]", lines[1], before, after)
	}
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano() / 1000
}

// Not started by systemd: nothing to send, and nothing fails.
func TestNoSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n, err := FromEnv()
	if n != nil || err != nil {
		t.Fatalf("FromEnv without NOTIFY_SOCKET = %v, %v; want nil, nil", n, err)
	}
	if err := n.Notify(Ready); err != nil {
		t.Errorf("nil Notifier: %v", err)
	}
}

func TestErrors(t *testing.T) {
	for _, socket := range []string{"relative/notify", "@", "vsock:2:1234"} {
		if _, err := New(socket); err == nil || !strings.Contains(err.Error(), "NOTIFY_SOCKET") {
			t.Errorf("New(%q) = %v, want an error naming NOTIFY_SOCKET", socket, err)
		}
	}
	// A socket that nobody listens on: the send fails and says so.
	n, err := New(filepath.Join(t.TempDir(), "gone"))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Notify(Ready); err == nil || !strings.Contains(err.Error(), "notify systemd") {
		t.Errorf("Notify to a missing socket = %v, want an error", err)
	}
}
