package auth

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store"
)

func TestParseQuery(t *testing.T) {
	cases := []struct {
		query string
		want  Request
		err   error
	}{
		{"token=t&uuid=u", Request{Token: "t", UUID: "u"}, nil},
		{"token=t&uuid=u&exec_id=e", Request{Token: "t", UUID: "u", ExecID: "e"}, nil},
		{"uuid=u", Request{}, ErrUnauthorized},
		{"token=&uuid=u", Request{}, ErrUnauthorized},
		{"token=t", Request{Token: "t"}, nil},
		{"token=t&token=t2&uuid=u", Request{}, ErrMalformed},
		{"token=t&uuid=u&uuid=v", Request{}, ErrMalformed},
		{"token=%zz&uuid=u", Request{}, ErrMalformed},
	}
	for _, c := range cases {
		got, err := ParseQuery(c.query)
		if !errors.Is(err, c.err) || got != c.want {
			t.Errorf("ParseQuery(%q) = %+v, %v; want %+v, %v", c.query, got, err, c.want, c.err)
		}
	}
}

func TestIsUUIDLike(t *testing.T) {
	cases := map[string]bool{
		"6f1e2c9a-3b4d-4e5f-8a9b-0c1d2e3f4a5b":          true,
		"6F1E2C9A-3B4D-4E5F-8A9B-0C1D2E3F4A5B":          true,
		"6f1e2c9a3b4d4e5f8a9b0c1d2e3f4a5b":              true,
		"{6f1e2c9a-3b4d-4e5f-8a9b-0c1d2e3f4a5b}":        true,
		"urn:uuid:6f1e2c9a-3b4d-4e5f-8a9b-0c1d2e3f4a5b": true,
		"my-container":                         false,
		"6f1e2c9a-3b4d-4e5f-8a9b-0c1d2e3f4a5":  false,
		"6f1e2c9a-3b4d-4e5f-8a9b-0c1d2e3f4a5g": false,
		"6f1e2c9a3-b4d-4e5f-8a9b-0c1d2e3f4a5b": false,
		"":                                     false,
	}
	for in, want := range cases {
		if got := IsUUIDLike(in); got != want {
			t.Errorf("IsUUIDLike(%q) = %v", in, got)
		}
	}
}

func TestOriginPolicy(t *testing.T) {
	ws := OriginPolicy{BaseScheme: "ws", Allowed: []string{"dashboard.example.org"}}
	wss := OriginPolicy{BaseScheme: "wss"}
	cases := []struct {
		name    string
		policy  OriginPolicy
		origin  string
		host    string
		xfp     string
		allowed bool
	}{
		{"no origin (CLI)", ws, "", "proxy:6784", "", true},
		{"same host http", ws, "http://proxy:6784", "proxy:6784", "", true},
		{"same host other port", ws, "http://proxy", "proxy:6784", "", true},
		{"same host case differs", ws, "http://PROXY", "proxy:6784", "", true},
		{"allowed origin", ws, "http://dashboard.example.org", "proxy:6784", "", true},
		{"evil origin", ws, "http://evil.example", "proxy:6784", "", false},
		{"evil userinfo trick", ws, "http://proxy@evil.example", "proxy:6784", "", false},
		{"https origin on ws proxy", ws, "https://proxy", "proxy:6784", "", false},
		{"ws origin scheme", ws, "ws://proxy", "proxy:6784", "", true},
		{"wss proxy https origin", wss, "https://proxy", "proxy", "", true},
		{"wss proxy http origin", wss, "http://proxy", "proxy", "", false},
		{"forwarded proto https behind TLS terminator", wss, "http://proxy", "proxy", "https", true},
		{"forwarded proto overrides", ws, "http://proxy", "proxy", "https", false},
		{"ipv6 host", ws, "http://[::1]:8080", "[::1]:6784", "", true},
		{"null origin", ws, "null", "proxy", "", false},
		{"no scheme", ws, "proxy", "proxy", "", false},
		{"garbage", ws, "http://%zz", "proxy", "", false},
		// python-zunclient's Origin for a URL without a port.
		{"zunclient port None", ws, "http://proxy:None", "proxy", "", true},
		{"zunclient port None wss", wss, "https://console.example.org:None", "console.example.org", "", true},
		{"zunclient port None behind TLS terminator", wss, "http://console.example.org:None", "console.example.org", "https", true},
		{"port None other host", ws, "http://evil.example:None", "proxy", "", false},
		{"port None allowed host", ws, "http://dashboard.example.org:None", "proxy:6784", "", true},
		{"ipv6 port None", ws, "http://[::1]:None", "[::1]:6784", "", true},
		{"empty port", ws, "http://proxy:", "proxy", "", true},
		{"userinfo before host", ws, "http://evil.example@proxy", "proxy", "", false},
		{"userinfo in port", ws, "http://proxy:x@evil.example", "proxy", "", false},
		{"percent-escaped host", ws, "http://pro%78y", "proxy", "", false},
		{"host with space", ws, "http://proxy :80", "proxy", "", false},
		{"host prefix of another", ws, "http://proxy.evil.example", "proxy", "", false},
		{"empty hostname", ws, "http://:80", ":80", "", false},
		{"unclosed ipv6", ws, "http://[::1", "[::1]", "", false},
		{"ipv6 trailing junk", ws, "http://[::1]x", "[::1]", "", false},
		{"bad scheme", ws, "1http://proxy", "proxy", "", false},
		{"path after host", ws, "http://proxy/x", "proxy", "", true},
	}
	for _, c := range cases {
		err := c.policy.Check(c.origin, c.host, c.xfp)
		if (err == nil) != c.allowed {
			t.Errorf("%s: Check(%q, %q, %q) = %v", c.name, c.origin, c.host, c.xfp, err)
		}
		if err != nil && !errors.Is(err, ErrOrigin) {
			t.Errorf("%s: error %v is not ErrOrigin", c.name, err)
		}
	}
}

// TestParseOriginBytes puts every byte value at each place of an Origin and
// holds ParseOrigin to what each place admits: a scheme starts with a letter
// and goes on with letters, digits, '+', '-' and '.' (RFC 3986); a hostname
// is letters, digits, '-', '_' and '.', ended by ':', '/', '?' or '#'; a port
// is any printable ASCII but '@' and '%'.
func TestParseOriginBytes(t *testing.T) {
	in := func(set string, c byte) bool { return strings.IndexByte(set, c) >= 0 }
	const (
		letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		digits  = "0123456789"
	)
	for i := range 256 {
		c := byte(i)
		if _, _, ok := ParseOrigin(string(c) + "x://proxy"); ok != in(letters, c) {
			t.Errorf("scheme starting with %q: ok = %v", c, ok)
		}
		scheme, _, ok := ParseOrigin("x" + string(c) + "://proxy")
		if want := in(letters+digits+"+-.", c); ok != want || ok && scheme != strings.ToLower("x"+string(c)) {
			t.Errorf("scheme x%q: %q, ok = %v", c, scheme, ok)
		}
		_, host, ok := ParseOrigin("http://p" + string(c) + "x")
		switch {
		case in(letters+digits+"-_.", c):
			if !ok || host != strings.ToLower("p"+string(c)+"x") {
				t.Errorf("hostname p%qx: %q, ok = %v", c, host, ok)
			}
		case in(":/?#", c):
			if !ok || host != "p" {
				t.Errorf("hostname p ended by %q: %q, ok = %v", c, host, ok)
			}
		case ok:
			t.Errorf("hostname p%qx accepted as %q", c, host)
		}
		_, host, ok = ParseOrigin("http://proxy:8" + string(c))
		if want := c > ' ' && c < 0x7f && c != '@' && c != '%'; ok != want || ok && host != "proxy" {
			t.Errorf("port 8%q: %q, ok = %v", c, host, ok)
		}
	}
}

// containers is an in-memory Containers for the token rules; the MariaDB
// lookups themselves are tested in package zunsql.
type containers struct {
	byUUID map[string]store.Container
	byName map[string][]store.Container
	execs  map[string]store.ExecInstance
	used   map[string]bool
	err    error
}

func (c containers) ContainerByUUID(_ context.Context, uuid string) (store.Container, error) {
	if c.err != nil {
		return store.Container{}, c.err
	}
	if v, ok := c.byUUID[uuid]; ok {
		return v, nil
	}
	return store.Container{}, store.ErrNotFound
}

func (c containers) ContainersByName(_ context.Context, name string) ([]store.Container, error) {
	if c.err != nil {
		return nil, c.err
	}
	if v := c.byName[name]; len(v) > 0 {
		return v, nil
	}
	return nil, store.ErrNotFound
}

func (c containers) ConsumeAttachToken(_ context.Context, id int64, token string) (bool, error) {
	return c.consume("attach", id, token), nil
}

func (c containers) ConsumeExecToken(_ context.Context, id int64, execID, token string) (bool, error) {
	return c.consume(execID, id, token), nil
}

// consume clears a token once: the second use of one key fails.
func (c containers) consume(kind string, id int64, token string) bool {
	key := fmt.Sprint(kind, id, token)
	if c.used[key] {
		return false
	}
	c.used[key] = true
	return true
}

func (c containers) ExecInstances(_ context.Context, ids []int64, execID string) ([]store.ExecInstance, error) {
	var out []store.ExecInstance
	for _, id := range ids {
		if v, ok := c.execs[fmt.Sprint(id, "/", execID)]; ok {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return nil, store.ErrNotFound
	}
	return out, nil
}

func TestResolve(t *testing.T) {
	const uuid = "6f1e2c9a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
	web := store.Container{ID: 1, UUID: uuid, Name: "web", ContainerID: "abc", WebsocketURL: "ws://docker/attach", WebsocketToken: "tok"}
	noToken := store.Container{ID: 2, UUID: "00000000-0000-0000-0000-000000000002", Name: "fresh"}
	// Two containers named twin, with tokens of their own; two named clone
	// with the same token.
	twinA := store.Container{ID: 3, UUID: "00000000-0000-0000-0000-000000000003", Name: "twin", ContainerID: "a", WebsocketURL: "ws://docker/a", WebsocketToken: "ta"}
	twinB := store.Container{ID: 4, UUID: "00000000-0000-0000-0000-000000000004", Name: "twin", ContainerID: "b", WebsocketURL: "ws://docker/b", WebsocketToken: "tb"}
	clone1 := store.Container{ID: 5, Name: "clone", WebsocketURL: "ws://docker/c1", WebsocketToken: "same"}
	clone2 := store.Container{ID: 6, Name: "clone", WebsocketURL: "ws://docker/c2", WebsocketToken: "same"}
	db := containers{
		byUUID: map[string]store.Container{uuid: web, noToken.UUID: noToken},
		byName: map[string][]store.Container{"web": {web}, "twin": {twinA, twinB}, "clone": {clone1, clone2}, "fresh": {noToken}},
		execs: map[string]store.ExecInstance{
			"1/e1": {ContainerID: 1, ExecID: "e1", Token: "etok", URL: "tcp://docker:2375"},
			"4/e4": {ContainerID: 4, ExecID: "e4", Token: "e4tok", URL: "tcp://docker-b:2375"},
			"5/ec": {ContainerID: 5, ExecID: "ec", Token: "ectok", URL: "tcp://docker-c:2375"},
			"6/ec": {ContainerID: 6, ExecID: "ec", Token: "ectok", URL: "tcp://docker-c:2375"},
		},
		used: map[string]bool{},
	}
	cases := []struct {
		name string
		req  Request
		want console.Target
		err  error
	}{
		{"attach by uuid", Request{Token: "tok", UUID: uuid}, console.Target{Kind: console.Attach, ContainerUUID: uuid, ContainerID: "abc", Name: "web", URL: "ws://docker/attach"}, nil},
		{"attach by name", Request{Token: "tok", UUID: "web"}, console.Target{Kind: console.Attach, ContainerUUID: uuid, ContainerID: "abc", Name: "web", URL: "ws://docker/attach"}, nil},
		{"wrong token", Request{Token: "nope", UUID: uuid}, console.Target{}, ErrUnauthorized},
		{"unknown container", Request{Token: "tok", UUID: "ghost"}, console.Target{}, ErrUnauthorized},
		{"shared name, first one's token", Request{Token: "ta", UUID: "twin"}, console.Target{Kind: console.Attach, ContainerUUID: twinA.UUID, ContainerID: "a", Name: "twin", URL: "ws://docker/a"}, nil},
		{"shared name, second one's token", Request{Token: "tb", UUID: "twin"}, console.Target{Kind: console.Attach, ContainerUUID: twinB.UUID, ContainerID: "b", Name: "twin", URL: "ws://docker/b"}, nil},
		{"shared name, wrong token", Request{Token: "nope", UUID: "twin"}, console.Target{}, ErrUnauthorized},
		{"shared name, another container's token", Request{Token: "tok", UUID: "twin"}, console.Target{}, ErrUnauthorized},
		{"shared name and token", Request{Token: "same", UUID: "clone"}, console.Target{}, store.ErrAmbiguous},
		{"shared name and token, wrong token", Request{Token: "nope", UUID: "clone"}, console.Target{}, ErrUnauthorized},
		{"container never attached", Request{Token: "x", UUID: "fresh"}, console.Target{}, ErrUnauthorized},
		{"exec", Request{Token: "etok", UUID: uuid, ExecID: "e1"}, console.Target{Kind: console.Exec, ContainerUUID: uuid, ContainerID: "abc", Name: "web", URL: "tcp://docker:2375", ExecID: "e1"}, nil},
		{"exec with attach token", Request{Token: "tok", UUID: uuid, ExecID: "e1"}, console.Target{}, ErrUnauthorized},
		{"unknown exec", Request{Token: "etok", UUID: uuid, ExecID: "e2"}, console.Target{}, ErrUnauthorized},
		{"exec of a shared name", Request{Token: "e4tok", UUID: "twin", ExecID: "e4"}, console.Target{Kind: console.Exec, ContainerUUID: twinB.UUID, ContainerID: "b", Name: "twin", URL: "tcp://docker-b:2375", ExecID: "e4"}, nil},
		{"exec of a shared name, wrong token", Request{Token: "nope", UUID: "twin", ExecID: "e4"}, console.Target{}, ErrUnauthorized},
		{"exec of a shared name, unknown exec", Request{Token: "e4tok", UUID: "twin", ExecID: "e9"}, console.Target{}, ErrUnauthorized},
		{"exec of a shared name and token", Request{Token: "ectok", UUID: "clone", ExecID: "ec"}, console.Target{}, store.ErrAmbiguous},
		{"no uuid", Request{Token: "tok"}, console.Target{}, ErrMalformed},
	}
	a := NewAuthorizer(db, Options{})
	for _, c := range cases {
		got, err := a.Resolve(context.Background(), c.req)
		if !errors.Is(err, c.err) || got != c.want {
			t.Errorf("%s: got %+v, %v; want %+v, %v", c.name, got, err, c.want, c.err)
		}
	}
	down := NewAuthorizer(containers{err: store.ErrUnavailable}, Options{})
	if _, err := down.Resolve(context.Background(), Request{Token: "t", UUID: uuid}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("database down: %v", err)
	}
}

// FuzzOriginCheck: an accepted Origin names, right after "scheme://", a
// hostname that is the Host header's or an allowed one, ended by nothing, a
// port or a path (no userinfo or escape can smuggle another host in); and
// where Go's URL parser reads the Origin with a numeric port, both read the
// same scheme and hostname.
func FuzzOriginCheck(f *testing.F) {
	f.Add("http://proxy:6784", "proxy:6784", "")
	f.Add("https://[::1]", "[::1]", "https")
	f.Add("http://proxy:None", "proxy", "")
	f.Add("http://dash:None", "proxy", "")
	f.Add("http://evil@proxy", "proxy", "")
	f.Fuzz(func(t *testing.T, origin, host, xfp string) {
		p := OriginPolicy{BaseScheme: "ws", Allowed: []string{"dash"}}
		err := p.Check(origin, host, xfp)
		if err != nil && !errors.Is(err, ErrOrigin) {
			t.Fatalf("unexpected error kind %v", err)
		}
		scheme, hostname, ok := ParseOrigin(origin)
		if err == nil && origin != "" {
			if !ok {
				t.Fatalf("accepted %q that ParseOrigin refuses", origin)
			}
			if hostname != strings.ToLower(hostOnly(host)) && hostname != "dash" {
				t.Fatalf("accepted %q for host %q: hostname %q", origin, host, hostname)
			}
			after := strings.ToLower(origin)[len(scheme)+3:]
			named := hostname
			if strings.Contains(hostname, ":") {
				named = "[" + hostname + "]"
			}
			if !strings.HasPrefix(after, named) {
				t.Fatalf("accepted %q: hostname %q is not what follows the scheme", origin, hostname)
			}
			if rest := after[len(named):]; rest != "" && rest[0] != ':' && rest[0] != '/' && rest[0] != '?' && rest[0] != '#' {
				t.Fatalf("accepted %q: hostname %q is followed by %q", origin, hostname, rest)
			}
			if strings.Contains(strings.SplitN(after, "/", 2)[0], "@") {
				t.Fatalf("accepted %q with userinfo", origin)
			}
		}
		u, perr := url.Parse(origin)
		if ok && perr == nil && u.User == nil && u.Opaque == "" && u.Host != "" && !strings.ContainsAny(origin, "%") &&
			(strings.HasPrefix(u.Host, "[") || !strings.Contains(u.Hostname(), ":")) {
			// net/url splits "h::" at its last colon, urlparse at its first.
			if !strings.EqualFold(u.Scheme, scheme) || !strings.EqualFold(u.Hostname(), hostname) {
				t.Fatalf("%q: ParseOrigin read %q %q, net/url %q %q", origin, scheme, hostname, u.Scheme, u.Hostname())
			}
		}
	})
}

// parseQueryReference is ParseQuery written from its contract, on the
// query's bytes: "&"-separated pairs, each split at its first "=", keys
// and values %-unescaped ("+" is a space); a ";" in a pair or a bad escape
// refuses the query, as does token, uuid or exec_id given twice, or no
// token.
func parseQueryReference(q string) (Request, bool) {
	seen := map[string][]string{}
	for _, pair := range strings.Split(q, "&") {
		if pair == "" {
			continue
		}
		if strings.Contains(pair, ";") {
			return Request{}, false
		}
		k, v, _ := strings.Cut(pair, "=")
		key, err1 := url.QueryUnescape(k)
		value, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			return Request{}, false
		}
		seen[key] = append(seen[key], value)
	}
	for _, k := range []string{"token", "uuid", "exec_id"} {
		if len(seen[k]) > 1 {
			return Request{}, false
		}
	}
	r := Request{Token: strings.Join(seen["token"], ""), UUID: strings.Join(seen["uuid"], ""), ExecID: strings.Join(seen["exec_id"], "")}
	return r, r.Token != ""
}

// FuzzParseQuery: ParseQuery agrees with its contract written out
// (parseQueryReference), its refusals are ErrMalformed or, without a
// token, ErrUnauthorized, and what it accepts, encoded again, reads back
// the same.
func FuzzParseQuery(f *testing.F) {
	f.Add("token=t&uuid=u&exec_id=e")
	f.Add("token=a%20b+c&uuid=&uuid=x")
	f.Add("&&token=%zz;x=1")
	f.Fuzz(func(t *testing.T, q string) {
		r, err := ParseQuery(q)
		want, ok := parseQueryReference(q)
		if (err == nil) != ok || err == nil && r != want {
			t.Fatalf("%q: %+v %v; reference %+v %v", q, r, err, want, ok)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("%q: error %v is neither ErrMalformed nor ErrUnauthorized", q, err)
			}
			return
		}
		v := url.Values{"token": {r.Token}, "uuid": {r.UUID}, "exec_id": {r.ExecID}}
		if back, err := ParseQuery(v.Encode()); err != nil || back != r {
			t.Fatalf("%+v encoded as %q reads back as %+v, %v", r, v.Encode(), back, err)
		}
	})
}

func TestTokenTTLAndSingleUse(t *testing.T) {
	const uuid = "6f1e2c9a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	web := store.Container{ID: 1, UUID: uuid, WebsocketURL: "ws://docker/attach", WebsocketToken: "tok", UpdatedAt: now.Add(-90 * time.Second)}
	db := containers{
		byUUID: map[string]store.Container{uuid: web},
		execs:  map[string]store.ExecInstance{"1/e1": {ContainerID: 1, ExecID: "e1", Token: "etok", URL: "tcp://docker:2375", UpdatedAt: now.Add(-30 * time.Second)}},
		used:   map[string]bool{},
	}
	clock := func() time.Time { return now }
	ttl := NewAuthorizer(db, Options{TokenTTL: time.Minute, Now: clock})
	if _, err := ttl.Resolve(context.Background(), Request{Token: "tok", UUID: uuid}); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("attach token 90s old with a 60s ttl: %v", err)
	}
	if _, err := ttl.Resolve(context.Background(), Request{Token: "etok", UUID: uuid, ExecID: "e1"}); err != nil {
		t.Errorf("exec token 30s old with a 60s ttl: %v", err)
	}
	// "Older than token_ttl" is refused; exactly token_ttl old is not older.
	for _, c := range []struct {
		age  time.Duration
		want error
	}{{time.Minute, nil}, {time.Minute + time.Nanosecond, ErrUnauthorized}} {
		at := NewAuthorizer(db, Options{TokenTTL: time.Minute, Now: func() time.Time { return web.UpdatedAt.Add(c.age) }})
		if _, err := at.Resolve(context.Background(), Request{Token: "tok", UUID: uuid}); !errors.Is(err, c.want) {
			t.Errorf("attach token %v old with a 60s ttl: %v, want %v", c.age, err, c.want)
		}
	}
	once := NewAuthorizer(db, Options{SingleUse: true, Now: clock})
	for i, want := range []error{nil, ErrUnauthorized} {
		if _, err := once.Resolve(context.Background(), Request{Token: "tok", UUID: uuid}); !errors.Is(err, want) {
			t.Errorf("single-use attach, use %d: %v", i+1, err)
		}
		if _, err := once.Resolve(context.Background(), Request{Token: "etok", UUID: uuid, ExecID: "e1"}); !errors.Is(err, want) {
			t.Errorf("single-use exec, use %d: %v", i+1, err)
		}
	}
}

// An exec row the store returns for none of the candidate containers never
// becomes a console of one of them (another container's identity would
// carry the session).
func TestExecOfNoCandidateRefused(t *testing.T) {
	const uuid = "6f1e2c9a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
	db := containers{
		byUUID: map[string]store.Container{uuid: {ID: 1, UUID: uuid, WebsocketURL: "ws://docker/attach", WebsocketToken: "tok"}},
		execs:  map[string]store.ExecInstance{"1/e9": {ContainerID: 99, ExecID: "e9", Token: "etok", URL: "tcp://docker:2375"}},
		used:   map[string]bool{},
	}
	a := NewAuthorizer(db, Options{})
	if target, err := a.Resolve(context.Background(), Request{Token: "etok", UUID: uuid, ExecID: "e9"}); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("exec of container 99 resolved for container 1: %+v, %v", target, err)
	}
}
