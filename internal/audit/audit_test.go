package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
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
