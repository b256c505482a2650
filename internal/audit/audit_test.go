package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

func TestRecordsAreWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Write(Record{Session: fmt.Sprint(i), Kind: "attach", Container: "c", Client: "127.0.0.1:1",
				Start: start, End: start.Add(1500 * time.Millisecond), ToClient: int64(i), EndReason: "client_closed"})
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	f, _ := os.Open(path)
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if r.Type != "session" || r.DurationMS != 1500 || r.EndReason != "client_closed" {
			t.Errorf("record %+v", r)
		}
		seen[r.Session] = true
	}
	if len(seen) != 50 {
		t.Errorf("%d distinct records, want 50", len(seen))
	}
	var nilLog *Log
	if err := nilLog.Write(Record{}); err != nil {
		t.Errorf("nil log: %v", err)
	}
}

func TestReopenAfterRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Write(Record{Session: "before"})
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Write(Record{Session: "after"})
	for file, want := range map[string]string{path + ".1": `"session":"before"`, path: `"session":"after"`} {
		data, _ := os.ReadFile(file)
		if lines := strings.Count(string(data), "\n"); lines != 1 || !strings.Contains(string(data), want) {
			t.Errorf("%s holds %q, want one record with %s", file, data, want)
		}
	}
}

// fill writes to a file in dir until the file system is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 512)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the file system: %v", err)
			}
			return path
		}
	}
}

// A full disk drops records (each whole: no torn line is left behind),
// and once space is freed the next record is written, without a reopen.
func TestRecoversWhenSpaceIsFreed(t *testing.T) {
	testenv.OnSmallFS(t, 16<<10, func(t *testing.T, dir string) {
		path := filepath.Join(dir, "audit.log")
		l, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		rec := func(id string) Record {
			return Record{Session: id, Kind: "attach", Container: "c", Client: "127.0.0.1:1", Detail: strings.Repeat("d", 300)}
		}
		if err := l.Write(rec("before")); err != nil {
			t.Fatal(err)
		}
		filler := fill(t, dir)
		// What is left of the log's last page takes a few records; then
		// one is torn and dropped, and the rest are dropped whole.
		written, dropped := 1, 0
		for i := 0; dropped < 3; i++ {
			if err := l.Write(rec(fmt.Sprint("full-", i))); err == nil {
				written++
			} else if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("record %d: %v, want ENOSPC", i, err)
			} else {
				dropped++
			}
			if i > 100 {
				t.Fatal("the full file system took 100 records")
			}
		}
		if got := l.Dropped(); got != uint64(dropped) {
			t.Errorf("%d records counted as dropped, want %d", got, dropped)
		}
		if os.Remove(filler) != nil {
			t.Fatal("cannot free the space")
		}
		if err := l.Write(rec("after")); err != nil {
			t.Fatalf("first record after the space was freed: %v", err)
		}
		written++
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		for _, line := range lines {
			var r Record
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("torn line %.60q…: %v", line, err)
			}
		}
		if len(lines) != written || !strings.Contains(lines[len(lines)-1], `"session":"after"`) {
			t.Fatalf("%d records in the log, want %d ending with \"after\"", len(lines), written)
		}
	})
}
