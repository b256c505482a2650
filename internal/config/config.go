// Package config reads zun.conf (oslo.config INI files) into the proxy's
// settings, with Zun's defaults, and validates them once at start. Every
// option is a row of one table (options.go): its default, the kind of
// value it takes with its bounds, the field it fills and the README's text
// about it, from which the README's table is generated.
package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"
)

// Config is everything the proxy reads from zun.conf.
type Config struct {
	Files []string // the files that were read, in order
	// Mode is "zun" (consoles from Zun's database) or "standalone"
	// (the proxy's own tokens): [websocket_proxy] mode, by default zun
	// when [database] connection is set, else standalone.
	Mode     string
	Debug    bool   // [DEFAULT] debug
	LogFile  string // [DEFAULT] log_file and log_dir as oslo.log combines them; "" = stderr
	MyIP     string // [DEFAULT] my_ip
	Proxy    Proxy
	Docker   Docker
	Database Database
	Admin    Admin
	// LogFormat is [DEFAULT] log_format: text or json.
	LogFormat string
	// MetricsListen is [metrics] listen: host:port of /metrics; "" = off.
	MetricsListen string
	// Profiling is [metrics] profiling: Go's pprof profiles at
	// /debug/pprof/ on the metrics listener.
	Profiling bool
	// AuditFile is [audit] file: one JSON record per session, "-" for
	// standard output; "" = off.
	AuditFile string
	// RecordingDir is [recording] dir: one asciicast file per session;
	// "" = off. RecordInput records keystrokes too ([recording] input).
	RecordingDir string
	RecordInput  bool
	// RecordingMaxSize is [recording] max_size: bytes of one recording,
	// past which its session is ended; 0 = no bound.
	RecordingMaxSize int64
	// Warnings are settings that do not do what they read (the proxy
	// does what Zun's services do with them), for the start-up log.
	Warnings []string
}

// Admin is [admin]: the token API's listener (standalone mode).
type Admin struct {
	Listen  string // listen: host:port; "" = off
	KeyFile string // key_file: holds the API key
}

// Proxy is [websocket_proxy].
type Proxy struct {
	Host           string        // wsproxy_host
	Port           int           // wsproxy_port
	BaseURL        string        // base_url: the URL clients are given
	AllowedOrigins []string      // allowed_origins
	SSLOnly        bool          // ssl_only
	Engine         string        // engine: loop or goroutines (extension)
	Cert           string        // cert; "" when TLS is off
	Key            string        // key; "" when the key is in Cert
	TicketKeyFile  string        // ticket_key_file (extension): TLS session ticket keys; "" = Go's own per process
	BackendTimeout time.Duration // backend_timeout (extension): connect + handshake with Docker

	// Hardening (extensions; see the README).
	TokenTTL                time.Duration // token_ttl: 0 = tokens do not expire (Zun's behaviour)
	SingleUseTokens         bool          // single_use_tokens
	HeaderTimeout           time.Duration // header_timeout: to read a request's headers
	MaxHeaderBytes          int           // max_header_size
	MaxMessageBytes         int64         // max_message_size: a client message; 0 = no bound
	MaxSessions             int           // max_sessions: 0 = no bound
	MaxSessionsPerContainer int           // max_sessions_per_container: 0 = no bound
	AuthFailureLimit        int           // auth_failure_limit: wrong tokens per client (IPv4 address, IPv6 /64) per window; 0 = off
	AuthFailureWindow       time.Duration // auth_failure_window

	// The client's address behind load balancers (extensions; see
	// docs/DEPLOYMENT.md). TrustedProxies (trusted_proxies) are the peers
	// believed when they name the client, by X-Forwarded-For or, with
	// ProxyProtocol (proxy_protocol), a PROXY protocol header they must
	// send first.
	TrustedProxies []netip.Prefix
	ProxyProtocol  bool

	// Reliability (extensions; see the README).
	Heartbeat          time.Duration // heartbeat: ping interval; 0 = off
	IdleTimeout        time.Duration // idle_timeout: 0 = off
	MaxSessionDuration time.Duration // max_session_duration: 0 = off
	WriteTimeout       time.Duration // write_timeout: 0 = off
	ShutdownTimeout    time.Duration // shutdown_timeout: drain time on SIGTERM
}

// Docker is [docker].
type Docker struct {
	APIVersion  string // docker_remote_api_version
	APIHost     string // docker_remote_api_host
	APIPort     int    // docker_remote_api_port
	APIURL      string // docker_remote_api_url
	APIInsecure bool   // api_insecure
	CAFile      string // ca_file
	CertFile    string // cert_file
	KeyFile     string // key_file
	// Endpoint is api_url (extension): the Docker Engine API that
	// standalone mode mints consoles for.
	Endpoint string
}

// TLS reports whether Zun talks TLS to Docker's API: api_insecure is false
// and ca_file, cert_file and key_file are all set.
func (d Docker) TLS() bool {
	return !d.APIInsecure && d.CAFile != "" && d.CertFile != "" && d.KeyFile != ""
}

// Database is [database].
type Database struct {
	Connection   string        // connection: SQLAlchemy URL; "" = not configured
	DSN          string        // Connection (and connection_parameters) as a go-sql-driver/mysql DSN
	TLS          DatabaseTLS   // TLS to the database, from the URL's options
	MaxOpen      int           // max_pool_size + max_overflow
	QueryTimeout time.Duration // query_timeout (extension)
}

// Load reads files, then every *.conf file of each dir in name order, later
// values winning, as oslo.config's --config-file and --config-dir do; then
// applies defaults, interpolates and validates.
func Load(files, dirs []string) (*Config, error) {
	r := newReader()
	for _, f := range files {
		if err := r.read(f); err != nil {
			return nil, err
		}
	}
	for _, d := range dirs {
		matches, err := filepath.Glob(filepath.Join(d, "*.conf"))
		if err != nil {
			return nil, fmt.Errorf("--config-dir %s: %w", d, err)
		}
		if _, err := os.Stat(d); err != nil {
			return nil, fmt.Errorf("--config-dir %s: %w", d, err)
		}
		sort.Strings(matches)
		for _, f := range matches {
			// Hidden files are skipped, as oslo.config's glob skips them:
			// an editor's lock (.#name.conf, a dangling link) or backup.
			if strings.HasPrefix(filepath.Base(f), ".") {
				continue
			}
			if err := r.read(f); err != nil {
				return nil, err
			}
		}
	}
	return r.config()
}

type reader struct {
	ini   ini
	files []string
	err   error // first error met while building the Config

	vals      map[string]any       // "section.option" -> the value read, once read
	expanded  map[string]expansion // "section.option" -> its interpolation
	expanding map[string]bool      // being interpolated: a loop if met again
}

func newReader() *reader {
	return &reader{ini: ini{}, vals: map[string]any{}, expanded: map[string]expansion{}, expanding: map[string]bool{}}
}

func (r *reader) read(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	r.files = append(r.files, file)
	return r.ini.parse(string(data), file)
}

// lookup finds an option's raw (uninterpolated) value: from the files, else
// its default.
func (r *reader) lookup(section, name string) (entry, bool) {
	if e, ok := r.ini[section][name]; ok {
		return e, true
	}
	o, ok := optionIndex[section+"."+name]
	switch {
	case !ok:
		return entry{}, false
	case o.hostDefault != nil:
		return entry{value: o.hostDefault()}, true
	}
	return entry{value: o.def}, true
}

// where names an option for error messages: "file: [section] option".
func where(e entry, section, name string) string {
	if e.file != "" {
		return fmt.Sprintf("%s: [%s] %s", e.file, section, name)
	}
	return fmt.Sprintf("[%s] %s", section, name)
}

// get returns an option's interpolated value, and where it was set.
func (r *reader) get(section, name string) (string, entry, error) {
	e, _ := r.lookup(section, name)
	x := r.expand(section, name, e, 0)
	if tl, ok := x.err.(tooLong); ok && tl.name == name {
		x.err = fmt.Errorf("expands to more than %d bytes", maxExpanded)
	}
	return x.value, e, x.err
}

// readOptions reads every option of the table: interpolated, converted by
// its kind, kept for the checks of config and stored at its destination.
func (r *reader) readOptions(c *Config) {
	for i := range options {
		o := &options[i]
		v, e, err := r.get(o.section, o.name)
		var val any
		if err == nil {
			val, err = o.kind.read(v)
		}
		if err != nil {
			r.fail(e, o.section, o.name, err)
			continue
		}
		r.vals[o.section+"."+o.name] = val
		if o.dst != nil {
			dst := reflect.ValueOf(o.dst(c)).Elem()
			dst.Set(reflect.ValueOf(val).Convert(dst.Type()))
		}
	}
}

// val is the value read for an option, or T's zero value when it was
// refused (the refusal is already reported).
func val[T any](r *reader, section, name string) T {
	if _, ok := optionIndex[section+"."+name]; !ok {
		panic("config: no option [" + section + "] " + name + " in the table")
	}
	v, _ := r.vals[section+"."+name].(T)
	return v
}

// entryOf is where an option was set, for errors found by the checks.
func (r *reader) entryOf(section, name string) entry {
	e, _ := r.lookup(section, name)
	return e
}

// LogName is the file oslo.log writes in log_dir when log_file is unset: the
// program's name with ".log" (Kolla's log collection reads it there).
const LogName = "zun-wsproxy.log"

// logFilePath is oslo.log's choice of log file: log_file, under log_dir
// when both are set; log_dir/zun-wsproxy.log when only log_dir is; none
// (standard error) when neither is.
func logFilePath(logFile, logDir string) string {
	switch {
	case logDir == "":
		return logFile
	case logFile == "":
		return filepath.Join(logDir, LogName)
	case filepath.IsAbs(logFile):
		return logFile
	}
	return filepath.Join(logDir, logFile)
}

func (r *reader) fail(e entry, section, name string, err error) {
	if r.err == nil {
		r.err = fmt.Errorf("%s: %w", where(e, section, name), err)
	}
}

// config reads every option of the table, then checks and combines those
// that depend on each other.
func (r *reader) config() (*Config, error) {
	c := &Config{Files: r.files}
	r.readOptions(c)

	if c.Profiling && c.MetricsListen == "" {
		r.fail(r.entryOf("metrics", "profiling"), "metrics", "profiling", errors.New("needs [metrics] listen"))
	}
	c.LogFile = logFilePath(val[string](r, "DEFAULT", "log_file"), val[string](r, "DEFAULT", "log_dir"))

	const wp = "websocket_proxy"
	p := &c.Proxy
	if p.ProxyProtocol && len(p.TrustedProxies) == 0 {
		r.fail(r.entryOf(wp, "proxy_protocol"), wp, "proxy_protocol", errors.New("true, but trusted_proxies is empty: no peer may send a PROXY header"))
	}
	r.listenerTLS(p)

	const db = "database"
	if _, ok := r.vals[db+".connection_parameters"]; ok && c.Database.Connection != "" {
		d, err := ParseDatabaseURL(c.Database.Connection, val[url.Values](r, db, "connection_parameters"))
		var qe *QueryError
		switch {
		case errors.As(err, &qe) && qe.InParameters:
			r.fail(r.entryOf(db, "connection_parameters"), db, "connection_parameters", err)
		case err != nil:
			r.fail(r.entryOf(db, "connection"), db, "connection", err)
		default:
			c.Database.DSN, c.Database.TLS = d.DSN, d.TLS
			for _, w := range d.Warnings {
				c.Warnings = append(c.Warnings, where(r.entryOf(db, "connection"), db, "connection")+": "+w)
			}
		}
	}
	pool, overflow := val[int](r, db, "max_pool_size"), val[int](r, db, "max_overflow")
	c.Database.MaxOpen = pool + overflow

	switch c.Mode = val[string](r, wp, "mode"); c.Mode {
	case "":
		c.Mode = "standalone"
		if c.Database.Connection != "" {
			c.Mode = "zun"
		}
	case "zun":
		if c.Database.Connection == "" {
			r.fail(r.entryOf(wp, "mode"), wp, "mode", errors.New("zun needs [database] connection"))
		}
	}

	if c.Admin.Listen != "" {
		keyEntry := r.entryOf("admin", "key_file")
		if c.Admin.KeyFile == "" {
			r.fail(entry{file: r.entryOf("admin", "listen").file}, "admin", "key_file", errors.New("required when [admin] listen is set"))
		} else if key, err := os.ReadFile(c.Admin.KeyFile); err != nil {
			r.fail(keyEntry, "admin", "key_file", fmt.Errorf("unreadable: %w", unwrapPath(err)))
		} else if len(strings.TrimSpace(string(key))) < 16 {
			r.fail(keyEntry, "admin", "key_file", errors.New("the key must be at least 16 characters"))
		}
	}

	if r.err != nil {
		return nil, r.err
	}
	return c, nil
}

// listenerTLS applies websockify's rule: an explicitly set cert must load;
// the default self.pem is used only if it exists.
func (r *reader) listenerTLS(p *Proxy) {
	const wp = "websocket_proxy"
	cert, certEntry := val[string](r, wp, "cert"), r.entryOf(wp, "cert")
	key, keyEntry := val[string](r, wp, "key"), r.entryOf(wp, "key")
	_, explicit := r.ini[wp]["cert"]
	if !explicit {
		if _, err := os.Stat(cert); err != nil {
			cert = ""
		}
	}
	if cert != "" {
		keyFile := key
		if keyFile == "" {
			keyFile = cert
		}
		if _, err := os.ReadFile(cert); err != nil {
			r.fail(certEntry, wp, "cert", fmt.Errorf("unreadable: %w", unwrapPath(err)))
		} else if key != "" {
			if _, err := os.ReadFile(key); err != nil {
				r.fail(keyEntry, wp, "key", fmt.Errorf("unreadable: %w", unwrapPath(err)))
			}
		}
		if r.err == nil {
			if _, err := tls.LoadX509KeyPair(cert, keyFile); err != nil {
				r.fail(certEntry, wp, "cert", fmt.Errorf("cannot load certificate and key: %w", err))
			}
		}
	}
	p.Cert, p.Key = cert, key
	if cert == "" {
		p.Key = ""
	}
	if p.TicketKeyFile != "" && cert == "" {
		r.fail(r.entryOf(wp, "ticket_key_file"), wp, "ticket_key_file", errors.New("set, but no certificate is configured (cert)"))
	}
	if p.SSLOnly && cert == "" {
		r.fail(r.entryOf(wp, "ssl_only"), wp, "ssl_only", errors.New("true, but no certificate is configured (cert)"))
	}
}

// unwrapPath drops the *PathError wrapper: the message already names it.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// hostIP is my_ip's default: the first non-loopback IPv4 address of this
// host's interfaces (found without opening any connection), else loopback.
func hostIP() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// DefaultFiles returns the existing files oslo.config's find_config_files
// would read for project "zun" and program "zun-wsproxy": zun.conf then
// zun-wsproxy.conf, each from the first of ~/.zun, ~, /etc/zun, /etc that
// has it.
func DefaultFiles() []string {
	var out []string
	for _, name := range []string{"zun.conf", "zun-wsproxy.conf"} {
		for _, dir := range searchDirs() {
			p := filepath.Join(dir, name)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// DefaultDirs returns the existing zun.conf.d and zun-wsproxy.conf.d
// directories, found the same way as DefaultFiles.
func DefaultDirs() []string {
	var out []string
	for _, name := range []string{"zun.conf.d", "zun-wsproxy.conf.d"} {
		for _, dir := range searchDirs() {
			p := filepath.Join(dir, name)
			if st, err := os.Stat(p); err == nil && st.IsDir() {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

func searchDirs() []string {
	home, _ := os.UserHomeDir()
	var dirs []string
	if home != "" {
		dirs = append(dirs, filepath.Join(home, ".zun"), home)
	}
	return append(dirs, "/etc/zun", "/etc")
}
