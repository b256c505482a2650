// Package recording records console sessions in asciinema's asciicast v2
// format (https://docs.asciinema.org/manual/asciicast/v2/): a JSON header
// line, then one JSON array per event, [seconds, "o"|"i"|"r", data]. Files
// play with `asciinema play` and with `zun-wsproxy replay`.
package recording

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	// MaxSize bounds the file, in bytes (0: no bound). An event that would
	// take it past MaxSize is not written: the call returns ErrLimit.
	MaxSize int64
}

// ErrLimit: the recording reached Options.MaxSize.
var ErrLimit = errors.New("recording size limit reached")

// Recorder writes one session's recording. Its Output, Input and Resize
// are called by the session's pumps as data goes by (server adapts it to
// a proxy.Tap). Each event is written through as it comes, so that a full
// disk shows at once, in the call that could not record: its caller can
// refuse to forward what was not recorded. After the first error every
// call returns it.
type Recorder struct {
	mu      sync.Mutex // guards the following
	f       *os.File
	path    string
	opts    Options
	start   time.Time
	size    int64 // bytes in the file
	events  int   // written after the header
	err     error // first error: nothing more is written
	outTail []byte
	inTail  []byte
}

// Create makes the recording file for a session in dir (created 0700 if
// missing); the file is 0600 and named so that names sort by time. The
// header is written and synced before Create returns, so that a full or
// failing disk refuses the session rather than leaving it unrecorded.
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
	r := &Recorder{f: f, path: path, opts: opts, start: now}
	err = r.write(r.header(DefaultCols, DefaultRows))
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("recording %s: %w", path, err)
	}
	return r, nil
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
func (r *Recorder) Output(p []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	r.outTail, err = r.text("o", r.outTail, p)
	return err
}

// Input records keystrokes, if asked to.
func (r *Recorder) Input(p []byte) error {
	if !r.opts.Input {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	r.inTail, err = r.text("i", r.inTail, p)
	return err
}

// Resize records a terminal size change; before any event it sets the
// header's size instead.
func (r *Recorder) Resize(rows, cols int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.events == 0 && r.err == nil {
		return r.rewriteHeader(cols, rows)
	}
	return r.event("r", fmt.Sprintf("%dx%d", cols, rows))
}

// text records p after the bytes held from before, holding back an
// incomplete UTF-8 character at the end: event data are JSON strings.
func (r *Recorder) text(kind string, held, p []byte) ([]byte, error) {
	buf := append(held, p...)
	keep := utf8tail.Incomplete(buf)
	var err error
	if n := len(buf) - keep; n > 0 {
		err = r.event(kind, string(buf[:n]))
	}
	return append(held[:0], buf[len(buf)-keep:]...), err
}

func (r *Recorder) header(cols, rows int) []byte {
	h := Header{Version: 2, Width: cols, Height: rows, Timestamp: r.start.Unix(), Title: r.opts.Title,
		Env: map[string]string{"TERM": "xterm-256color"}}
	b, _ := json.Marshal(h)
	return append(b, '\n')
}

// rewriteHeader replaces the header, the file's only line, with one of
// another size.
func (r *Recorder) rewriteHeader(cols, rows int) error {
	if err := r.f.Truncate(0); err != nil {
		r.err = fmt.Errorf("recording: %w", err)
		return r.err
	}
	if _, err := r.f.Seek(0, io.SeekStart); err != nil {
		r.err = fmt.Errorf("recording: %w", err)
		return r.err
	}
	r.size = 0
	return r.write(r.header(cols, rows))
}

func (r *Recorder) event(kind, data string) error {
	// Invalid UTF-8 inside data becomes U+FFFD (encoding/json does it).
	d, _ := json.Marshal(data)
	line := fmt.Appendf(nil, "[%.6f, %q, %s]\n", time.Since(r.start).Seconds(), kind, d)
	if err := r.write(line); err != nil {
		return err
	}
	r.events++
	return nil
}

// write appends one whole line, or nothing: a line that would pass
// MaxSize is not written, and what a failed write left of its line is cut
// off again, so the file stays a valid recording.
func (r *Recorder) write(line []byte) error {
	if r.err != nil {
		return r.err
	}
	if r.opts.MaxSize > 0 && r.size+int64(len(line)) > r.opts.MaxSize {
		r.err = fmt.Errorf("%w (%d bytes)", ErrLimit, r.opts.MaxSize)
		return r.err
	}
	if n, err := r.f.Write(line); err != nil {
		if n > 0 {
			r.f.Truncate(r.size)
			r.f.Seek(r.size, io.SeekStart)
		}
		r.err = fmt.Errorf("recording: %w", err)
		return r.err
	}
	r.size += int64(len(line))
	return nil
}

// Close writes what was held back, if it can, and closes the file. It
// returns the first error the recording met, if any.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.outTail) > 0 {
		r.event("o", string(r.outTail))
	}
	if len(r.inTail) > 0 {
		r.event("i", string(r.inTail))
	}
	err := r.f.Close()
	if r.err != nil {
		return r.err
	}
	if err != nil {
		return fmt.Errorf("recording: %w", err)
	}
	return nil
}
