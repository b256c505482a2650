// Package audit writes one JSON record per console session: who opened
// which container's console, from where, when, for how long, how much
// went each way and why it ended. Records are lines of JSON (one object
// per line), appended to a file or written to standard output.
package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
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
	mu     sync.Mutex
	path   string // "" for standard output
	w      *bufio.Writer
	closer io.Closer
}

// Open appends to the file at path (created 0600), or writes to standard
// output when path is "-".
func Open(path string) (*Log, error) {
	if path == "-" {
		return &Log{w: bufio.NewWriter(os.Stdout)}, nil
	}
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	return &Log{path: path, w: bufio.NewWriter(f), closer: f}, nil
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
	l.w.Flush()
	l.closer.Close()
	l.w, l.closer = bufio.NewWriter(f), f
	return nil
}

// Write appends r as one line, flushed at once so that a record is never
// held back (or half written) when the process dies.
func (l *Log) Write(r Record) error {
	if l == nil {
		return nil
	}
	r.Type = "session"
	r.Start, r.End = r.Start.UTC().Round(time.Millisecond), r.End.UTC().Round(time.Millisecond)
	r.DurationMS = r.End.Sub(r.Start).Milliseconds()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Write(b)
	l.w.WriteByte('\n')
	return l.w.Flush()
}

// Close flushes and closes the file.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.w.Flush()
	if l.closer != nil {
		if cerr := l.closer.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
