// Package sdnotify tells systemd how the service is doing, with the
// notification protocol of sd_notify(3): one datagram of newline-separated
// VAR=value lines to the Unix socket named in $NOTIFY_SOCKET. A unit with
// Type=notify is started once READY=1 arrives, shows a reload as running
// from RELOADING=1 to the next READY=1, and a stop from STOPPING=1.
// Without $NOTIFY_SOCKET (not started by systemd) nothing is sent.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The states a service announces.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// Reloading announces a reload. MONOTONIC_USEC, the time of the reload
// on CLOCK_MONOTONIC, lets systemd 253 and newer tell this reload's
// READY=1 from an earlier one; older versions ignore it.
func Reloading() string {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)
}

// Status is a line for `systemctl status`: the service's state in words.
func Status(s string) string {
	return "STATUS=" + strings.ReplaceAll(s, "\n", " ")
}

// Notifier sends notifications to one socket. A nil Notifier sends
// nothing.
type Notifier struct {
	addr *net.UnixAddr
}

// FromEnv returns the Notifier of $NOTIFY_SOCKET, or nil when it is unset
// or empty.
func FromEnv() (*Notifier, error) {
	s := os.Getenv("NOTIFY_SOCKET")
	if s == "" {
		return nil, nil
	}
	return New(s)
}

// New returns a Notifier for socket: an absolute path, or an abstract
// socket name written with a leading '@' (as systemd does; the kernel's
// name starts with a NUL byte instead, which Go's socket address does for
// a leading '@').
func New(socket string) (*Notifier, error) {
	if !strings.HasPrefix(socket, "/") && !strings.HasPrefix(socket, "@") {
		return nil, fmt.Errorf("NOTIFY_SOCKET %q: want an absolute path or an @abstract name", socket)
	}
	if socket == "@" {
		return nil, errors.New("NOTIFY_SOCKET: empty abstract name")
	}
	return &Notifier{addr: &net.UnixAddr{Name: socket, Net: "unixgram"}}, nil
}

// Notify sends lines (Ready, Reloading(), Status(…), …) in one datagram,
// so systemd sees them together.
func (n *Notifier) Notify(lines ...string) error {
	if n == nil {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return nil
}
