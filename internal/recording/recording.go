// Package recording records console sessions in asciinema's asciicast v2
// format (https://docs.asciinema.org/manual/asciicast/v2/): a JSON header
// line, then one JSON array per event, [seconds, "o"|"i"|"r", data]. Files
// play with `asciinema play` and with `zun-wsproxy replay`.
package recording

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/utf8tail"
)

// Default terminal size in the header when output comes before any resize
// (Zun's CLI never sends one).
const (
	DefaultCols = 80
	DefaultRows = 24
)

// Header is the first line of a recording.
type Header struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp,omitempty"`
	Title     string            `json:"title,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
}

// Options shape a Recorder.
type Options struct {
	// Input records what the client typed too ("i" events).
	Input bool
	Title string
}

// Recorder writes one session's recording. It is a proxy.Tap: Output,
// Input and Resize are called by the session's pumps as data goes by.
type Recorder struct {
	mu      sync.Mutex
	f       *os.File
	w       *bufio.Writer
	path    string
	opts    Options
	start   time.Time
	header  bool  // written
	err     error // first write error: recording stops, the session goes on
	outTail []byte
	inTail  []byte
}

// Create makes the recording file for a session in dir (created 0700 if
// missing); the file is 0600 and named so that names sort by time.
func Create(dir, container, session string, opts Options) (*Recorder, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("recording dir: %w", err)
	}
	now := time.Now()
	name := fmt.Sprintf("%s-%s-%s.cast", now.UTC().Format("20060102T150405Z"), safeName(container), safeName(session))
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	return &Recorder{f: f, w: bufio.NewWriterSize(f, 32<<10), path: path, opts: opts, start: now}, nil
}

// safeName keeps a file name to letters, digits, '-', '_' and '.'.
func safeName(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
	s = strings.TrimLeft(s, ".")
	if len(s) > 64 {
		s = s[:64]
	}
	if s == "" {
		s = "_"
	}
	return s
}

// Path is the recording's file.
func (r *Recorder) Path() string { return r.path }

// Output records container output.
func (r *Recorder) Output(p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.outTail = r.text("o", r.outTail, p)
}

// Input records keystrokes, if asked to.
func (r *Recorder) Input(p []byte) {
	if !r.opts.Input {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inTail = r.text("i", r.inTail, p)
}

// Resize records a terminal size change; before any output it sets the
// header's size instead.
func (r *Recorder) Resize(rows, cols int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.header {
		r.writeHeader(cols, rows)
		return
	}
	r.event("r", fmt.Sprintf("%dx%d", cols, rows))
}

// text records p after the bytes held from before, holding back an
// incomplete UTF-8 character at the end: event data are JSON strings.
func (r *Recorder) text(kind string, held, p []byte) []byte {
	buf := append(held, p...)
	keep := utf8tail.Incomplete(buf)
	if n := len(buf) - keep; n > 0 {
		r.event(kind, string(buf[:n]))
	}
	return append(held[:0], buf[len(buf)-keep:]...)
}

func (r *Recorder) writeHeader(cols, rows int) {
	r.header = true
	h := Header{Version: 2, Width: cols, Height: rows, Timestamp: r.start.Unix(), Title: r.opts.Title,
		Env: map[string]string{"TERM": "xterm-256color"}}
	b, _ := json.Marshal(h)
	r.write(b)
}

func (r *Recorder) event(kind, data string) {
	if !r.header {
		r.writeHeader(DefaultCols, DefaultRows)
	}
	// Invalid UTF-8 inside data becomes U+FFFD (encoding/json does it).
	d, _ := json.Marshal(data)
	line := fmt.Appendf(nil, "[%.6f, %q, %s]", time.Since(r.start).Seconds(), kind, d)
	r.write(line)
}

func (r *Recorder) write(line []byte) {
	if r.err != nil {
		return
	}
	r.w.Write(line)
	if err := r.w.WriteByte('\n'); err != nil {
		r.err = err
	}
}

// Close writes what was held back and closes the file.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.outTail) > 0 {
		r.event("o", string(r.outTail))
	}
	if len(r.inTail) > 0 {
		r.event("i", string(r.inTail))
	}
	if !r.header {
		r.writeHeader(DefaultCols, DefaultRows)
	}
	err := r.w.Flush()
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	if r.err != nil {
		return r.err
	}
	return err
}
