// Package store defines what the proxy looks up before it opens a console:
// containers and their exec instances, and the errors a lookup can end in.
// Its subpackages read them from a database.
package store

import (
	"database/sql"
	"errors"
	"time"
)

// Container is what the proxy needs of a Zun container row.
type Container struct {
	ID             int64  // primary key, referenced by exec instances
	UUID           string // Zun's uuid
	Name           string
	ContainerID    string // the container runtime's id
	Host           string // the compute host running it
	WebsocketURL   string // Docker's attach WebSocket URL, set at attach time
	WebsocketToken string // the attach token, set at attach time; "" if none
	UpdatedAt      time.Time
	ProjectID      string // the OpenStack project and user owning it
	UserID         string
}

// ExecInstance is an interactive exec session created through Zun's API.
type ExecInstance struct {
	ContainerID int64  // the container's primary key (Container.ID)
	ExecID      string // Docker's exec id
	Token       string
	URL         string // Docker API URL of the container's host
	// UpdatedAt is when the row (and its token) was last written.
	UpdatedAt time.Time
}

// MaxSameName bounds how many containers of one name a lookup reads: a
// name shared by more is looked for among the oldest MaxSameName.
const MaxSameName = 100

// Lookup errors. Callers map them to answers in one place.
var (
	// ErrNotFound: no such container or exec instance.
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous: a name matches more than one container, and the
	// token does not tell which is meant.
	ErrAmbiguous = errors.New("more than one container has this name")
	// ErrUnavailable: the database could not answer.
	ErrUnavailable = errors.New("database unavailable")
)

// SizePool sets how the connection pool of a store's database keeps its
// connections: at most maxOpen open, each kept until it has been idle for
// 5 minutes. It is not closed when it comes back to a pool holding
// max_pool_size idle ones, as oslo.db's are: with 8 lookups at once
// against the default pool of 5, that opened a MariaDB connection (its
// handshake and authentication) every ~15 sessions, and MariaDB's CPU per
// lookup read 141-164 µs against 111-136 without. database/sql reuses the
// connection idle the shortest, so those a peak opened are the ones left
// to expire. Servers drop idle connections too (wait_timeout): the idle
// limit closes them before they do.
func SizePool(db *sql.DB, maxOpen int) {
	db.SetMaxOpenConns(maxOpen)
	db.SetMaxIdleConns(maxOpen)
	db.SetConnMaxIdleTime(5 * time.Minute)
	db.SetConnMaxLifetime(time.Hour)
}
