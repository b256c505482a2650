// Package zunsql reads console targets from Zun's own database: the
// container and exec_instance tables, on MySQL or MariaDB, exactly as Zun's
// models lay them out.
package zunsql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/zun-wsproxy/zun-wsproxy/internal/rawsock"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store"
	"github.com/zun-wsproxy/zun-wsproxy/internal/workers"
)

// Options bound the connection pool and each query.
type Options struct {
	MaxOpen      int           // most open connections (0: 55, oslo.db's 5+50)
	QueryTimeout time.Duration // per lookup (0: 5s)
	Logger       *slog.Logger  // for the driver's messages (nil: its default, standard error)
	// Workers sends gathered lookups' queries (nil: a goroutine of its
	// own for each).
	Workers *workers.Pool
}

// DB looks up containers and exec instances in Zun's database.
type DB struct {
	db      *sql.DB
	timeout time.Duration
	tls     bool // connections use TLS
	// slots bounds lookups at once to the pool's size, so that none waits
	// for a connection in database/sql, where only its context would bound
	// the wait: a lookup waits here instead, at most timeout.
	slots chan struct{}
	// byUUID gathers lookups by uuid into shared queries; senders are
	// the goroutines sending gathered ones.
	byUUID  uuidBatcher
	senders sync.WaitGroup
	workers *workers.Pool
}

// Open prepares a pool for dsn (a go-sql-driver/mysql DSN). It does not
// connect: a database that is down at start-up makes lookups fail with
// store.ErrUnavailable until it is back.
func Open(dsn string, opts Options) (*DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("database dsn: %w", err)
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = 5 * time.Second
	}
	// No lookup outlasts QueryTimeout (its context ends), so neither need
	// the dial nor a read or write. The read and write bounds are for the
	// connections the pool opens on its own, under no lookup's context,
	// when a lookup that wanted one has given up: against a database that
	// accepts connections and never answers, such a connection would wait
	// for its greeting, and hold a place in the pool, forever.
	for _, d := range []*time.Duration{&cfg.Timeout, &cfg.ReadTimeout, &cfg.WriteTimeout} {
		if *d == 0 || *d > opts.QueryTimeout {
			*d = opts.QueryTimeout
		}
	}
	cfg.ParseTime = true
	if opts.Logger != nil {
		cfg.Logger = driverLog{opts.Logger}
	}
	// Raw reads and writes (internal/rawsock): a query's would otherwise
	// wake the runtime's monitor thread at every session set up.
	cfg.DialFunc = rawsock.DialContext
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("database dsn: %w", err)
	}
	db := sql.OpenDB(connector)
	if opts.MaxOpen <= 0 {
		opts.MaxOpen = 55
	}
	store.SizePool(db, opts.MaxOpen)
	return &DB{db: db, timeout: opts.QueryTimeout, tls: cfg.TLS != nil, slots: make(chan struct{}, opts.MaxOpen), workers: opts.Workers}, nil
}

// lookup returns the context for one lookup and the function that ends
// it, once it has a slot (waiting at most the query timeout). The context
// ends at the query timeout: the connections' read and write timeouts
// bound each read and write, not a lookup, and a database that answers a
// byte at a time would keep a lookup (its slot, its client's place in
// the failure limiter, Shutdown's wait) for as long as it likes. Its
// cost, the driver's watcher goroutine taking the query (two goroutine
// switches, about 3 % of a session's set-up CPU), buys that bound.
func (d *DB) lookup(ctx context.Context) (context.Context, func(), error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	select {
	case d.slots <- struct{}{}:
	case <-ctx.Done():
		cancel()
		return nil, nil, d.unavailable(fmt.Errorf("no database connection free within %v: %w", d.timeout, ctx.Err()))
	}
	return ctx, func() { <-d.slots; cancel() }, nil
}

// Stats reports the connection pool's state.
func (d *DB) Stats() sql.DBStats { return d.db.Stats() }

// Close closes the pool, once the queries under way have ended.
func (d *DB) Close() error {
	err := d.db.Close()
	d.senders.Wait()
	return err
}

// Ping checks that the database answers.
func (d *DB) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if err := d.db.PingContext(ctx); err != nil {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return nil
}

// Plain containers only (container_type 0), across all projects, as Zun's
// proxy looks them up with an admin context.
const containerColumns = `SELECT id, uuid, name, container_id, host, websocket_url, websocket_token, updated_at, project_id, user_id FROM container `

// ContainerByUUID returns the container with this uuid, one that
// auth.IsUUIDLike accepts. Lookups arriving together share a query
// (batch.go), and so its failure.
func (d *DB) ContainerByUUID(ctx context.Context, uuid string) (store.Container, error) {
	c, err := d.containerByUUID(ctx, uuid)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.Container{}, fmt.Errorf("look up container by uuid: %w", err)
	}
	return c, err
}

// ContainersByName returns the containers with this name, oldest first,
// at most store.MaxSameName of them; none is store.ErrNotFound. Zun lets
// names repeat: which one a request means is for its token to tell.
func (d *DB) ContainersByName(ctx context.Context, name string) ([]store.Container, error) {
	cs, err := d.containers(ctx, containerColumns+`WHERE name = ? AND container_type = 0 ORDER BY id LIMIT `+strconv.Itoa(store.MaxSameName), name)
	if err != nil {
		return nil, fmt.Errorf("look up container by name: %w", err)
	}
	if len(cs) == 0 {
		return nil, fmt.Errorf("container named %q: %w", name, store.ErrNotFound)
	}
	return cs, nil
}

func (d *DB) containers(ctx context.Context, query string, args ...any) ([]store.Container, error) {
	ctx, done, err := d.lookup(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, d.unavailable(err)
	}
	defer rows.Close()
	var out []store.Container
	for rows.Next() {
		var c store.Container
		var uuid, name, cid, host, url, token, project, user sql.NullString
		var updated sql.NullTime
		if err := rows.Scan(&c.ID, &uuid, &name, &cid, &host, &url, &token, &updated, &project, &user); err != nil {
			return nil, d.unavailable(err)
		}
		c.ProjectID, c.UserID = project.String, user.String
		c.UUID, c.Name, c.ContainerID, c.Host = uuid.String, name.String, cid.String, host.String
		c.WebsocketURL, c.WebsocketToken, c.UpdatedAt = url.String, token.String, updated.Time
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, d.unavailable(err)
	}
	return out, nil
}

// ExecInstances returns the exec instances execID of the containers with
// primary keys containerIDs (one, or the containers sharing a name); none
// is store.ErrNotFound.
func (d *DB) ExecInstances(ctx context.Context, containerIDs []int64, execID string) ([]store.ExecInstance, error) {
	if len(containerIDs) == 0 {
		return nil, fmt.Errorf("exec %s: %w", execID, store.ErrNotFound)
	}
	ctx, done, err := d.lookup(ctx)
	if err != nil {
		return nil, fmt.Errorf("look up exec instance: %w", err)
	}
	defer done()
	args := []any{execID}
	for _, id := range containerIDs {
		args = append(args, id)
	}
	in := strings.Repeat(",?", len(containerIDs))[1:]
	rows, err := d.db.QueryContext(ctx,
		`SELECT container_id, exec_id, token, url, COALESCE(updated_at, created_at) FROM exec_instance WHERE exec_id = ? AND container_id IN (`+in+`) ORDER BY container_id`,
		args...)
	if err != nil {
		return nil, fmt.Errorf("look up exec instance: %w", d.unavailable(err))
	}
	defer rows.Close()
	var out []store.ExecInstance
	for rows.Next() {
		var e store.ExecInstance
		var token, url sql.NullString
		var updated sql.NullTime
		if err := rows.Scan(&e.ContainerID, &e.ExecID, &token, &url, &updated); err != nil {
			return nil, fmt.Errorf("look up exec instance: %w", d.unavailable(err))
		}
		e.Token, e.URL, e.UpdatedAt = token.String, url.String, updated.Time
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up exec instance: %w", d.unavailable(err))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("exec %s: %w", execID, store.ErrNotFound)
	}
	return out, nil
}

// ConsumeAttachToken clears the container's websocket_token if it still is
// token: one conditional UPDATE, so of several proxies (or connections)
// presenting one token only one succeeds. It reports whether this call
// cleared it.
func (d *DB) ConsumeAttachToken(ctx context.Context, containerID int64, token string) (bool, error) {
	// BINARY: Zun's tables use a case-insensitive collation.
	return d.consume(ctx, `UPDATE container SET websocket_token = NULL WHERE id = ? AND BINARY websocket_token = BINARY ?`, containerID, token)
}

// ConsumeExecToken clears an exec instance's token if it still is token.
func (d *DB) ConsumeExecToken(ctx context.Context, containerID int64, execID, token string) (bool, error) {
	return d.consume(ctx, `UPDATE exec_instance SET token = NULL WHERE container_id = ? AND exec_id = ? AND BINARY token = BINARY ?`, containerID, execID, token)
}

func (d *DB) consume(ctx context.Context, query string, args ...any) (bool, error) {
	ctx, done, err := d.lookup(ctx)
	if err != nil {
		return false, fmt.Errorf("consume token: %w", err)
	}
	defer done()
	res, err := d.db.ExecContext(ctx, query, args...)
	if err != nil {
		return false, fmt.Errorf("consume token: %w", d.unavailable(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("consume token: %w", d.unavailable(err))
	}
	return n == 1, nil
}

// unavailable marks a database failure as store.ErrUnavailable.
func (d *DB) unavailable(err error) error {
	var me *mysql.MySQLError
	if !d.tls && errors.As(err, &me) && me.Number == erAccessDenied {
		// What an account that must use TLS gets without it.
		return fmt.Errorf("%w: %w (the connection is not TLS: if the account requires it, set ssl_ca in [database] connection)", store.ErrUnavailable, err)
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}

// erAccessDenied is the server's ER_ACCESS_DENIED_ERROR.
const erAccessDenied = 1045

// driverLog passes the driver's own messages (why a connection broke,
// which its errors do not always say) to the proxy's log.
type driverLog struct{ log *slog.Logger }

func (l driverLog) Print(v ...any) { l.log.Warn("database driver: " + fmt.Sprint(v...)) }
