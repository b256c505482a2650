// Package auth decides whether a console request may go ahead: it parses
// the request's parameters, checks its Origin, and checks its token against
// the container (or exec instance) it names, resolving the console target.
package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store"
)

// Errors of a refused request. Callers map them to answers in one place.
var (
	// ErrMalformed: the request's parameters cannot be understood.
	ErrMalformed = errors.New("malformed request")
	// ErrUnauthorized: a missing or wrong token, or an unknown container
	// or exec. One error for all, so that neither tokens nor container
	// names can be probed.
	ErrUnauthorized = errors.New("invalid token or unknown container")
	// ErrOrigin: the Origin header is not allowed.
	ErrOrigin = errors.New("origin not allowed")
)

// Request is what a client asks for in its query string.
type Request struct {
	Token  string
	UUID   string // a container uuid or name
	ExecID string // empty for attach
}

// ParseQuery reads token, uuid and exec_id from a raw query string. A
// token is required; repeated parameters are refused rather than guessed
// at.
func ParseQuery(rawQuery string) (Request, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return Request{}, fmt.Errorf("%w: query string does not parse", ErrMalformed)
	}
	one := func(name string) (string, error) {
		switch v := q[name]; len(v) {
		case 0:
			return "", nil
		case 1:
			return v[0], nil
		}
		return "", fmt.Errorf("%w: parameter %s given more than once", ErrMalformed, name)
	}
	var r Request
	if r.Token, err = one("token"); err != nil {
		return Request{}, err
	}
	if r.UUID, err = one("uuid"); err != nil {
		return Request{}, err
	}
	if r.ExecID, err = one("exec_id"); err != nil {
		return Request{}, err
	}
	if r.Token == "" {
		return Request{}, fmt.Errorf("%w: parameter token is missing", ErrUnauthorized)
	}
	return r, nil
}

// Containers looks containers and their exec instances up in Zun's
// database, and uses tokens up when they are single-use.
type Containers interface {
	ContainerByUUID(ctx context.Context, uuid string) (store.Container, error)
	ContainersByName(ctx context.Context, name string) ([]store.Container, error)
	ExecInstances(ctx context.Context, containerIDs []int64, execID string) ([]store.ExecInstance, error)
	ConsumeAttachToken(ctx context.Context, containerID int64, token string) (bool, error)
	ConsumeExecToken(ctx context.Context, containerID int64, execID, token string) (bool, error)
}

// Options harden Zun's tokens beyond what Zun itself does; both are off by
// default for strict compatibility.
type Options struct {
	// TokenTTL refuses a token older than this, counted from the row's
	// updated_at (Zun writes the row when it stores the token). 0: no limit.
	TokenTTL time.Duration
	// SingleUse clears a token from the database when a session starts
	// with it, atomically, so it opens one session across all replicas.
	SingleUse bool
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Authorizer resolves requests to console targets, checking their tokens
// as Zun's proxy does.
type Authorizer struct {
	containers Containers
	opts       Options
}

// NewAuthorizer returns an Authorizer reading from containers.
func NewAuthorizer(containers Containers, opts Options) *Authorizer {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Authorizer{containers: containers, opts: opts}
}

// fresh applies TokenTTL to a token stored at updated.
func (a *Authorizer) fresh(updated time.Time) bool {
	return a.opts.TokenTTL <= 0 || (!updated.IsZero() && a.opts.Now().Sub(updated) <= a.opts.TokenTTL)
}

// Resolve finds the container r names (by uuid when r.UUID looks like one,
// else by name) and returns its console target if r's token matches: the
// container's websocket_token for attach, the exec instance's token for
// exec. A name several containers share is no answer of its own: the
// container whose token matches is the one meant, and a token that matches
// none is refused as for an unknown name, so names cannot be probed. Only
// a token that matches more than one of them (no use of Zun hands out
// such) is store.ErrAmbiguous.
func (a *Authorizer) Resolve(ctx context.Context, r Request) (console.Target, error) {
	if r.UUID == "" {
		return console.Target{}, fmt.Errorf("%w: parameter uuid is missing", ErrMalformed)
	}
	cs, err := a.candidates(ctx, r.UUID)
	if errors.Is(err, store.ErrNotFound) {
		return console.Target{}, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	if err != nil {
		return console.Target{}, err
	}
	if r.ExecID == "" {
		c, err := only(cs, func(c store.Container) string { return c.WebsocketToken }, r.Token)
		if err != nil {
			return console.Target{}, fmt.Errorf("attach token of container %s: %w", r.UUID, err)
		}
		if !a.fresh(c.UpdatedAt) {
			return console.Target{}, fmt.Errorf("%w: attach token of container %s expired (token_ttl)", ErrUnauthorized, c.UUID)
		}
		if c.WebsocketURL == "" {
			return console.Target{}, fmt.Errorf("%w: container %s has no websocket_url", ErrUnauthorized, c.UUID)
		}
		if a.opts.SingleUse {
			if ok, err := a.containers.ConsumeAttachToken(ctx, c.ID, r.Token); err != nil {
				return console.Target{}, err
			} else if !ok {
				return console.Target{}, fmt.Errorf("%w: attach token of container %s already used", ErrUnauthorized, c.UUID)
			}
		}
		t := target(c)
		t.Kind, t.URL = console.Attach, c.WebsocketURL
		return t, nil
	}
	ids := make([]int64, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
	}
	es, err := a.containers.ExecInstances(ctx, ids, r.ExecID)
	if errors.Is(err, store.ErrNotFound) {
		return console.Target{}, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	if err != nil {
		return console.Target{}, err
	}
	e, err := only(es, func(e store.ExecInstance) string { return e.Token }, r.Token)
	if err != nil {
		return console.Target{}, fmt.Errorf("token of exec %s of container %s: %w", r.ExecID, r.UUID, err)
	}
	var c store.Container
	found := false
	for _, cand := range cs {
		if cand.ID == e.ContainerID {
			c, found = cand, true
			break
		}
	}
	if !found { // the store returned an exec of no candidate: never a console
		return console.Target{}, fmt.Errorf("%w: exec %s belongs to none of the containers named %s", ErrUnauthorized, r.ExecID, r.UUID)
	}
	if !a.fresh(e.UpdatedAt) {
		return console.Target{}, fmt.Errorf("%w: token of exec %s expired (token_ttl)", ErrUnauthorized, r.ExecID)
	}
	if e.URL == "" {
		return console.Target{}, fmt.Errorf("%w: exec %s has no url", ErrUnauthorized, r.ExecID)
	}
	if a.opts.SingleUse {
		if ok, err := a.containers.ConsumeExecToken(ctx, c.ID, e.ExecID, r.Token); err != nil {
			return console.Target{}, err
		} else if !ok {
			return console.Target{}, fmt.Errorf("%w: token of exec %s already used", ErrUnauthorized, r.ExecID)
		}
	}
	t := target(c)
	t.Kind, t.URL, t.ExecID = console.Exec, e.URL, e.ExecID
	return t, nil
}

// candidates are the containers a request's uuid parameter may mean: the
// one with that uuid, or those with that name.
func (a *Authorizer) candidates(ctx context.Context, uuidOrName string) ([]store.Container, error) {
	if !IsUUIDLike(uuidOrName) {
		return a.containers.ContainersByName(ctx, uuidOrName)
	}
	c, err := a.containers.ContainerByUUID(ctx, uuidOrName)
	if err != nil {
		return nil, err
	}
	return []store.Container{c}, nil
}

// only returns the one of rows whose stored token (tokenOf) is given. Every
// row is compared, each in constant time, so the answer's timing does not
// tell which matched.
func only[T any](rows []T, tokenOf func(T) string, given string) (T, error) {
	var found T
	n := 0
	for _, row := range rows {
		if tokenMatches(given, tokenOf(row)) {
			found = row
			n++
		}
	}
	switch {
	case n == 0:
		return found, fmt.Errorf("%w: token does not match", ErrUnauthorized)
	case n > 1:
		return found, fmt.Errorf("token matches %d containers: %w", n, store.ErrAmbiguous)
	}
	return found, nil
}

func target(c store.Container) console.Target {
	return console.Target{ContainerUUID: c.UUID, ContainerID: c.ContainerID, Name: c.Name, Host: c.Host, ProjectID: c.ProjectID, UserID: c.UserID}
}

// tokenMatches compares in constant time. An empty stored token (none
// issued, or cleared) matches nothing.
func tokenMatches(given, stored string) bool {
	if stored == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(given), []byte(stored)) == 1
}

// IsUUIDLike reports whether s is a UUID in any of the forms oslo's
// uuidutils.is_uuid_like accepts: any case, with or without hyphens,
// braces or a urn:uuid: prefix.
func IsUUIDLike(s string) bool {
	t := strings.ToLower(s)
	t = strings.TrimPrefix(t, "urn:")
	t = strings.TrimPrefix(t, "uuid:")
	t = strings.TrimPrefix(t, "{")
	t = strings.TrimSuffix(t, "}")
	hex := strings.ReplaceAll(t, "-", "")
	if len(hex) != 32 {
		return false
	}
	for _, c := range hex {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	// Python's uuid.UUID accepts hyphens only where they belong, or none.
	if strings.Contains(t, "-") {
		return len(t) == 36 && t[8] == '-' && t[13] == '-' && t[18] == '-' && t[23] == '-'
	}
	return true
}

// OriginPolicy is Zun's cross-site WebSocket hijacking defence.
type OriginPolicy struct {
	// BaseScheme is the scheme of [websocket_proxy] base_url.
	BaseScheme string
	// Allowed lists hostnames accepted besides the request's own host
	// ([websocket_proxy] allowed_origins).
	Allowed []string
}

// Check accepts a request whose Origin is absent (not a browser), or whose
// hostname is the Host header's or an allowed one and whose scheme (or
// X-Forwarded-Proto, when present) matches base_url's.
func (p OriginPolicy) Check(origin, host, forwardedProto string) error {
	if origin == "" {
		return nil
	}
	scheme, hostname, ok := ParseOrigin(origin)
	if !ok {
		return fmt.Errorf("%w: Origin header not valid", ErrOrigin)
	}
	if hostname != strings.ToLower(hostOnly(host)) && !p.allowed(hostname) {
		return fmt.Errorf("%w: Origin %q does not match this host", ErrOrigin, hostname)
	}
	if forwardedProto != "" {
		scheme = strings.ToLower(strings.TrimSpace(forwardedProto))
	}
	if !p.schemeMatches(scheme) {
		return fmt.Errorf("%w: Origin scheme %q does not match this proxy", ErrOrigin, scheme)
	}
	return nil
}

// ParseOrigin reads an Origin header as Zun's check does (Python's urlparse:
// scheme and hostname, the port never looked at), returning both in lower
// case. python-zunclient sends "http://host:None" when its URL has no port,
// so a port that is not a number is accepted; what a browser never sends
// (userinfo, percent-escapes, characters no hostname has) is refused, so the
// lenient port opens no way around the hostname comparison.
func ParseOrigin(origin string) (scheme, hostname string, ok bool) {
	scheme, rest, found := strings.Cut(origin, "://")
	if !found || !validScheme(scheme) {
		return "", "", false
	}
	// The authority ends where urlparse ends it; browsers send none of these.
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	var port string
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return "", "", false
		}
		hostname, port = rest[1:end], rest[end+1:]
		if port != "" && port[0] != ':' || !validIPv6(hostname) {
			return "", "", false
		}
	} else {
		hostname, port, _ = strings.Cut(rest, ":")
		if !validHostname(hostname) {
			return "", "", false
		}
		port = ":" + port
	}
	for i := 1; i < len(port); i++ {
		if c := port[i]; c <= ' ' || c >= 0x7f || c == '@' || c == '%' {
			return "", "", false
		}
	}
	return strings.ToLower(scheme), strings.ToLower(hostname), true
}

func validScheme(s string) bool {
	if s == "" || !isLetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isLetter(c) && !isDigit(c) && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// validHostname accepts registered names and IPv4 addresses: letters,
// digits, '-', '_' and '.'.
func validHostname(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLetter(c) && !isDigit(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func validIPv6(s string) bool {
	ip, err := netip.ParseAddr(s)
	return err == nil && ip.Is6() && ip.Zone() == ""
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool  { return '0' <= c && c <= '9' }

func (p OriginPolicy) allowed(hostname string) bool {
	for _, a := range p.Allowed {
		if strings.EqualFold(strings.TrimSpace(a), hostname) {
			return true
		}
	}
	return false
}

// schemeMatches: base_url ws:// accepts ws and http origins, wss:// accepts
// wss and https, anything else only itself.
func (p OriginPolicy) schemeMatches(scheme string) bool {
	base := strings.ToLower(p.BaseScheme)
	switch {
	case scheme == base:
		return true
	case base == "ws":
		return scheme == "http"
	case base == "wss":
		return scheme == "https"
	}
	return false
}

// hostOnly strips the port (and IPv6 brackets) from a Host header.
func hostOnly(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
}
