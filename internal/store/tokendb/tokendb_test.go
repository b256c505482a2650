package tokendb

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/store"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// stores runs f against the embedded SQLite store and against a real
// MariaDB: one code, both databases.
func stores(t *testing.T, f func(t *testing.T, db *DB)) {
	t.Run("sqlite", func(t *testing.T) {
		db, err := OpenSQLite(context.Background(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		f(t, db)
	})
	t.Run("mariadb", func(t *testing.T) {
		z := testenv.NewEmptyDB(t, "tokens")
		db, err := OpenMySQL(context.Background(), z.DSN(), 20, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		f(t, db)
	})
}

func attachToken(ttl time.Duration, uses int) Token {
	return Token{Container: "c0ffee", Name: "web", Endpoint: "unix:///var/run/docker.sock", ExpiresAt: time.Now().Add(ttl), UsesLeft: uses}
}

func TestCreateConsume(t *testing.T) {
	stores(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		secret, tok, err := db.Create(ctx, Token{Container: "c0ffee", Name: "web", Endpoint: "tcp://127.0.0.1:2375", ExecID: "e1", Command: "sh", ExpiresAt: time.Now().Add(time.Minute), UsesLeft: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(secret) < 43 || tok.ID == "" {
			t.Fatalf("secret %q (want 256 bits), id %q", secret, tok.ID)
		}
		got, err := db.Consume(ctx, secret, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != tok.ID || got.Container != "c0ffee" || got.ExecID != "e1" || got.Command != "sh" || got.Endpoint != "tcp://127.0.0.1:2375" || got.UsesLeft != 1 {
			t.Fatalf("consumed %+v", got)
		}
		if _, err := db.Consume(ctx, secret, time.Now()); err != nil {
			t.Fatalf("second use of a 2-use token: %v", err)
		}
		if _, err := db.Consume(ctx, secret, time.Now()); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("third use: %v", err)
		}
		if _, err := db.Consume(ctx, "not-a-token", time.Now()); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown token: %v", err)
		}
	})
}

func TestExpiry(t *testing.T) {
	stores(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		secret, _, err := db.Create(ctx, attachToken(time.Minute, 5))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Consume(ctx, secret, time.Now().Add(61*time.Second)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("expired token: %v", err)
		}
		if _, err := db.Consume(ctx, secret, time.Now()); err != nil {
			t.Fatalf("token before expiry: %v", err)
		}
	})
}

func TestRevoke(t *testing.T) {
	stores(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		secret, tok, _ := db.Create(ctx, attachToken(time.Minute, 5))
		if err := db.Revoke(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		if err := db.Revoke(ctx, tok.ID); err != nil {
			t.Fatalf("revoking twice: %v", err)
		}
		if _, err := db.Consume(ctx, secret, time.Now()); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("revoked token: %v", err)
		}
		if err := db.Revoke(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown id: %v", err)
		}
		list, err := db.List(ctx)
		if err != nil || len(list) != 1 || !list[0].Revoked || list[0].ID != tok.ID {
			t.Fatalf("list %+v %v", list, err)
		}
	})
}

// 50 simultaneous attempts with one single-use token: exactly one wins.
func TestSingleUseUnderConcurrency(t *testing.T) {
	stores(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		secret, _, err := db.Create(ctx, attachToken(time.Minute, 1))
		if err != nil {
			t.Fatal(err)
		}
		var wins, losses atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := db.Consume(ctx, secret, time.Now())
				switch {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, store.ErrNotFound):
					losses.Add(1)
				default:
					t.Error(err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if wins.Load() != 1 || losses.Load() != 49 {
			t.Fatalf("%d wins, %d losses; want 1 and 49", wins.Load(), losses.Load())
		}
	})
}

// The database holds a hash, never the token.
func TestOnlyHashStored(t *testing.T) {
	dir := t.TempDir()
	db, err := OpenSQLite(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	secret, _, err := db.Create(context.Background(), attachToken(time.Minute, 1))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) == 0 {
		t.Fatal("no database files")
	}
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if bytes.Contains(data, []byte(secret)) {
			t.Fatalf("%s contains the raw token", f)
		}
	}
	if st, _ := os.Stat(filepath.Join(dir, "tokens.db")); st.Mode().Perm() != 0o600 {
		t.Errorf("tokens.db mode %v, want 0600", st.Mode().Perm())
	}
}

// Opening twice (a restart, or replicas starting together) migrates once.
func TestMigrationsIdempotent(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		db, err := OpenSQLite(context.Background(), dir)
		if err != nil {
			t.Fatalf("open #%d: %v", i+1, err)
		}
		db.Close()
	}
	z := testenv.NewEmptyDB(t, "tokmig")
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := OpenMySQL(context.Background(), z.DSN(), 2, 5*time.Second)
			if err == nil {
				db.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent open: %v", err)
		}
	}
	var n int
	z.QueryRow(`SELECT COUNT(*) FROM zun_wsproxy_schema`).Scan(&n)
	if n != len(migrations) {
		t.Errorf("%d schema versions recorded, want %d", n, len(migrations))
	}
}

// The SQLite store's files are the proxy's alone whatever the umask: the
// data directory 0700, tokens.db and its -wal and -shm 0600, also where an
// earlier version left them readable.
func TestSQLiteFilesPrivate(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	for _, tc := range []struct {
		name  string
		setUp func(t *testing.T, dir string)
	}{
		{"new directory", func(t *testing.T, dir string) {}},
		{"directory 0755", func(t *testing.T, dir string) {
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"files 0644", func(t *testing.T, dir string) {
			db, err := OpenSQLite(context.Background(), dir)
			if err != nil {
				t.Fatal(err)
			}
			db.Close()
			os.Chmod(dir, 0o755)
			for _, suffix := range []string{"", "-wal", "-shm"} {
				path := filepath.Join(dir, "tokens.db"+suffix)
				if err := os.WriteFile(path, nil, 0o644); suffix != "" && err != nil {
					t.Fatal(err)
				}
				os.Chmod(path, 0o644)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			tc.setUp(t, dir)
			check := func(when string) {
				t.Helper()
				if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
					t.Errorf("%s: data directory %v %v, want 0700", when, fi.Mode().Perm(), err)
				}
				for _, name := range []string{"tokens.db", "tokens.db-wal", "tokens.db-shm"} {
					if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o600 {
						t.Errorf("%s: %s %v %v, want 0600", when, name, fi.Mode().Perm(), err)
					}
				}
			}
			db, err := OpenSQLite(context.Background(), dir)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			check("after open")
			for i := 0; i < 3; i++ {
				if _, _, err := db.Create(context.Background(), attachToken(time.Minute, 1)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := db.db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
				t.Fatal(err)
			}
			check("after writes and a checkpoint")
		})
	}
}
