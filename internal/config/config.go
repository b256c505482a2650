// Package config reads zun.conf (oslo.config INI files) into the proxy's
// settings, with Zun's defaults, and validates them once at start.
package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
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
	Engine         string        // engine: goroutines or loop
	Cert           string        // cert; "" when TLS is off
	Key            string        // key; "" when the key is in Cert
	BackendTimeout time.Duration // backend_timeout (extension): connect + handshake with Docker

	// Hardening (extensions; see the README).
	TokenTTL                time.Duration // token_ttl: 0 = tokens do not expire (Zun's behaviour)
	SingleUseTokens         bool          // single_use_tokens
	HeaderTimeout           time.Duration // header_timeout: to read a request's headers
	MaxHeaderBytes          int           // max_header_size
	MaxMessageBytes         int64         // max_message_size: a client message; 0 = no bound
	MaxSessions             int           // max_sessions: 0 = no bound
	MaxSessionsPerContainer int           // max_sessions_per_container: 0 = no bound
	AuthFailureLimit        int           // auth_failure_limit: per address per window; 0 = off
	AuthFailureWindow       time.Duration // auth_failure_window

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
	DSN          string        // Connection as a go-sql-driver/mysql DSN
	MaxOpen      int           // max_pool_size + max_overflow
	MaxIdle      int           // max_pool_size
	QueryTimeout time.Duration // query_timeout (extension)
}

// defaults are Zun's option defaults (zun/conf), as oslo.config templates:
// they are interpolated like values from files.
var defaults = map[string]map[string]string{
	"DEFAULT": {"debug": "false", "log_file": "", "log_dir": "", "log_format": "text"},
	"websocket_proxy": {
		"wsproxy_host":    "$my_ip",
		"wsproxy_port":    "6784",
		"base_url":        "ws://$wsproxy_host:$wsproxy_port/",
		"allowed_origins": "",
		"ssl_only":        "false",
		"engine":          "goroutines",
		"cert":            "self.pem",
		"key":             "",
		"backend_timeout": "10",
		"mode":            "",

		"token_ttl":                  "0",
		"single_use_tokens":          "false",
		"header_timeout":             "10",
		"max_header_size":            "16384",
		"max_message_size":           "1048576",
		"max_sessions":               "100000",
		"max_sessions_per_container": "100",
		"auth_failure_limit":         "20",
		"auth_failure_window":        "60",

		"heartbeat":            "30",
		"idle_timeout":         "0",
		"max_session_duration": "0",
		"write_timeout":        "30",
		"shutdown_timeout":     "30",
	},
	"docker": {
		"docker_remote_api_version": "1.26",
		"docker_remote_api_host":    "$my_ip",
		"docker_remote_api_port":    "2375",
		"docker_remote_api_url":     "tcp://$docker_remote_api_host:$docker_remote_api_port",
		"api_insecure":              "false",
		"ca_file":                   "",
		"cert_file":                 "",
		"key_file":                  "",
		"api_url":                   "unix:///var/run/docker.sock",
	},
	"database":  {"connection": "", "max_pool_size": "5", "max_overflow": "50", "query_timeout": "5", "max_retries": "10"},
	"admin":     {"listen": "", "key_file": ""},
	"metrics":   {"listen": "", "profiling": "false"},
	"audit":     {"file": ""},
	"recording": {"dir": "", "input": "false"},
}

// Load reads files, then every *.conf file of each dir in name order, later
// values winning, as oslo.config's --config-file and --config-dir do; then
// applies defaults, interpolates and validates.
func Load(files, dirs []string) (*Config, error) {
	r := &reader{ini: ini{}}
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
// its default. my_ip's default is this host's address.
func (r *reader) lookup(section, name string) (entry, bool) {
	if e, ok := r.ini[section][name]; ok {
		return e, true
	}
	if v, ok := defaults[section][name]; ok {
		return entry{value: v}, true
	}
	if section == "DEFAULT" && name == "my_ip" {
		return entry{value: hostIP()}, true
	}
	return entry{}, false
}

// where names an option for error messages: "file: [section] option".
func where(e entry, section, name string) string {
	if e.file != "" {
		return fmt.Sprintf("%s: [%s] %s", e.file, section, name)
	}
	return fmt.Sprintf("[%s] %s", section, name)
}

// get returns an option's interpolated value. Errors are kept for
// config() to report; the first one wins.
func (r *reader) get(section, name string) (string, entry) {
	e, _ := r.lookup(section, name)
	v, err := r.interpolate(section, e.value, map[string]bool{section + "." + name: true})
	if err != nil && r.err == nil {
		r.err = fmt.Errorf("%s: %w", where(e, section, name), err)
	}
	return v, e
}

// interpolate expands $name and ${name} (an option of the same section, or
// of DEFAULT) and $$, as oslo.config does.
func (r *reader) interpolate(section, s string, seen map[string]bool) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
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
		var name string
		if i+1 < len(s) && s[i+1] == '{' {
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated ${ in %q", s)
			}
			name = s[i+2 : i+2+end]
			i += 2 + end
		} else {
			j := i + 1
			for j < len(s) && (s[j] == '_' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			if j == i+1 {
				return "", fmt.Errorf("'$' not followed by an option name in %q (write $$ for a literal $)", s)
			}
			name = s[i+1 : j]
			i = j - 1
		}
		sec := section
		e, ok := r.lookup(sec, name)
		if !ok {
			sec = "DEFAULT"
			e, ok = r.lookup(sec, name)
		}
		if !ok {
			return "", fmt.Errorf("unknown option $%s in %q", name, s)
		}
		key := sec + "." + name
		if seen[key] {
			return "", fmt.Errorf("interpolation loop through $%s", name)
		}
		seen[key] = true
		v, err := r.interpolate(sec, e.value, seen)
		delete(seen, key)
		if err != nil {
			return "", err
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

func (r *reader) bool(section, name string) bool {
	v, e := r.get(section, name)
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on":
		return true
	case "false", "0", "no", "off":
		return false
	}
	r.fail(e, section, name, fmt.Errorf("invalid boolean %q (want true or false)", v))
	return false
}

func (r *reader) int(section, name string, lo, hi int) int {
	v, e := r.get(section, name)
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		r.fail(e, section, name, fmt.Errorf("invalid integer %q (want %d-%d)", v, lo, hi))
	}
	return n
}

func (r *reader) port(section, name string) int {
	v, e := r.get(section, name)
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 65535 {
		r.fail(e, section, name, fmt.Errorf("invalid port %q (want 0-65535)", v))
	}
	return n
}

func (r *reader) seconds(section, name string) time.Duration {
	v, e := r.get(section, name)
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 || math.IsInf(f, 0) || f > 86400*365 {
		r.fail(e, section, name, fmt.Errorf("invalid number of seconds %q (want a positive number)", v))
		return 0
	}
	return time.Duration(f * float64(time.Second))
}

// optionalSeconds is seconds where 0 means off.
func (r *reader) optionalSeconds(section, name string) time.Duration {
	if v, _ := r.get(section, name); v == "0" {
		return 0
	}
	return r.seconds(section, name)
}

// value is get without the entry.
func (r *reader) value(section, name string) string {
	v, _ := r.get(section, name)
	return v
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

func (r *reader) config() (*Config, error) {
	c := &Config{Files: r.files}
	c.MyIP, _ = r.get("DEFAULT", "my_ip")
	c.Debug = r.bool("DEFAULT", "debug")
	var formatEntry entry
	c.LogFormat, formatEntry = r.get("DEFAULT", "log_format")
	if c.LogFormat != "text" && c.LogFormat != "json" {
		r.fail(formatEntry, "DEFAULT", "log_format", fmt.Errorf("invalid format %q (want text or json)", c.LogFormat))
	}
	var metricsEntry entry
	c.MetricsListen, metricsEntry = r.get("metrics", "listen")
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			r.fail(metricsEntry, "metrics", "listen", fmt.Errorf("invalid address %q (want host:port)", c.MetricsListen))
		}
	}
	c.Profiling = r.bool("metrics", "profiling")
	if c.Profiling && c.MetricsListen == "" {
		e, _ := r.lookup("metrics", "profiling")
		r.fail(e, "metrics", "profiling", errors.New("needs [metrics] listen"))
	}
	c.AuditFile, _ = r.get("audit", "file")
	c.RecordingDir, _ = r.get("recording", "dir")
	c.RecordInput = r.bool("recording", "input")
	c.LogFile = logFilePath(r.value("DEFAULT", "log_file"), r.value("DEFAULT", "log_dir"))

	const wp = "websocket_proxy"
	p := &c.Proxy
	p.Host, _ = r.get(wp, "wsproxy_host")
	p.Port = r.port(wp, "wsproxy_port")
	var baseEntry entry
	p.BaseURL, baseEntry = r.get(wp, "base_url")
	if u, err := url.Parse(p.BaseURL); err != nil || u.Host == "" ||
		(u.Scheme != "ws" && u.Scheme != "wss" && u.Scheme != "http" && u.Scheme != "https") {
		r.fail(baseEntry, wp, "base_url", fmt.Errorf("invalid URL %q (want ws://, wss://, http:// or https://host/)", p.BaseURL))
	}
	origins, _ := r.get(wp, "allowed_origins")
	for _, o := range strings.Split(origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			p.AllowedOrigins = append(p.AllowedOrigins, o)
		}
	}
	p.SSLOnly = r.bool(wp, "ssl_only")
	var engineEntry entry
	p.Engine, engineEntry = r.get(wp, "engine")
	if p.Engine != "goroutines" && p.Engine != "loop" {
		r.fail(engineEntry, wp, "engine", fmt.Errorf("invalid engine %q (want goroutines or loop)", p.Engine))
	}
	p.BackendTimeout = r.seconds(wp, "backend_timeout")
	p.TokenTTL = time.Duration(r.int(wp, "token_ttl", 0, 86400*365)) * time.Second
	p.SingleUseTokens = r.bool(wp, "single_use_tokens")
	p.HeaderTimeout = r.seconds(wp, "header_timeout")
	p.MaxHeaderBytes = r.int(wp, "max_header_size", 1024, 1<<20)
	p.MaxMessageBytes = int64(r.int(wp, "max_message_size", 0, 1<<30))
	p.MaxSessions = r.int(wp, "max_sessions", 0, 10_000_000)
	p.MaxSessionsPerContainer = r.int(wp, "max_sessions_per_container", 0, 10_000_000)
	p.AuthFailureLimit = r.int(wp, "auth_failure_limit", 0, 1_000_000)
	p.AuthFailureWindow = r.seconds(wp, "auth_failure_window")
	p.Heartbeat = r.optionalSeconds(wp, "heartbeat")
	p.IdleTimeout = r.optionalSeconds(wp, "idle_timeout")
	p.MaxSessionDuration = r.optionalSeconds(wp, "max_session_duration")
	p.WriteTimeout = r.optionalSeconds(wp, "write_timeout")
	p.ShutdownTimeout = r.optionalSeconds(wp, "shutdown_timeout")
	r.listenerTLS(p)

	const dk = "docker"
	d := &c.Docker
	d.APIVersion, _ = r.get(dk, "docker_remote_api_version")
	d.APIHost, _ = r.get(dk, "docker_remote_api_host")
	d.APIPort = r.port(dk, "docker_remote_api_port")
	d.APIURL, _ = r.get(dk, "docker_remote_api_url")
	d.APIInsecure = r.bool(dk, "api_insecure")
	var epEntry entry
	d.Endpoint, epEntry = r.get(dk, "api_url")
	if u, err := url.Parse(d.Endpoint); err != nil || (u.Scheme != "unix" && u.Scheme != "tcp" && u.Scheme != "http" && u.Scheme != "https") {
		r.fail(epEntry, dk, "api_url", fmt.Errorf("invalid Docker URL %q (want unix://, tcp://, http:// or https://)", d.Endpoint))
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"ca_file", &d.CAFile}, {"cert_file", &d.CertFile}, {"key_file", &d.KeyFile}} {
		var e entry
		*f.dst, e = r.get(dk, f.name)
		if *f.dst != "" {
			if _, err := os.ReadFile(*f.dst); err != nil {
				r.fail(e, dk, f.name, fmt.Errorf("unreadable: %w", unwrapPath(err)))
			}
		}
	}

	const db = "database"
	var connEntry entry
	c.Database.Connection, connEntry = r.get(db, "connection")
	if c.Database.Connection != "" {
		dsn, err := MySQLDSN(c.Database.Connection)
		if err != nil {
			r.fail(connEntry, db, "connection", err)
		}
		c.Database.DSN = dsn
	}
	pool := r.int(db, "max_pool_size", 1, 10000)
	overflow := r.int(db, "max_overflow", 0, 100000)
	c.Database.MaxOpen, c.Database.MaxIdle = pool+overflow, pool
	c.Database.QueryTimeout = r.seconds(db, "query_timeout")
	// oslo.db's start-up retries (Kolla sets -1, forever). Zun mode opens no
	// connection at start-up, so there is nothing to retry; the value is
	// still checked as oslo.db checks it.
	r.int(db, "max_retries", -1, math.MaxInt32)

	mode, modeEntry := r.get(wp, "mode")
	switch mode {
	case "":
		c.Mode = "standalone"
		if c.Database.Connection != "" {
			c.Mode = "zun"
		}
	case "zun", "standalone":
		c.Mode = mode
	default:
		r.fail(modeEntry, wp, "mode", fmt.Errorf("invalid mode %q (want zun or standalone)", mode))
	}
	if c.Mode == "zun" && c.Database.Connection == "" {
		r.fail(modeEntry, wp, "mode", errors.New("zun needs [database] connection"))
	}

	var listenEntry, keyEntry entry
	c.Admin.Listen, listenEntry = r.get("admin", "listen")
	c.Admin.KeyFile, keyEntry = r.get("admin", "key_file")
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			r.fail(listenEntry, "admin", "listen", fmt.Errorf("invalid address %q (want host:port)", c.Admin.Listen))
		}
		if c.Admin.KeyFile == "" {
			r.fail(entry{file: listenEntry.file}, "admin", "key_file", errors.New("required when [admin] listen is set"))
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
	cert, certEntry := r.get(wp, "cert")
	key, keyEntry := r.get(wp, "key")
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
	if p.SSLOnly && cert == "" {
		e, _ := r.lookup(wp, "ssl_only")
		r.fail(e, wp, "ssl_only", errors.New("true, but no certificate is configured (cert)"))
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

// MySQLDSN converts an SQLAlchemy MySQL/MariaDB URL
// (mysql+pymysql://user:pass@host:port/db?charset=utf8) to a
// go-sql-driver/mysql DSN.
func MySQLDSN(sqlalchemyURL string) (string, error) {
	u, err := url.Parse(sqlalchemyURL)
	if err != nil {
		return "", fmt.Errorf("invalid URL: %w", redactURLError(err))
	}
	switch u.Scheme {
	case "mysql", "mysql+pymysql", "mysql+mysqldb", "mysql+mysqlconnector", "mariadb", "mariadb+pymysql", "mariadb+mysqldb":
	default:
		return "", fmt.Errorf("unsupported database %q (supported: mysql://, mysql+pymysql://, mysql+mysqldb://, mysql+mysqlconnector://, mariadb://)", u.Scheme)
	}
	// The driver's own formatter escapes what needs it (a password may
	// hold '@', ':' or '/').
	c := mysql.NewConfig()
	if u.User != nil {
		c.User = u.User.Username()
		c.Passwd, _ = u.User.Password()
	}
	q := u.Query()
	if sock := q.Get("unix_socket"); sock != "" {
		c.Net, c.Addr = "unix", sock
	} else {
		host, port := u.Hostname(), u.Port()
		if host == "" {
			host = "127.0.0.1"
		}
		if port == "" {
			port = "3306"
		}
		c.Net, c.Addr = "tcp", net.JoinHostPort(host, port)
	}
	c.DBName = strings.TrimPrefix(u.Path, "/")
	c.ParseTime = true
	cs := q.Get("charset")
	if cs != "" {
		c.Params = map[string]string{"charset": cs}
	}
	// One round trip per query instead of three (prepare, execute, close):
	// the driver quotes the arguments itself, which is safe with these
	// character sets (not with multi-byte ones such as big5 or sjis).
	switch strings.ToLower(cs) {
	case "", "utf8", "utf8mb3", "utf8mb4", "latin1", "ascii", "binary":
		c.InterpolateParams = true
	}
	return c.FormatDSN(), nil
}

// redactURLError keeps a password out of url.Parse's error text.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
