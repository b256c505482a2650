package recording

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// record runs steps against a Recorder and returns the file's events.
func record(t *testing.T, opts Options, steps func(r *Recorder)) (Header, []Event, string) {
	t.Helper()
	dir := t.TempDir() + "/rec"
	r, err := Create(dir, "my/container", "s1", opts)
	if err != nil {
		t.Fatal(err)
	}
	steps(r)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, r.Path(): 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode().Perm(), err, want)
		}
	}
	if strings.Contains(r.Path()[len(dir):], "/my/") {
		t.Errorf("container name not made safe: %s", r.Path())
	}
	h, evs, err := ReadFile(r.Path())
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	last := 0.0
	for _, e := range evs {
		if e.Time < last {
			t.Errorf("time goes back: %v after %v", e.Time, last)
		}
		last = e.Time
		if e.Kind == "o" {
			out.WriteString(e.Data)
		}
	}
	return h, evs, out.String()
}

func TestRecorder(t *testing.T) {
	euro := []byte("€") // 3 bytes
	cases := []struct {
		name       string
		opts       Options
		steps      func(r *Recorder)
		w, h       int
		kinds      string // the events' kinds in order
		wantOutput string
	}{
		{"output only, default size", Options{}, func(r *Recorder) { r.Output([]byte("hello\r\n")) }, 80, 24, "o", "hello\r\n"},
		{"resize before output sets the size", Options{}, func(r *Recorder) {
			r.Resize(40, 120)
			r.Output([]byte("$ "))
			r.Resize(50, 132)
		}, 120, 40, "or", "$ "},
		{"a character split across messages", Options{}, func(r *Recorder) {
			r.Output(append([]byte("price "), euro[:1]...))
			r.Output(euro[1:2])
			r.Output(append(euro[2:], " ok"...))
		}, 80, 24, "oo", "price € ok"},
		{"input off", Options{}, func(r *Recorder) { r.Input([]byte("ls\r")); r.Output([]byte("bin")) }, 80, 24, "o", "bin"},
		{"input on", Options{Input: true}, func(r *Recorder) { r.Input([]byte("ls\r")); r.Output([]byte("bin")) }, 80, 24, "io", "bin"},
		{"bytes that never complete", Options{}, func(r *Recorder) { r.Output([]byte{'a', 0xE2, 0x82}) }, 80, 24, "oo", "a\uFFFD\uFFFD"}, // one U+FFFD per invalid byte
		{"nothing at all", Options{}, func(*Recorder) {}, 80, 24, "", ""},
		// Event data are JSON strings: quotes, backslashes, control bytes,
		// a NUL, HTML characters and U+2028 all come back as they went in.
		{"JSON escaping", Options{}, func(r *Recorder) {
			r.Output([]byte("\"q\" \\ \x1b[1m\t\x00\r\n<a&b> \u2028 €"))
		}, 80, 24, "o", "\"q\" \\ \x1b[1m\t\x00\r\n<a&b> \u2028 €"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, evs, out := record(t, c.opts, c.steps)
			if h.Version != 2 || h.Width != c.w || h.Height != c.h || h.Timestamp == 0 {
				t.Errorf("header %+v, want version 2, %dx%d", h, c.w, c.h)
			}
			var kinds string
			for _, e := range evs {
				kinds += e.Kind
			}
			if kinds != c.kinds {
				t.Errorf("events %q, want %q", kinds, c.kinds)
			}
			if out != c.wantOutput {
				t.Errorf("output %q, want %q", out, c.wantOutput)
			}
		})
	}
}

// A recording never passes MaxSize: the event that would is not written,
// and it and every later call return ErrLimit; the file stays readable.
func TestMaxSize(t *testing.T) {
	dir := t.TempDir()
	const max = 4096
	r, err := Create(dir, "web", "s1", Options{Input: true, MaxSize: max})
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 100) + "\r\n")
	var wrote int
	for err = r.Output(line); err == nil; err = r.Output(line) {
		wrote++
	}
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("past MaxSize: %v, want ErrLimit", err)
	}
	for _, call := range []func() error{func() error { return r.Input([]byte("x")) }, func() error { return r.Resize(1, 1) }, r.Close} {
		if err := call(); !errors.Is(err, ErrLimit) {
			t.Errorf("after the limit: %v, want ErrLimit", err)
		}
	}
	fi, err := os.Stat(r.Path())
	if err != nil || fi.Size() > max || fi.Size() < max-200 {
		t.Fatalf("file of %v bytes (%v), want at most %d and within a line of it", fi.Size(), err, max)
	}
	_, evs, err := ReadFile(r.Path())
	if err != nil || len(evs) != wrote {
		t.Fatalf("%d events (%v), want the %d written", len(evs), err, wrote)
	}
}

// A recording is named <UTC time>-<container>-<session>.cast, the names
// kept to letters, digits, '-', '_' and '.', 64 bytes each at most and
// never starting with a dot, so that no name leaves the directory.
func TestFileName(t *testing.T) {
	dir := t.TempDir()
	r, err := Create(dir, "../a/Zz09-_.é", strings.Repeat("s", 70), Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	name := filepath.Base(r.Path())
	if filepath.Dir(r.Path()) != dir || !regexp.MustCompile(`^\d{8}T\d{6}Z-_a_Zz09-_\._-s{64}\.cast$`).MatchString(name) {
		t.Errorf("recording named %q in %s", name, filepath.Dir(r.Path()))
	}
	for c := rune(0); c < 0x180; c++ {
		in := "x" + string(c) + "y"
		want := "x_y"
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("-_.", c) {
			want = in
		}
		if got := safeName(in); got != want {
			t.Errorf("safeName(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"": "_", "...": "_", ".a": "a", strings.Repeat("b", 64): strings.Repeat("b", 64)} {
		if got := safeName(in); got != want {
			t.Errorf("safeName(%q) = %q, want %q", in, got, want)
		}
	}
}

// MaxSize is the most the file may hold: a header of exactly MaxSize bytes
// is written, one byte less is refused.
func TestMaxSizeExact(t *testing.T) {
	dir := t.TempDir()
	r, err := Create(dir, "web", "s1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	fi, err := os.Stat(r.Path())
	if err != nil {
		t.Fatal(err)
	}
	if r, err := Create(dir, "web", "s2", Options{MaxSize: fi.Size()}); err != nil {
		t.Errorf("a header of exactly MaxSize (%d bytes): %v", fi.Size(), err)
	} else {
		r.Close()
	}
	if _, err := Create(dir, "web", "s3", Options{MaxSize: fi.Size() - 1}); !errors.Is(err, ErrLimit) {
		t.Errorf("a header one byte over MaxSize: %v, want ErrLimit", err)
	}
}

// An event's time is the seconds from Create to the call that recorded
// it, to the microsecond.
func TestEventTime(t *testing.T) {
	t0 := time.Now()
	r, err := Create(t.TempDir(), "web", "s1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	time.Sleep(20 * time.Millisecond) // the time that passes is what is recorded
	before := time.Now()
	if err := r.Output([]byte("x")); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	_, evs, err := ReadFile(r.Path())
	if err != nil || len(evs) != 1 {
		t.Fatalf("events %+v, %v", evs, err)
	}
	lo, hi := before.Sub(created).Seconds()-1e-6, after.Sub(t0).Seconds()+1e-6
	if got := evs[0].Time; got < lo || got > hi {
		t.Errorf("event at %.6fs, want between %.6fs and %.6fs", got, lo, hi)
	}
}

// On a full disk: Create fails (the session is refused, not started
// unrecorded); a write that fails fails the call that made it and every
// later one (the session can refuse to forward what was not recorded), and
// the file keeps the whole events written before.
func TestFullDisk(t *testing.T) {
	testenv.OnSmallFS(t, 64<<10, func(t *testing.T, dir string) {
		fill := filepath.Join(dir, "fill")
		f, err := os.Create(fill)
		if err != nil {
			t.Fatal(err)
		}
		for page := make([]byte, 4096); err == nil; {
			_, err = f.Write(page)
		}
		f.Close()
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("filling the disk: %v", err)
		}
		if _, err := Create(dir, "web", "s1", Options{}); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Create on a full disk: %v, want ENOSPC", err)
		}
		if names, _ := os.ReadDir(dir); len(names) != 1 {
			t.Fatalf("%d files on the full disk, want the filler only", len(names))
		}
		// One page free (tmpfs allocates by pages): the header and a
		// short event fit, a long one does not.
		fi, _ := os.Stat(fill)
		if err := os.Truncate(fill, fi.Size()-4096); err != nil {
			t.Fatal(err)
		}
		r, err := Create(dir, "web", "s2", Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Output([]byte("kept")); err != nil {
			t.Fatal(err)
		}
		if err := r.Output(bytes.Repeat([]byte("lost "), 2000)); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("a write past the disk's end: %v, want ENOSPC", err)
		}
		if err := r.Output([]byte("x")); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("a write after a failed one: %v, want ENOSPC", err)
		}
		if err := r.Close(); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Close after a failed write: %v, want ENOSPC", err)
		}
		_, evs, err := ReadFile(r.Path())
		if err != nil || len(evs) != 1 || evs[0].Data != "kept" {
			t.Fatalf("events %+v (%v), want the one written before", evs, err)
		}
	})
}

// Create writes the header at once: a session is refused, not started
// unrecorded, when nothing can be written.
func TestCreateWritesTheHeader(t *testing.T) {
	dir := t.TempDir()
	r, err := Create(dir, "web", "s1", Options{Title: "web"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h, evs, err := ReadFile(r.Path())
	if err != nil || h.Version != 2 || h.Title != "web" || len(evs) != 0 {
		t.Fatalf("before any event: header %+v, %d events, %v", h, len(evs), err)
	}
	if _, err := Create(dir, "web", "s2", Options{MaxSize: 10}); !errors.Is(err, ErrLimit) {
		t.Fatalf("a header over MaxSize: %v", err)
	}
	if names, _ := os.ReadDir(dir); len(names) != 1 {
		t.Fatalf("%d files, want the first recording's only", len(names))
	}
}

func TestPlay(t *testing.T) {
	cast := `{"version": 2, "width": 80, "height": 24}
[0.5, "o", "hel"]
[0.7, "i", "x"]
[1.0, "r", "100x30"]
[60.0, "o", "lo"]
`
	var out bytes.Buffer
	// A minute of recording at speed 1000 with waits capped: quick.
	if err := Play(context.Background(), strings.NewReader(cast), &out, PlayOptions{Speed: 1000, MaxWait: 10e6}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "hello" {
		t.Errorf("played %q", out.String())
	}
	for _, bad := range []struct{ cast, err string }{
		{"", "empty recording"},
		{"not json\n", "recording header"},
		{`{"version": 1}` + "\n", "asciicast version 1, want 2"},
		{`{"version": 2}` + "\n[1, \"o\"]\n", "recording line 2: not an event"},
		{`{"version": 2}` + "\n[0, \"o\", \"x\"]\n\n[-1, \"o\", \"x\"]\n", "recording line 4: negative time"},
		{`{"version": 2}` + "\n[0, \"o\", 3]\n", "recording line 2: not an event"},
	} {
		err := Play(context.Background(), strings.NewReader(bad.cast), io.Discard, PlayOptions{})
		if err == nil || !strings.Contains(err.Error(), bad.err) {
			t.Errorf("%q: %v, want an error saying %q", bad.cast, err, bad.err)
		}
	}
}

// Play waits between events for their time difference divided by Speed,
// each wait at most MaxWait, and not at all when Speed is 0 or less. Waits
// are held to a lower bound measured on the clock (a timer never fires
// early) and an upper one by the context's deadline, far from the time the
// waits should take.
func TestPlayTiming(t *testing.T) {
	const header = `{"version": 2, "width": 80, "height": 24}` + "\n"
	events := func(times ...float64) string {
		s := header
		for i, tm := range times {
			s += fmt.Sprintf("[%g, \"o\", \"%d\"]\n", tm, i%10)
		}
		return s
	}
	// Thirty events a millisecond apart, a second in: at speed 10, 100 ms
	// then 0.1 ms each, about 0.1 s in all; waits counted from the start
	// instead of the last event would take 3 s.
	var close []float64
	for i := range 30 {
		close = append(close, 1+float64(i)*0.001)
	}
	cases := []struct {
		name     string
		cast     string
		opts     PlayOptions
		min      time.Duration
		deadline time.Duration
	}{
		{"slowed down", events(0, 0.05, 0.1), PlayOptions{Speed: 0.5}, 200 * time.Millisecond, time.Minute},
		{"time zero and no cap", events(0, 0, 0.1), PlayOptions{Speed: 1, MaxWait: 0}, 100 * time.Millisecond, time.Minute},
		{"waits from the last event", events(close...), PlayOptions{Speed: 10}, 100 * time.Millisecond, 2 * time.Second},
		{"time going back is no wait", events(0.1, 0.05, 0.1), PlayOptions{Speed: 1}, 100 * time.Millisecond, 2 * time.Second},
		{"capped", events(1000, 2000, 3000), PlayOptions{Speed: 1, MaxWait: 20 * time.Millisecond}, 60 * time.Millisecond, 5 * time.Second},
		{"speed 0: no waits", events(1000, 2000), PlayOptions{Speed: 0}, 0, 5 * time.Second},
		{"negative speed: no waits", events(1000, 2000), PlayOptions{Speed: -1}, 0, 5 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), c.deadline)
			defer cancel()
			var out strings.Builder
			start := time.Now()
			if err := Play(ctx, strings.NewReader(c.cast), &out, c.opts); err != nil {
				t.Fatalf("Play: %v (after %v; the waits should take %v)", err, time.Since(start), c.min)
			}
			if took := time.Since(start); took < c.min {
				t.Errorf("played in %v, want at least %v", took, c.min)
			}
			if want := strings.Count(c.cast, "\n") - 1; out.Len() != want {
				t.Errorf("played %q, want %d events' output", out.String(), want)
			}
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := Play(ctx, strings.NewReader(events(1)), io.Discard, PlayOptions{Speed: 1}); !errors.Is(err, context.Canceled) {
			t.Errorf("Play with a cancelled context: %v", err)
		}
	})
}

// FuzzReader: the events read back the same once written out again,
// times are never negative, and Play (without waits) prints the output
// events' data, refusing what the Reader refuses.
func FuzzReader(f *testing.F) {
	f.Add([]byte(`{"version": 2, "width": 80, "height": 24}` + "\n[0.1, \"o\", \"hi\"]\n"))
	f.Add([]byte(`{"version": 2}` + "\n[1e308, \"r\", \"1x1\"]\n\n[0, \"o\", \"\\u00e9\"]"))
	f.Add([]byte("[1,2,3]\n"))
	// Terminal output: lines end with CR LF.
	f.Add([]byte(`{"version": 2, "width": 80, "height": 24}` + "\n[0.5, \"o\", \"$ ls\\r\\n\"]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rd, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		var events []Event
		var out strings.Builder
		var readErr error
		for len(events) < 1000 {
			e, err := rd.Next()
			if err != nil {
				if err != io.EOF {
					readErr = err
				}
				break
			}
			if e.Time < 0 {
				t.Fatalf("event %+v: negative time", e)
			}
			events = append(events, e)
			if e.Kind == "o" {
				out.WriteString(e.Data)
			}
		}
		if len(events) == 1000 {
			return // Play would go on
		}
		var played strings.Builder
		if err := Play(context.Background(), bytes.NewReader(b), &played, PlayOptions{}); (err == nil) != (readErr == nil) || played.String() != out.String() {
			t.Fatalf("Play printed %q (%v); the Reader's output events hold %q (%v)", played.String(), err, out.String(), readErr)
		}
		header, _ := json.Marshal(rd.Header)
		again := append(header, '\n')
		for _, e := range events {
			line, _ := json.Marshal([]any{e.Time, e.Kind, e.Data})
			again = append(append(again, line...), '\n')
		}
		rd2, err := NewReader(bytes.NewReader(again))
		if err != nil {
			t.Fatalf("header %+v written out does not read back: %v", rd.Header, err)
		}
		for i, e := range events {
			if back, err := rd2.Next(); err != nil || back != e {
				t.Fatalf("event %d %+v written out reads back as %+v, %v", i, e, back, err)
			}
		}
		if _, err := rd2.Next(); err != io.EOF {
			t.Fatalf("after the events written out: %v, want io.EOF", err)
		}
	})
}
