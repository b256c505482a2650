package testenv

import (
	"bytes"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// LogBuffer collects log lines, from a process's output or a logger (it
// is an io.Writer), for a test to wait on. Safe for concurrent use.
type LogBuffer struct {
	mu      sync.Mutex
	lines   []string
	partial []byte // a line written in part so far
}

// Write adds the lines in p; a last one without its newline waits for
// the rest.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

// Add adds one line.
func (l *LogBuffer) Add(line string) {
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
}

// Lines returns the lines so far.
func (l *LogBuffer) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// String returns the lines so far, one a line.
func (l *LogBuffer) String() string { return strings.Join(l.Lines(), "\n") }

// Matching returns the lines so far that match re.
func (l *LogBuffer) Matching(re string) []string {
	rx := regexp.MustCompile(re)
	var out []string
	for _, s := range l.Lines() {
		if rx.MatchString(s) {
			out = append(out, s)
		}
	}
	return out
}

// WaitLine waits up to timeout for a line matching re and returns the
// first; it fails the test, showing the log, if none comes.
func (l *LogBuffer) WaitLine(tb testing.TB, re string, timeout time.Duration) string {
	tb.Helper()
	var got []string
	if !WaitFor(timeout, func() bool { got = l.Matching(re); return len(got) > 0 }) {
		tb.Fatalf("no log line matching %q within %v; log:\n%s", re, timeout, l)
	}
	return got[0]
}

// WaitLines waits up to timeout for n lines matching re and returns them;
// it fails the test if fewer come, or more have come by then.
func (l *LogBuffer) WaitLines(tb testing.TB, re string, n int, timeout time.Duration) []string {
	tb.Helper()
	var got []string
	WaitFor(timeout, func() bool { got = l.Matching(re); return len(got) >= n })
	if len(got) != n {
		tb.Fatalf("%d log lines match %q, want %d; log:\n%s", len(got), re, n, l)
	}
	return got
}
