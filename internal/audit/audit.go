// Package audit writes one JSON record per console session: who opened
// which container's console, from where, when, for how long, how much
// went each way and why it ended. Records are lines of JSON (one object
// per line), appended to a file or written to standard output.
//
// A record that cannot be written (a full disk) is dropped whole and
// counted; the log recovers by itself once writes succeed again.
package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Record is one session.
type Record struct {
	Type      string `json:"type"` // "session"
	Session   string `json:"session"`
	Kind      string `json:"kind"` // attach or exec
	ExecID    string `json:"exec_id,omitempty"`
	Container string `json:"container"` // Zun's uuid, or the Docker name in standalone mode
	Name      string `json:"container_name,omitempty"`
	RuntimeID string `json:"container_id,omitempty"`
	Host      string `json:"host,omitempty"`
	// Who: the standalone token, or the container's Zun project and user.
	TokenID     string    `json:"token_id,omitempty"`
	ProjectID   string    `json:"project_id,omitempty"`
	UserID      string    `json:"user_id,omitempty"`
	Client      string    `json:"client"`
	Subprotocol string    `json:"subprotocol,omitempty"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	DurationMS  int64     `json:"duration_ms"`
	ToClient    int64     `json:"bytes_to_client"`
	ToContainer int64     `json:"bytes_to_container"`
	CloseCode   int       `json:"close_code"`
	EndReason   string    `json:"end_reason"` // a fixed set, as the metrics' label
	Detail      string    `json:"detail"`     // the reason in words
	Recording   string    `json:"recording,omitempty"`
}

// Log writes records. A nil *Log writes nothing.
type Log struct {
	mu   sync.Mutex // guards f and failed, and keeps records whole
	path string     // "" for standard output
	f    *os.File
	// failed: the last write failed, so the next one opens the file
	// again first (it may be on a file system that went away).
	failed  bool
	dropped atomic.Uint64
}

// Open appends to the file at path (created 0600), or writes to standard
// output when path is "-".
func Open(path string) (*Log, error) {
	if path == "-" {
		return &Log{f: os.Stdout}, nil
	}
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	return &Log{path: path, f: f}, nil
}

func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return f, nil
}

// Reopen opens the file at the same path again, after a log rotation
// moved it away (on SIGHUP). On error the old file stays in use.
func (l *Log) Reopen() error {
	if l == nil || l.path == "" {
		return nil
	}
	f, err := openFile(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.Close()
	l.f, l.failed = f, false
	return nil
}

// Dropped reports how many records could not be written.
func (l *Log) Dropped() uint64 {
	if l == nil {
		return 0
	}
	return l.dropped.Load()
}

// Write appends r as one line, in one write with no buffer, so that a
// record is never held back when the process dies and a failed write
// leaves nothing behind to fail the next. A record that cannot be written
// is dropped (and counted); the error says why.
func (l *Log) Write(r Record) error {
	if l == nil {
		return nil
	}
	r.Type = "session"
	r.Start, r.End = r.Start.UTC().Round(time.Millisecond), r.End.UTC().Round(time.Millisecond)
	r.DurationMS = r.End.Sub(r.Start).Milliseconds()
	b, err := json.Marshal(r)
	if err != nil {
		l.dropped.Add(1)
		return fmt.Errorf("audit record dropped: %w", err)
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.write(b); err != nil {
		l.dropped.Add(1)
		return fmt.Errorf("audit record dropped: %w", err)
	}
	return nil
}

// write writes one record. After a failure it opens the file again first
// (keeping the old one if that fails), and a record written in part is
// cut off again, so the file holds whole lines only.
func (l *Log) write(b []byte) error {
	if l.failed && l.path != "" {
		if f, err := openFile(l.path); err == nil {
			l.f.Close()
			l.f = f
		}
	}
	n, err := l.f.Write(b)
	if l.failed = err != nil; !l.failed {
		return nil
	}
	if n > 0 && l.path != "" {
		// Appending left the offset at the end of what was written.
		if end, serr := l.f.Seek(0, io.SeekCurrent); serr == nil {
			l.f.Truncate(end - int64(n))
		}
	}
	return err
}

// Close closes the file (not standard output).
func (l *Log) Close() error {
	if l == nil || l.path == "" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
