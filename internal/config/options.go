package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

//go:generate go test -run ^TestREADMEOptions$ . -args -update-readme

// An option is one zun.conf option. The options table is the only list of
// them: the parser reads every option through it, and the README's
// configuration reference is generated from it (TestREADMEOptions).
type option struct {
	section, name string
	// def is the default as an oslo.config template: interpolated like a
	// value from a file.
	def string
	// hostDefault, when set, computes the default instead (my_ip's).
	hostDefault func() string
	kind        kind
	// dst is the field of Config the value goes to; nil for options read
	// together with others (see reader.config) or only checked.
	dst func(c *Config) any
	// shown is the README's default cell when def alone would not say it.
	shown string
	doc   string // the README's meaning cell
}

// A kind reads an option's value.
type kind interface {
	// read converts a value, or says in a phrase why it cannot; errors
	// read after "FILE: [section] option: ".
	read(v string) (any, error)
	// String says what values are accepted, in the README's words.
	String() string
}

var options = []option{
	{section: "DEFAULT", name: "my_ip", hostDefault: hostIP, kind: text("address"), dst: func(c *Config) any { return &c.MyIP },
		shown: "first non-loopback IPv4 address", doc: "this host's address, used by the defaults below"},
	{section: "DEFAULT", name: "debug", def: "false", kind: boolean{}, dst: func(c *Config) any { return &c.Debug },
		doc: "debug logging"},
	{section: "DEFAULT", name: "log_file", kind: path{}, shown: "stderr",
		doc: "where logs go, as oslo.log chooses: this file (under `log_dir` when relative); stderr when neither `log_file` nor `log_dir` is set"},
	{section: "DEFAULT", name: "log_dir", kind: path{},
		doc: "with `log_file` unset, logs go to `log_dir/zun-wsproxy.log` (as Kolla writes zun.conf)"},
	{section: "DEFAULT", name: "log_format", def: "text", kind: choice{noun: "format", values: []string{"text", "json"}}, dst: func(c *Config) any { return &c.LogFormat },
		doc: "*extension:* the log lines' format (see Operations)"},

	{section: "websocket_proxy", name: "wsproxy_host", def: "$my_ip", kind: text("address"), dst: func(c *Config) any { return &c.Proxy.Host },
		doc: "listen address"},
	{section: "websocket_proxy", name: "wsproxy_port", def: "6784", kind: port{}, dst: func(c *Config) any { return &c.Proxy.Port },
		doc: "listen port; `0`: a free one, logged at start (`zun-wsproxy listening address=…`), which a `base_url` on port 0, as the default then is, names"},
	{section: "websocket_proxy", name: "base_url", def: "ws://$wsproxy_host:$wsproxy_port/", kind: urlKind{noun: "URL", schemes: []string{"ws", "wss", "http", "https"}, host: true}, dst: func(c *Config) any { return &c.Proxy.BaseURL },
		doc: "the URL clients use; its scheme drives the Origin check and its path is served besides `/`"},
	{section: "websocket_proxy", name: "allowed_origins", kind: list{}, dst: func(c *Config) any { return &c.Proxy.AllowedOrigins },
		doc: "extra Origin hostnames allowed"},
	{section: "websocket_proxy", name: "cert", def: "self.pem", kind: path{},
		doc: "TLS certificate (PEM; may include the key). When the file exists, the port serves both `wss://` and `ws://`, as websockify does. An explicitly set file that cannot be read stops start-up"},
	{section: "websocket_proxy", name: "key", kind: path{},
		doc: "TLS key, if not in `cert`"},
	{section: "websocket_proxy", name: "ssl_only", def: "false", kind: boolean{}, dst: func(c *Config) any { return &c.Proxy.SSLOnly },
		doc: "refuse plain connections (they get `400`)"},
	{section: "websocket_proxy", name: "ticket_key_file", kind: path{readable: true}, dst: func(c *Config) any { return &c.Proxy.TicketKeyFile },
		doc: "*extension:* TLS session ticket keys: one per line, 32 random bytes in base64 (`openssl rand -base64 32`); the first encrypts new tickets, every one decrypts; reloaded with the certificate. Replicas behind one load balancer given the same file resume each other's TLS sessions; unset, each process makes its own keys (rotated daily) and resumes only the sessions it began. As secret as the key: readable by the proxy only, and rotated (docs/DEPLOYMENT.md)"},
	{section: "websocket_proxy", name: "engine", def: "loop", kind: choice{noun: "engine", values: []string{"loop", "goroutines"}}, dst: func(c *Config) any { return &c.Proxy.Engine },
		doc: "*extension:* `loop` (the default) serves plain-socket sessions on event loops (one per processor, level-triggered epoll, reads and writes inline; bytes a socket does not take wait on the loop, bounded, and the side sending them is not read meanwhile; a frame whose bytes are late waits on the loop too; a session goes back to goroutines only when more would have to wait than that bound, or a control frame's payload is late); `goroutines` runs two pump goroutines per active session (the engine before `loop`, kept to compare the two on an operator's own load and as a fallback). TLS sessions and recorded ones always use goroutines. See docs/PERFORMANCE.md"},
	{section: "websocket_proxy", name: "backend_timeout", def: "10", kind: seconds{}, dst: func(c *Config) any { return &c.Proxy.BackendTimeout },
		doc: "*extension:* to connect to Docker and finish its handshake (then `504`)"},
	{section: "websocket_proxy", name: "mode", kind: choice{noun: "mode", values: []string{"zun", "standalone"}, empty: true},
		shown: "`zun` with a `connection`, else `standalone`", doc: "*extension:* where consoles come from"},
	{section: "websocket_proxy", name: "token_ttl", def: "0", kind: seconds{optional: true}, dst: func(c *Config) any { return &c.Proxy.TokenTTL },
		doc: "*extension:* Zun mode: refuse tokens whose row's `updated_at` is older than this"},
	{section: "websocket_proxy", name: "single_use_tokens", def: "false", kind: boolean{}, dst: func(c *Config) any { return &c.Proxy.SingleUseTokens },
		doc: "*extension:* Zun mode: clear `websocket_token` / the exec token when a session starts (`UPDATE … WHERE token = ?`, atomic across replicas)"},
	{section: "websocket_proxy", name: "header_timeout", def: "10", kind: seconds{}, dst: func(c *Config) any { return &c.Proxy.HeaderTimeout },
		doc: "*extension:* to receive a request's headers (and a TLS connection's first byte). On the console port, on Linux, a connection that sends nothing is held by the kernel for a second before this begins (`TCP_DEFER_ACCEPT`). On the token API and metrics listeners too, where it also bounds a request's body and the wait for the next request on a kept-alive connection; also the longest a frame, once begun, may go without a byte of it (then close `1008`)"},
	{section: "websocket_proxy", name: "max_header_size", def: "16384", kind: integer{1024, 1 << 20}, dst: func(c *Config) any { return &c.Proxy.MaxHeaderBytes },
		doc: "*extension:* bytes of request headers (then `431`), on every listener"},
	{section: "websocket_proxy", name: "max_message_size", def: "1048576", kind: integer{0, 1 << 30}, dst: func(c *Config) any { return &c.Proxy.MaxMessageBytes },
		doc: "*extension:* bytes in one client message, across fragments (then close `1009`); `0` = no bound"},
	{section: "websocket_proxy", name: "max_sessions", def: "100000", kind: integer{0, 10_000_000}, dst: func(c *Config) any { return &c.Proxy.MaxSessions },
		doc: "*extension:* concurrent sessions (then `503` with `Retry-After`); `0` = no bound"},
	{section: "websocket_proxy", name: "max_sessions_per_container", def: "100", kind: integer{0, 10_000_000}, dst: func(c *Config) any { return &c.Proxy.MaxSessionsPerContainer },
		doc: "*extension:* concurrent sessions of one container (then `503` with `Retry-After`); `0` = no bound"},
	{section: "websocket_proxy", name: "auth_failure_limit", def: "20", kind: integer{0, 1_000_000}, dst: func(c *Config) any { return &c.Proxy.AuthFailureLimit },
		doc: "*extension:* wrong tokens (`401`) per client per `auth_failure_window` before `429` with `Retry-After`; `0` = off. A client is an IPv4 address or an IPv6 `/64`, the real one behind `trusted_proxies`; its window starts at its first failure. Handshakes whose tokens are being checked count against the limit until they are answered, so wrong tokens sent at once get no more tries than sent one by one; a handshake beyond the limit waits (up to 5 s, at most 64 waiting in a set of the table below) for one of them to be answered, so many consoles opened at once from one address all open; one that cannot wait gets `503` with `Retry-After` (no token of it was wrong). Origin refusals (`403`) do not count: any web page can make its visitors' browsers send them. The proxy remembers at most 65,536 clients in a fixed table of about 2 MiB (8-way set-associative, keyed by a secret hash), O(1) per handshake. A client failing in a full set replaces one whose window ended, else the one with the fewest failures (least recently failing among equals): fresh addresses failing once push out only clients that failed once, never one that keeps failing. A client is forgotten only when the 7 others of its set each have at least as many failures in their windows; short of that, counts are exact"},
	{section: "websocket_proxy", name: "auth_failure_window", def: "60", kind: seconds{}, dst: func(c *Config) any { return &c.Proxy.AuthFailureWindow },
		doc: "*extension:* the window of `auth_failure_limit`"},
	{section: "websocket_proxy", name: "trusted_proxies", kind: prefixes{}, dst: func(c *Config) any { return &c.Proxy.TrustedProxies },
		doc: "*extension:* load balancers believed when they name the client: by `X-Forwarded-For` (walked from the right), or by a PROXY header with `proxy_protocol`. The client's address then drives the limit above, `client=` in logs and the audit record; other peers' headers are ignored, `X-Forwarded-Proto` too (while the list is empty it is believed from anyone, as in Zun). Reloaded on `SIGHUP` ([docs/DEPLOYMENT.md](docs/DEPLOYMENT.md#the-clients-address))"},
	{section: "websocket_proxy", name: "proxy_protocol", def: "false", kind: boolean{}, dst: func(c *Config) any { return &c.Proxy.ProxyProtocol },
		doc: "*extension:* connections from `trusted_proxies` start with a PROXY protocol header, v1 or v2 (HAProxy's `send-proxy`, `send-proxy-v2`); one without a valid header is closed (logged, counted as `proxy_header`). Other peers send none. Needs a restart to change"},
	{section: "websocket_proxy", name: "heartbeat", def: "30", kind: seconds{optional: true}, dst: func(c *Config) any { return &c.Proxy.Heartbeat },
		doc: "*extension:* between pings (see Reliability)"},
	{section: "websocket_proxy", name: "idle_timeout", def: "0", kind: seconds{optional: true}, dst: func(c *Config) any { return &c.Proxy.IdleTimeout },
		doc: "*extension:* end sessions with no data either way for this long (close `1001`)"},
	{section: "websocket_proxy", name: "max_session_duration", def: "0", kind: seconds{optional: true}, dst: func(c *Config) any { return &c.Proxy.MaxSessionDuration },
		doc: "*extension:* end sessions this old (close `1001`)"},
	{section: "websocket_proxy", name: "write_timeout", def: "30", kind: seconds{optional: true}, dst: func(c *Config) any { return &c.Proxy.WriteTimeout },
		doc: "*extension:* how long a client may take no output before it is disconnected"},
	{section: "websocket_proxy", name: "shutdown_timeout", def: "30", kind: seconds{optional: true}, dst: func(c *Config) any { return &c.Proxy.ShutdownTimeout },
		doc: "*extension:* on SIGTERM/SIGINT, how long running sessions may go on (`0`: they end at once)"},

	{section: "docker", name: "docker_remote_api_version", def: "1.26", kind: text("string"), dst: func(c *Config) any { return &c.Docker.APIVersion },
		doc: "API version in exec start paths"},
	{section: "docker", name: "docker_remote_api_host", def: "$my_ip", kind: text("address"), dst: func(c *Config) any { return &c.Docker.APIHost },
		doc: "read for compatibility; the proxy dials the URLs stored in Zun's tables"},
	{section: "docker", name: "docker_remote_api_port", def: "2375", kind: port{}, dst: func(c *Config) any { return &c.Docker.APIPort },
		doc: "read for compatibility, as `docker_remote_api_host`"},
	{section: "docker", name: "docker_remote_api_url", def: "tcp://$docker_remote_api_host:$docker_remote_api_port", kind: text("URL"), dst: func(c *Config) any { return &c.Docker.APIURL },
		doc: "read for compatibility, as `docker_remote_api_host`; `/readyz` checks this engine in Zun mode"},
	{section: "docker", name: "api_url", def: "unix:///var/run/docker.sock", kind: urlKind{noun: "Docker URL", schemes: []string{"unix", "tcp", "http", "https"}}, dst: func(c *Config) any { return &c.Docker.Endpoint },
		doc: "Zun's own option (the engine zun-compute uses); here it is the Docker engine of standalone mode, and unused in Zun mode"},
	{section: "docker", name: "api_insecure", def: "false", kind: boolean{}, dst: func(c *Config) any { return &c.Docker.APIInsecure },
		doc: "skip verification of Docker's TLS certificate"},
	{section: "docker", name: "ca_file", kind: path{readable: true}, dst: func(c *Config) any { return &c.Docker.CAFile },
		doc: "TLS to Docker: the CA that verifies the daemon. `wss://` attach URLs always use TLS; exec uses TLS on `tcp://` URLs when `ca_file`, `cert_file` and `key_file` are all set and `api_insecure` is false (as Zun does)"},
	{section: "docker", name: "cert_file", kind: path{readable: true}, dst: func(c *Config) any { return &c.Docker.CertFile },
		doc: "TLS to Docker: the client certificate (see `ca_file`)"},
	{section: "docker", name: "key_file", kind: path{readable: true}, dst: func(c *Config) any { return &c.Docker.KeyFile },
		doc: "TLS to Docker: the client certificate's key (see `ca_file`)"},

	{section: "database", name: "connection", kind: text("SQLAlchemy URL"), dst: func(c *Config) any { return &c.Database.Connection },
		shown: "— (Zun mode needs it)", doc: "SQLAlchemy URL of Zun's database: `mysql+pymysql://`, `mysql://`, `mysql+mysqldb://`, `mariadb://`…. Its query options are read as SQLAlchemy passes them to the driver the scheme names, so the proxy connects when, and as safely as, zun-api: `charset`, `unix_socket`, `connect_timeout`, `read_timeout`, `write_timeout` (seconds); `use_unicode` and SQLAlchemy's `plugin` (no effect here). **TLS, `mysql+pymysql://` (PyMySQL 1.0–1.1):** `ssl_ca` (or `ssl_capath`) turns TLS on and verifies the server's certificate against that CA and its name against the URL's host (`localhost` without one); `ssl_check_hostname=false` keeps the chain check only; `ssl_cert`/`ssl_key` present a client certificate (key in the certificate file when `ssl_key` is absent); `ssl_cipher` takes OpenSSL names of TLS 1.2 suites; `ssl_disabled` with any value turns TLS off. `ssl_verify_cert` and `ssl_verify_identity` make PyMySQL ignore every option above and verify (`ssl_verify_cert=true`/`optional`/`required`/`1`/`yes`) against the system's CAs, never the host name, or not verify at all (any other value, or `ssl_verify_identity` alone). Without any of them: plaintext. **TLS, `mysql://`/`mysql+mysqldb://` (mysqlclient):** `ssl_mode` (`DISABLED`, `PREFERRED` — TLS if offered, unverified —, `REQUIRED` — unverified —, `VERIFY_CA`, `VERIFY_IDENTITY`, upper case), the same files, no `ssl_check_hostname`; without `ssl_mode` a CA means `VERIFY_CA`. TLS 1.2 at least; files are read at start. Where the driver does not do what an option reads, a warning at start says so; an unknown option, a value the driver rejects, an unreadable file, a repeated option or `ssl_key_password` (encrypted keys) stops start-up: `zun-wsproxy: FILE: [database] connection: unknown option \"foo\"`. Neither errors nor logs show the password"},
	{section: "database", name: "connection_parameters", kind: query{},
		doc: "query options appended to `connection` (oslo.db's), read the same way"},
	{section: "database", name: "max_pool_size", def: "5", kind: integer{1, 10000},
		doc: "with `max_overflow`, the most connections open at once (oslo.db's meaning); any connection idle for 5 minutes is closed (see DEPLOYMENT.md)"},
	{section: "database", name: "max_overflow", def: "50", kind: integer{0, 100000},
		doc: "connections opened beyond `max_pool_size` while busy (oslo.db's meaning), kept while used (see DEPLOYMENT.md)"},
	{section: "database", name: "query_timeout", def: "5", kind: seconds{}, dst: func(c *Config) any { return &c.Database.QueryTimeout },
		doc: "*extension:* how long a lookup may take (then `503`)"},
	// oslo.db's start-up retries (Kolla sets -1, forever). Zun mode opens
	// no connection at start-up, so there is nothing to retry; the value is
	// still checked as oslo.db checks it.
	{section: "database", name: "max_retries", def: "10", kind: integer{-1, math.MaxInt32},
		doc: "oslo.db's start-up retries (Kolla sets `-1`). Zun mode opens no connection at start-up (lookups connect when needed and answer `503` while the database is down), so nothing is retried"},

	{section: "admin", name: "listen", kind: address{}, dst: func(c *Config) any { return &c.Admin.Listen },
		shown: "off", doc: "*extension:* standalone mode's token API (above)"},
	{section: "admin", name: "key_file", kind: path{}, dst: func(c *Config) any { return &c.Admin.KeyFile },
		doc: "*extension:* holds the token API's key (at least 16 characters); required with `listen`"},
	{section: "metrics", name: "listen", kind: address{}, dst: func(c *Config) any { return &c.MetricsListen },
		shown: "off", doc: "*extension:* serves Prometheus metrics at `/metrics`"},
	{section: "metrics", name: "profiling", def: "false", kind: boolean{}, dst: func(c *Config) any { return &c.Profiling },
		doc: "*extension:* also serve Go's profiles at `/debug/pprof/` on that listener (for `go tool pprof`; keep the listener private)"},
	{section: "audit", name: "file", kind: path{}, dst: func(c *Config) any { return &c.AuditFile },
		shown: "off", doc: "*extension:* one JSON record per session appended to this file (0600); `-` for standard output"},
	{section: "recording", name: "dir", kind: path{}, dst: func(c *Config) any { return &c.RecordingDir },
		shown: "off", doc: "*extension:* record every session in asciicast v2 there"},
	{section: "recording", name: "input", def: "false", kind: boolean{}, dst: func(c *Config) any { return &c.RecordInput },
		doc: "*extension:* record keystrokes too"},
	{section: "recording", name: "max_size", def: "104857600", kind: size{min: 4096, max: 1 << 40}, dst: func(c *Config) any { return &c.RecordingMaxSize },
		shown: "`104857600` (100 MiB)", doc: "*extension:* bytes of one recording file; the session that would pass it is ended (close `1008`)"},
}

// optionIndex finds an option of the table by "section.name".
var optionIndex = func() map[string]*option {
	m := make(map[string]*option, len(options))
	for i := range options {
		m[options[i].section+"."+options[i].name] = &options[i]
	}
	return m
}()

// boolean is oslo.config's BoolOpt: true/1/yes/on, false/0/no/off.
type boolean struct{}

func (boolean) String() string { return "boolean" }
func (boolean) read(v string) (any, error) {
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on":
		return true, nil
	case "false", "0", "no", "off":
		return false, nil
	}
	return nil, fmt.Errorf("invalid boolean %q (want true or false)", v)
}

// integer is a whole number within bounds.
type integer struct{ lo, hi int }

func (k integer) String() string {
	if k.hi == math.MaxInt32 {
		return fmt.Sprintf("integer ≥ %d", k.lo)
	}
	return fmt.Sprintf("integer, %d to %d", k.lo, k.hi)
}
func (k integer) read(v string) (any, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < k.lo || n > k.hi {
		return nil, fmt.Errorf("invalid integer %q (want %d-%d)", v, k.lo, k.hi)
	}
	return n, nil
}

// size is a number of bytes: 0 for no bound, else from min to max.
type size struct{ min, max int }

func (k size) String() string {
	return fmt.Sprintf("bytes; `0` = no bound, else at least `%d`", k.min)
}
func (k size) read(v string) (any, error) {
	n, err := integer{0, k.max}.read(v)
	if err == nil && n.(int) > 0 && n.(int) < k.min {
		return nil, fmt.Errorf("invalid size %d (want 0 for no bound, or at least %d bytes)", n, k.min)
	}
	return n, err
}

// port is a TCP port number.
type port struct{}

func (port) String() string { return "port" }
func (port) read(v string) (any, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 65535 {
		return nil, fmt.Errorf("invalid port %q (want 0-65535)", v)
	}
	return n, nil
}

// maxSeconds bounds durations: a year.
const maxSeconds = 86400 * 365

// seconds is a duration in seconds, fractions allowed, up to a year;
// optional ones may be 0 (off).
type seconds struct{ optional bool }

func (k seconds) String() string {
	if k.optional {
		return "seconds; `0` = off"
	}
	return "seconds"
}
func (k seconds) read(v string) (any, error) {
	f, err := strconv.ParseFloat(v, 64)
	switch {
	case err == nil && k.optional && f == 0:
		return time.Duration(0), nil
	case err != nil || !(f > 0 && f <= maxSeconds): // !(…) refuses NaN too
		if k.optional {
			return nil, fmt.Errorf("invalid number of seconds %q (want a positive number, or 0 for off)", v)
		}
		return nil, fmt.Errorf("invalid number of seconds %q (want a positive number)", v)
	}
	return time.Duration(f * float64(time.Second)), nil
}

// text is any string; it names what the string is.
type text string

func (k text) String() string           { return string(k) }
func (text) read(v string) (any, error) { return v, nil }

// path is a file or directory name; readable ones must be readable files
// when set.
type path struct{ readable bool }

func (k path) String() string {
	if k.readable {
		return "readable file"
	}
	return "path"
}
func (k path) read(v string) (any, error) {
	if k.readable && v != "" {
		if _, err := os.ReadFile(v); err != nil {
			return nil, fmt.Errorf("unreadable: %w", unwrapPath(err))
		}
	}
	return v, nil
}

// list is a comma list; blanks around items and empty items are dropped.
type list struct{}

func (list) String() string { return "comma list" }
func (list) read(v string) (any, error) {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// prefixes is a comma list of IP addresses and CIDR prefixes; an address
// is a prefix of its full length. IPv4-mapped IPv6 forms are their IPv4
// equivalents, as peers' addresses are compared.
type prefixes struct{}

func (prefixes) String() string { return "comma list of addresses and CIDRs" }
func (prefixes) read(v string) (any, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("invalid address or CIDR %q (want e.g. 10.0.0.5, 10.0.0.0/24 or fd00::/64)", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("invalid CIDR %q: bits set past the prefix length (did you mean %s?)", s, p.Masked())
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p)
	}
	return out, nil
}

// choice is one of a few words (or empty, when empty is set).
type choice struct {
	noun   string // what the word is, for errors
	values []string
	empty  bool
}

func (k choice) String() string { return orList(k.values, "`", "`") }
func (k choice) read(v string) (any, error) {
	for _, w := range k.values {
		if v == w {
			return v, nil
		}
	}
	if k.empty && v == "" {
		return v, nil
	}
	return nil, fmt.Errorf("invalid %s %q (want %s)", k.noun, v, orList(k.values, "", ""))
}

// address is host:port, or empty (off).
type address struct{}

func (address) String() string { return "`host:port`" }
func (address) read(v string) (any, error) {
	if v != "" {
		if _, _, err := net.SplitHostPort(v); err != nil {
			return nil, fmt.Errorf("invalid address %q (want host:port)", v)
		}
	}
	return v, nil
}

// urlKind is a URL of one of a few schemes, with a host when host is set.
type urlKind struct {
	noun    string // what the URL is, for errors
	schemes []string
	host    bool
}

func (k urlKind) String() string { return "URL: " + orList(k.schemes, "`", "://`") }
func (k urlKind) read(v string) (any, error) {
	u, err := url.Parse(v)
	ok := err == nil && (!k.host || u.Host != "")
	if ok {
		ok = false
		for _, s := range k.schemes {
			ok = ok || u.Scheme == s
		}
	}
	if !ok {
		want := orList(k.schemes, "", "://")
		if k.host {
			want += "host/"
		}
		return nil, fmt.Errorf("invalid %s %q (want %s)", k.noun, v, want)
	}
	return v, nil
}

// query is URL query options (a=b&c=d).
type query struct{}

func (query) String() string { return "query options (`a=b&c=d`)" }
func (query) read(v string) (any, error) {
	q, err := url.ParseQuery(v)
	if err != nil {
		return nil, fmt.Errorf("invalid parameters: %w", err)
	}
	return q, nil
}

// orList writes words as "a, b or c", each between before and after.
func orList(words []string, before, after string) string {
	var b strings.Builder
	for i, w := range words {
		switch {
		case i == 0:
		case i == len(words)-1:
			b.WriteString(" or ")
		default:
			b.WriteString(", ")
		}
		b.WriteString(before + w + after)
	}
	return b.String()
}

// Interpolation bounds: what a value may grow to and how deep $references
// may nest. Expansion is otherwise exponential: twelve options each
// naming the one before twice make a gigabyte from 400 bytes of file.
const (
	maxExpanded = 64 << 10
	maxNesting  = 10
)

// expansion is an option's interpolated value, kept so that each option
// is expanded once however often it is referred to.
type expansion struct {
	value  string
	height int // how deep references nest below this value
	err    error
}

// tooDeep is an expansion cut short by maxNesting: the path's fault, not
// the option's, so it is not kept.
type tooDeep struct{ ref string }

func (e tooDeep) Error() string {
	return fmt.Sprintf("interpolation nested deeper than %d levels (at $%s)", maxNesting, e.ref)
}

// tooLong is an expansion past maxExpanded.
type tooLong struct{ name string }

func (e tooLong) Error() string {
	return fmt.Sprintf("$%s expands to more than %d bytes", e.name, maxExpanded)
}

// expand interpolates the value of option sec.name found at depth
// references from the value being read. Each option is expanded once;
// only an expansion cut short by depth is not kept, as depth is the
// path's and not the option's.
func (r *reader) expand(sec, name string, e entry, depth int) expansion {
	key := sec + "." + name
	if x, ok := r.expanded[key]; ok {
		if depth+x.height > maxNesting {
			return expansion{err: tooDeep{name}}
		}
		return x
	}
	if r.expanding[key] {
		return expansion{err: fmt.Errorf("interpolation loop through $%s", name)}
	}
	r.expanding[key] = true
	x := r.interpolate(sec, name, e.value, depth)
	delete(r.expanding, key)
	if !errors.As(x.err, new(tooDeep)) {
		r.expanded[key] = x
	}
	return x
}

// interpolate expands $name and ${name} (an option of the same section, or
// of DEFAULT) and $$ in s, the value of option name, as oslo.config does.
func (r *reader) interpolate(section, name, s string, depth int) expansion {
	if !strings.Contains(s, "$") {
		return expansion{value: s}
	}
	var b strings.Builder
	height := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' {
			b.WriteByte(c)
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			b.WriteByte('$')
			i++
			continue
		}
		var ref string
		if i+1 < len(s) && s[i+1] == '{' {
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return expansion{err: fmt.Errorf("unterminated ${ in %q", s)}
			}
			ref = s[i+2 : i+2+end]
			i += 2 + end
		} else {
			j := i + 1
			for j < len(s) && (s[j] == '_' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			if j == i+1 {
				return expansion{err: fmt.Errorf("'$' not followed by an option name in %q (write $$ for a literal $)", s)}
			}
			ref = s[i+1 : j]
			i = j - 1
		}
		sec := section
		e, ok := r.lookup(sec, ref)
		if !ok {
			sec = "DEFAULT"
			e, ok = r.lookup(sec, ref)
		}
		if !ok {
			return expansion{err: fmt.Errorf("unknown option $%s in %q", ref, s)}
		}
		if depth+1 > maxNesting {
			return expansion{err: tooDeep{ref}}
		}
		x := r.expand(sec, ref, e, depth+1)
		if x.err != nil {
			return x
		}
		if b.Len()+len(x.value) > maxExpanded {
			return expansion{err: tooLong{name}}
		}
		b.WriteString(x.value)
		height = max(height, x.height+1)
	}
	return expansion{value: b.String(), height: height}
}
