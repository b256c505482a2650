// Package tokendb keeps the proxy's own console tokens (standalone mode)
// in an embedded SQLite file or in a MySQL/MariaDB database that several
// replicas share: one schema, migrated when the store opens. Tokens are
// stored only as SHA-256 hashes, and consuming one is a single atomic
// UPDATE, so two simultaneous uses of a single-use token get one session.
package tokendb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "modernc.org/sqlite" // pure Go SQLite: no cgo

	"github.com/zun-wsproxy/zun-wsproxy/internal/rawsock"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store"
)

// Token is a console token's record. The secret itself is never stored.
type Token struct {
	ID        string // public id, for listing and revoking
	Container string // Docker's container id
	Name      string // the container's name
	Endpoint  string // Docker API URL of its host
	ExecID    string // Docker exec id; "" for attach
	Command   string // the exec's command line, for display
	CreatedAt time.Time
	ExpiresAt time.Time
	UsesLeft  int
	Revoked   bool
}

// DB is the token store.
type DB struct {
	db      *sql.DB
	dialect dialect
	timeout time.Duration

	// The statements of Consume, prepared at open (every session runs
	// them); readOne is nil where consume returns the row itself.
	consume, readOne *sql.Stmt
}

type dialect struct {
	name         string
	insertIgnore string // INSERT that skips a duplicate key
	// returning: UPDATE … RETURNING exists (SQLite; not MariaDB 10/11), so
	// a token is used and read in one statement.
	returning bool
}

var (
	sqliteDialect = dialect{name: "sqlite", insertIgnore: "INSERT OR IGNORE", returning: true}
	mysqlDialect  = dialect{name: "mysql", insertIgnore: "INSERT IGNORE"}
)

// OpenSQLite opens (creating it and its directory if needed) the SQLite
// store tokens.db in dataDir, migrating it until ctx ends. The directory is
// made 0700 and the store's files 0600, whatever the umask, also where
// they exist already.
func OpenSQLite(ctx context.Context, dataDir string) (*DB, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := os.Chmod(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("make data dir private: %w", err)
	}
	path := filepath.Join(dataDir, "tokens.db")
	if err := privateFiles(path); err != nil {
		return nil, err
	}
	// WAL lets readers run beside the writer; busy_timeout queues writers
	// instead of failing them.
	dsn := "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// One writer at a time is SQLite's model; one connection keeps the
	// atomic consume free of SQLITE_BUSY.
	db.SetMaxOpenConns(1)
	d := &DB{db: db, dialect: sqliteDialect, timeout: 5 * time.Second}
	if err := d.setUp(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// privateFiles makes the SQLite database at path and its side files 0600.
// SQLite creates the -wal and -shm files with the database file's mode, so
// the database file is created 0600 before SQLite opens it.
func privateFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("make %s private: %w", p, err)
		}
	}
	return nil
}

// OpenMySQL opens the store in a MySQL/MariaDB database (a
// go-sql-driver/mysql DSN), migrating it until ctx ends.
func OpenMySQL(ctx context.Context, dsn string, maxOpen int, timeout time.Duration) (*DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("database dsn: %w", err)
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	cfg.ParseTime = true
	if cfg.Timeout == 0 {
		cfg.Timeout = timeout
	}
	// Raw reads and writes (internal/rawsock): a query's would otherwise
	// wake the runtime's monitor thread at every session set up.
	cfg.DialFunc = rawsock.DialContext
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("database dsn: %w", err)
	}
	db := sql.OpenDB(connector)
	// Each new connection prepares the statements again.
	store.SizePool(db, max(maxOpen, 1))
	d := &DB{db: db, dialect: mysqlDialect, timeout: timeout}
	if err := d.setUp(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return d, nil
}

// setUp migrates the schema and prepares the statements every session
// runs (Consume's), once.
func (d *DB) setUp(ctx context.Context) error {
	if err := d.migrate(ctx); err != nil {
		return err
	}
	consume := `UPDATE console_tokens SET uses_left = uses_left - 1
		WHERE token_hash = ? AND uses_left > 0 AND revoked = 0 AND expires_at > ?`
	if d.dialect.returning {
		consume += ` RETURNING ` + columns
	}
	var err error
	if d.consume, err = d.db.PrepareContext(ctx, consume); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	if d.dialect.returning {
		return nil
	}
	if d.readOne, err = d.db.PrepareContext(ctx, `SELECT `+columns+` FROM console_tokens WHERE token_hash = ?`); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	return nil
}

// Close closes the store.
func (d *DB) Close() error {
	d.consume.Close()
	if d.readOne != nil {
		d.readOne.Close()
	}
	return d.db.Close()
}

// Ping checks that the store answers.
func (d *DB) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if err := d.db.PingContext(ctx); err != nil {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return nil
}

// migrations are applied in order, each once; every statement is
// idempotent so that replicas starting together cannot trip over each other.
var migrations = []string{
	`CREATE TABLE IF NOT EXISTS console_tokens (
		id VARCHAR(32) NOT NULL PRIMARY KEY,
		token_hash CHAR(64) NOT NULL UNIQUE,
		container VARCHAR(128) NOT NULL,
		name VARCHAR(255) NOT NULL,
		endpoint VARCHAR(255) NOT NULL,
		exec_id VARCHAR(128) NOT NULL,
		command VARCHAR(1024) NOT NULL,
		created_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL,
		uses_left INTEGER NOT NULL,
		revoked INTEGER NOT NULL
	)`,
}

func (d *DB) migrate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := d.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS zun_wsproxy_schema (version INTEGER NOT NULL PRIMARY KEY)`); err != nil {
		return fmt.Errorf("migrate: %w", unavailable(err))
	}
	var current sql.NullInt64
	if err := d.db.QueryRowContext(ctx, `SELECT MAX(version) FROM zun_wsproxy_schema`).Scan(&current); err != nil {
		return fmt.Errorf("migrate: %w", unavailable(err))
	}
	for v := int(current.Int64); v < len(migrations); v++ {
		if _, err := d.db.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
		if _, err := d.db.ExecContext(ctx, d.dialect.insertIgnore+` INTO zun_wsproxy_schema (version) VALUES (?)`, v+1); err != nil {
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
	}
	return nil
}

// hashSecret is what the store keeps of a secret.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// Create stores a new token for t (its ID, CreatedAt are set here) and
// returns the secret, which exists nowhere else: 256 random bits.
func (d *DB) Create(ctx context.Context, t Token) (string, Token, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	secret := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	t.ID = hex.EncodeToString(randomBytes(8))
	t.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	t.ExpiresAt = t.ExpiresAt.UTC().Truncate(time.Millisecond)
	_, err := d.db.ExecContext(ctx, `INSERT INTO console_tokens
		(id, token_hash, container, name, endpoint, exec_id, command, created_at, expires_at, uses_left, revoked)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)`,
		t.ID, hashSecret(secret), t.Container, t.Name, t.Endpoint, t.ExecID, t.Command,
		t.CreatedAt.UnixMilli(), t.ExpiresAt.UnixMilli(), t.UsesLeft)
	if err != nil {
		return "", Token{}, fmt.Errorf("store token: %w", unavailable(err))
	}
	return secret, t, nil
}

const columns = `id, container, name, endpoint, exec_id, command, created_at, expires_at, uses_left, revoked`

func scan(row interface{ Scan(...any) error }) (Token, error) {
	var t Token
	var created, expires int64
	var revoked int
	if err := row.Scan(&t.ID, &t.Container, &t.Name, &t.Endpoint, &t.ExecID, &t.Command, &created, &expires, &t.UsesLeft, &revoked); err != nil {
		return Token{}, err
	}
	t.CreatedAt, t.ExpiresAt, t.Revoked = time.UnixMilli(created).UTC(), time.UnixMilli(expires).UTC(), revoked != 0
	return t, nil
}

// Consume uses the token once, if it is valid at now: not expired, not
// revoked, with uses left. The decrement is one conditional UPDATE, so
// concurrent uses (from any replica) cannot exceed the count. Any invalid
// token is store.ErrNotFound.
func (d *DB) Consume(ctx context.Context, secret string, now time.Time) (Token, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	h := hashSecret(secret)
	if d.dialect.returning {
		t, err := scan(d.consume.QueryRowContext(ctx, h, now.UnixMilli()))
		if errors.Is(err, sql.ErrNoRows) {
			return Token{}, fmt.Errorf("token: %w", store.ErrNotFound)
		}
		if err != nil {
			return Token{}, fmt.Errorf("consume token: %w", unavailable(err))
		}
		return t, nil
	}
	res, err := d.consume.ExecContext(ctx, h, now.UnixMilli())
	if err != nil {
		return Token{}, fmt.Errorf("consume token: %w", unavailable(err))
	}
	if n, err := res.RowsAffected(); err != nil {
		return Token{}, fmt.Errorf("consume token: %w", unavailable(err))
	} else if n != 1 {
		return Token{}, fmt.Errorf("token: %w", store.ErrNotFound)
	}
	t, err := scan(d.readOne.QueryRowContext(ctx, h))
	if err != nil {
		return Token{}, fmt.Errorf("read token: %w", unavailable(err))
	}
	return t, nil
}

// List returns every token, newest first.
func (d *DB) List(ctx context.Context) ([]Token, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	rows, err := d.db.QueryContext(ctx, `SELECT `+columns+` FROM console_tokens ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", unavailable(err))
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		t, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", unavailable(err))
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", unavailable(err))
	}
	return out, nil
}

// Revoke makes a token unusable. An unknown id is store.ErrNotFound.
func (d *DB) Revoke(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	res, err := d.db.ExecContext(ctx, `UPDATE console_tokens SET revoked = 1 WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("revoke token: %w", unavailable(err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		// MySQL counts changed rows only: tell "already revoked" apart.
		var one int
		if err := d.db.QueryRowContext(ctx, `SELECT 1 FROM console_tokens WHERE id = ?`, id).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("token %s: %w", id, store.ErrNotFound)
		} else if err != nil {
			return fmt.Errorf("revoke token: %w", unavailable(err))
		}
	}
	return nil
}

func unavailable(err error) error {
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}
