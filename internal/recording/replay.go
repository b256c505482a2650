package recording

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Event is one recorded event.
type Event struct {
	Time float64 // seconds since the start
	Kind string  // "o" output, "i" input, "r" resize, "m" marker
	Data string
}

// Reader reads a recording event by event.
type Reader struct {
	sc     *bufio.Scanner
	Header Header
	line   int
}

// NewReader reads the header of a recording.
func NewReader(r io.Reader) (*Reader, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	rd := &Reader{sc: sc}
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("empty recording")
	}
	rd.line = 1
	if err := json.Unmarshal(sc.Bytes(), &rd.Header); err != nil {
		return nil, fmt.Errorf("recording header: %w", err)
	}
	if rd.Header.Version != 2 {
		return nil, fmt.Errorf("recording header: asciicast version %d, want 2", rd.Header.Version)
	}
	return rd, nil
}

// Next returns the next event, or io.EOF.
func (rd *Reader) Next() (Event, error) {
	for rd.sc.Scan() {
		rd.line++
		b := bytes.TrimSpace(rd.sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var raw []json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil || len(raw) != 3 {
			return Event{}, fmt.Errorf("recording line %d: not an event [time, type, data]", rd.line)
		}
		var e Event
		if json.Unmarshal(raw[0], &e.Time) != nil || json.Unmarshal(raw[1], &e.Kind) != nil || json.Unmarshal(raw[2], &e.Data) != nil {
			return Event{}, fmt.Errorf("recording line %d: not an event [time, type, data]", rd.line)
		}
		if e.Time < 0 {
			return Event{}, fmt.Errorf("recording line %d: negative time", rd.line)
		}
		return e, nil
	}
	if err := rd.sc.Err(); err != nil {
		return Event{}, err
	}
	return Event{}, io.EOF
}

// ReadFile reads a whole recording.
func ReadFile(path string) (Header, []Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, nil, err
	}
	defer f.Close()
	rd, err := NewReader(f)
	if err != nil {
		return Header{}, nil, err
	}
	var evs []Event
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return rd.Header, evs, nil
		}
		if err != nil {
			return rd.Header, evs, err
		}
		evs = append(evs, e)
	}
}

// PlayOptions shape Play.
type PlayOptions struct {
	// Speed divides the waits (1: as recorded); 0 or less: no waits.
	Speed float64
	// MaxWait caps any one wait (0: no cap), as asciinema's idle limit.
	MaxWait time.Duration
}

// Play writes the recording's output to w with its timing.
func Play(ctx context.Context, r io.Reader, w io.Writer, o PlayOptions) error {
	rd, err := NewReader(r)
	if err != nil {
		return err
	}
	last := 0.0
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if o.Speed > 0 && e.Time > last {
			wait := time.Duration((e.Time - last) / o.Speed * float64(time.Second))
			if o.MaxWait > 0 && wait > o.MaxWait {
				wait = o.MaxWait
			}
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if e.Time > last {
			last = e.Time
		}
		if e.Kind == "o" {
			if _, err := io.WriteString(w, e.Data); err != nil {
				return err
			}
		}
	}
}
