// Package standalone gives consoles of plain Docker hosts without Zun: it
// mints console tokens for containers (checking they exist and run, and
// creating the exec for exec consoles) and resolves a presented token to
// its console, using it up.
package standalone

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/auth"
	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/docker"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store/tokendb"
)

// Tokens stores console tokens.
type Tokens interface {
	Create(ctx context.Context, t tokendb.Token) (string, tokendb.Token, error)
	Consume(ctx context.Context, secret string, now time.Time) (tokendb.Token, error)
	List(ctx context.Context) ([]tokendb.Token, error)
	Revoke(ctx context.Context, id string) error
}

// Docker looks containers up and creates execs.
type Docker interface {
	Inspect(ctx context.Context, endpoint, ref string) (docker.ContainerInfo, error)
	CreateExec(ctx context.Context, endpoint, containerID string, cmd []string) (string, error)
}

// Errors of a mint request.
var (
	// ErrInvalid: the request itself is wrong (bad TTL, uses, names).
	ErrInvalid = errors.New("invalid request")
	// ErrNoContainer: Docker knows no such container.
	ErrNoContainer = errors.New("no such container")
)

// Limits on what a token may allow.
const (
	DefaultTTL = 5 * time.Minute
	MaxTTL     = 24 * time.Hour
	MaxUses    = 1000
)

// Service mints and resolves tokens for containers of one Docker endpoint.
type Service struct {
	tokens   Tokens
	docker   Docker
	endpoint string
	now      func() time.Time
}

// New returns a Service for the Docker Engine API at endpoint.
func New(tokens Tokens, d Docker, endpoint string) *Service {
	return &Service{tokens: tokens, docker: d, endpoint: endpoint, now: time.Now}
}

// MintRequest asks for a console token.
type MintRequest struct {
	Container string        // Docker name or id
	Exec      []string      // command of an exec console; empty for attach
	TTL       time.Duration // 0: DefaultTTL
	Uses      int           // 0: 1 (single use)
}

// Minted is a new token: Secret is shown once and stored nowhere.
type Minted struct {
	Secret string
	Token  tokendb.Token
}

// Mint checks the container exists and runs, creates the exec for an exec
// console, and stores a token for it.
func (s *Service) Mint(ctx context.Context, r MintRequest) (Minted, error) {
	if r.TTL == 0 {
		r.TTL = DefaultTTL
	}
	if r.Uses == 0 {
		r.Uses = 1
	}
	switch {
	case strings.TrimSpace(r.Container) == "" || len(r.Container) > 255:
		return Minted{}, fmt.Errorf("%w: container must be a Docker container name or id", ErrInvalid)
	case r.TTL < time.Second || r.TTL > MaxTTL:
		return Minted{}, fmt.Errorf("%w: ttl must be between 1s and %v", ErrInvalid, MaxTTL)
	case r.Uses < 1 || r.Uses > MaxUses:
		return Minted{}, fmt.Errorf("%w: uses must be between 1 and %d", ErrInvalid, MaxUses)
	case len(strings.Join(r.Exec, " ")) > 1024:
		return Minted{}, fmt.Errorf("%w: exec command longer than 1024 bytes", ErrInvalid)
	}
	info, err := s.docker.Inspect(ctx, s.endpoint, r.Container)
	if errors.Is(err, docker.ErrNoSuchContainer) {
		return Minted{}, fmt.Errorf("%w: %s", ErrNoContainer, r.Container)
	}
	if err != nil {
		return Minted{}, fmt.Errorf("inspect container %s: %w", r.Container, err)
	}
	if !info.Running {
		return Minted{}, fmt.Errorf("%w: %s", console.ErrNotRunning, info.Name)
	}
	t := tokendb.Token{Container: info.ID, Name: info.Name, Endpoint: s.endpoint, ExpiresAt: s.now().Add(r.TTL), UsesLeft: r.Uses}
	if len(r.Exec) > 0 {
		if t.ExecID, err = s.docker.CreateExec(ctx, s.endpoint, info.ID, r.Exec); err != nil {
			return Minted{}, fmt.Errorf("create exec in %s: %w", info.Name, err)
		}
		t.Command = strings.Join(r.Exec, " ")
	}
	secret, t, err := s.tokens.Create(ctx, t)
	if err != nil {
		return Minted{}, err
	}
	return Minted{Secret: secret, Token: t}, nil
}

// List returns all tokens.
func (s *Service) List(ctx context.Context) ([]tokendb.Token, error) { return s.tokens.List(ctx) }

// Revoke makes a token unusable.
func (s *Service) Revoke(ctx context.Context, id string) error { return s.tokens.Revoke(ctx, id) }

// Resolve uses up one use of the presented token and returns its console,
// after checking again that the container runs. A uuid parameter, when
// given, must name the token's container (by name or id).
func (s *Service) Resolve(ctx context.Context, r auth.Request) (console.Target, error) {
	t, err := s.tokens.Consume(ctx, r.Token, s.now())
	if errors.Is(err, store.ErrNotFound) {
		return console.Target{}, fmt.Errorf("%w: %w", auth.ErrUnauthorized, err)
	}
	if err != nil {
		return console.Target{}, err
	}
	if r.UUID != "" && r.UUID != t.Name && r.UUID != t.Container && !(len(r.UUID) >= 12 && strings.HasPrefix(t.Container, r.UUID)) {
		return console.Target{}, fmt.Errorf("%w: token %s is for another container", auth.ErrUnauthorized, t.ID)
	}
	info, err := s.docker.Inspect(ctx, t.Endpoint, t.Container)
	if errors.Is(err, docker.ErrNoSuchContainer) {
		return console.Target{}, fmt.Errorf("%w: container %s is gone", console.ErrNotRunning, t.Name)
	}
	if err != nil {
		return console.Target{}, fmt.Errorf("%w: %w", console.ErrRuntime, err)
	}
	if !info.Running {
		return console.Target{}, fmt.Errorf("%w: %s", console.ErrNotRunning, t.Name)
	}
	target := console.Target{Kind: console.Attach, ContainerUUID: t.Name, ContainerID: t.Container, URL: t.Endpoint, TokenID: t.ID, Name: t.Name, Host: t.Endpoint}
	if t.ExecID != "" {
		target.Kind, target.ExecID = console.Exec, t.ExecID
	}
	return target, nil
}

// URLs returns where a minted token opens its console: the WebSocket URL
// python-zunclient-style clients use (base_url?token=…&uuid=…) and the web
// console page.
func URLs(baseURL, secret, container string) (websocketURL, consoleURL string) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return "", ""
	}
	q := url.Values{"token": {secret}, "uuid": {container}}
	ws := *u
	ws.RawQuery = q.Encode()
	web := *u
	switch web.Scheme {
	case "ws":
		web.Scheme = "http"
	case "wss":
		web.Scheme = "https"
	}
	web.Path = strings.TrimSuffix(web.Path, "/") + "/console"
	web.RawQuery = url.Values{"token": {secret}}.Encode()
	return ws.String(), web.String()
}
