// Package console holds the types every stage of a console connection
// shares: the Target a client is allowed to reach and the Stream that
// connects the proxy to it.
package console

import (
	"errors"
	"net"
)

// Errors about the container side, mapped to answers in one place.
var (
	// ErrNotRunning: the container exists no more or is not running.
	ErrNotRunning = errors.New("container is not running")
	// ErrRuntime: the container runtime cannot be reached or refused.
	ErrRuntime = errors.New("container runtime unreachable")
)

// Kind says how a console reaches the container.
type Kind int

const (
	// Attach joins the container's main process through Docker's attach
	// WebSocket.
	Attach Kind = iota
	// Exec joins a process started with docker exec, through the hijacked
	// HTTP connection of exec start.
	Exec
)

func (k Kind) String() string {
	if k == Exec {
		return "exec"
	}
	return "attach"
}

// Target is a console a client has been authorized to open.
type Target struct {
	Kind          Kind
	ContainerUUID string // Zun's uuid of the container (for logs)
	ContainerID   string // the container runtime's id
	// URL is where the console lives: for Attach the WebSocket URL of
	// Docker's attach endpoint, for Exec the Docker API URL (tcp://, unix://).
	URL    string
	ExecID string // for Exec: Docker's exec id
	// TokenID names the standalone token that opened the console (for
	// logs); empty in Zun mode.
	TokenID string
	// For the audit log: the container's name and compute host, and in
	// Zun mode the project and user owning it.
	Name, Host        string
	ProjectID, UserID string
}

// Stream is an open connection to a container's console.
type Stream struct {
	Conn net.Conn
	// Buffered holds bytes read from Conn past the handshake; they come
	// before anything else read from Conn.
	Buffered []byte
	// Framed is true when Conn carries WebSocket frames (attach) and false
	// when it carries the raw terminal byte stream (exec).
	Framed bool
}
