package recording

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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
	for _, bad := range []string{"", "not json\n", `{"version": 1}` + "\n", `{"version": 2}` + "\n[1, \"o\"]\n", `{"version": 2}` + "\n[-1, \"o\", \"x\"]\n"} {
		if err := Play(context.Background(), strings.NewReader(bad), io.Discard, PlayOptions{}); err == nil {
			t.Errorf("%q played without error", bad)
		}
	}
}

func FuzzReader(f *testing.F) {
	f.Add([]byte(`{"version": 2, "width": 80, "height": 24}` + "\n[0.1, \"o\", \"hi\"]\n"))
	f.Add([]byte(`{"version": 2}` + "\n[1e308, \"r\", \"1x1\"]\n\n[0, \"o\", \"\\u00e9\"]"))
	f.Add([]byte("[1,2,3]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rd, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		for i := 0; i < 1000; i++ {
			if _, err := rd.Next(); err != nil {
				return
			}
		}
	})
}
