package config

// [database] connection is an SQLAlchemy URL. Zun's Python services hand
// its query to SQLAlchemy, which passes it on to the driver the scheme
// names (PyMySQL for mysql+pymysql://, mysqlclient for mysql:// and
// mysql+mysqldb://), so the proxy reads every option as that pair does:
// it connects exactly when, and as safely as, zun-api does. What the pair
// does differently from what an option reads is said in a warning; an
// option it does not know stops start-up.

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
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

// DatabaseURL is [database] connection (with connection_parameters)
// ready for go-sql-driver/mysql.
type DatabaseURL struct {
	DSN      string      // go-sql-driver/mysql DSN; names the registered TLS configuration
	TLS      DatabaseTLS // how the connection is secured
	Warnings []string    // where the driver does not do what an option reads
}

// TLSMode says whether connections to the database use TLS.
type TLSMode int

const (
	TLSOff       TLSMode = iota // plaintext
	TLSPreferred                // TLS when the server offers it (mysqlclient's ssl_mode=PREFERRED)
	TLSRequired                 // TLS or no connection
)

// DatabaseTLS is TLS to the database as the URL's driver would set it up.
type DatabaseTLS struct {
	Mode TLSMode
	// Verify checks the server's certificate chain against CAFile and
	// CAPath, or the system's CAs when both are empty.
	Verify         bool
	CheckHostname  bool   // checks the certificate names ServerName
	ServerName     string // the URL's host ("localhost" when it has none)
	CAFile, CAPath string
	// CertFile and KeyFile are the client certificate (KeyFile empty: the
	// key is in CertFile).
	CertFile, KeyFile string
	Ciphers           []uint16 // TLS 1.2 cipher suites; nil: Go's
}

// String sums up the protection, for the start-up log.
func (t DatabaseTLS) String() string {
	switch {
	case t.Mode == TLSOff:
		return "off"
	case t.Mode == TLSPreferred:
		return "preferred, not verified"
	case !t.Verify:
		return "required, not verified"
	case !t.CheckHostname:
		return "required, certificate verified, host name not checked"
	}
	return "required, certificate and host name verified"
}

// drivers maps URL schemes to the Python driver SQLAlchemy loads for them.
var drivers = map[string]string{
	"mysql": "mysqldb", "mysql+mysqldb": "mysqldb", "mariadb": "mysqldb", "mariadb+mysqldb": "mysqldb",
	"mysql+pymysql": "pymysql", "mariadb+pymysql": "pymysql",
	"mysql+mysqlconnector": "mysqlconnector",
}

// The query options each driver takes (with SQLAlchemy's own "plugin").
var (
	commonOptions  = []string{"charset", "unix_socket", "connect_timeout", "use_unicode", "plugin"}
	sslFileOptions = []string{"ssl_ca", "ssl_capath", "ssl_cert", "ssl_key", "ssl_cipher", "ssl_check_hostname"}
	driverOptions  = map[string][]string{
		"pymysql":        append(append([]string{"read_timeout", "write_timeout", "ssl_verify_cert", "ssl_verify_identity", "ssl_disabled", "ssl_key_password"}, commonOptions...), sslFileOptions...),
		"mysqldb":        append(append([]string{"read_timeout", "write_timeout", "ssl_mode"}, commonOptions...), sslFileOptions...),
		"mysqlconnector": commonOptions,
	}
)

// QueryError is a bad option in the URL's query or, when InParameters,
// in connection_parameters only.
type QueryError struct {
	Option       string
	InParameters bool
	Err          error
}

func (e *QueryError) Error() string { return e.Err.Error() }
func (e *QueryError) Unwrap() error { return e.Err }

// ParseDatabaseURL reads an SQLAlchemy MySQL/MariaDB URL
// (mysql+pymysql://user:pass@host:port/db?charset=utf8&ssl_ca=…) and
// oslo.db's connection_parameters (more query options, appended) as
// Zun's services would, registering the TLS configuration it needs with
// the driver. Errors never show the password.
func ParseDatabaseURL(connection string, parameters url.Values) (*DatabaseURL, error) {
	u, err := url.Parse(connection)
	if err != nil {
		return nil, fmt.Errorf("invalid URL: %w", redactURLError(err))
	}
	driver, ok := drivers[u.Scheme]
	if !ok {
		return nil, fmt.Errorf("unsupported database %q (supported: mysql://, mysql+pymysql://, mysql+mysqldb://, mysql+mysqlconnector://, mariadb://)", u.Scheme)
	}
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("invalid query: %w", err)
	}
	q := opts{driver: driver, values: map[string]string{}, fromParameters: map[string]bool{}}
	if err := q.collect(query, parameters); err != nil {
		return nil, err
	}

	// The driver's own formatter escapes what needs it (a password may
	// hold '@', ':' or '/').
	c := mysql.NewConfig()
	if u.User != nil {
		c.User = u.User.Username()
		c.Passwd, _ = u.User.Password()
	}
	host := u.Hostname()
	if sock, ok := q.get("unix_socket"); ok {
		// The driver's DSN cannot carry these in an address.
		if strings.ContainsAny(sock, "@()") {
			return nil, fmt.Errorf("unix_socket %q: a path with '@', '(' or ')' is not supported", sock)
		}
		c.Net, c.Addr = "unix", sock
	} else {
		h, port := host, u.Port()
		if strings.ContainsAny(h, "[]") {
			// net/url takes "mysql://]" for a host named "]".
			return nil, fmt.Errorf("invalid host %q in the URL", h)
		}
		if h == "" {
			h = "127.0.0.1"
		}
		if port == "" {
			port = "3306"
		}
		c.Net, c.Addr = "tcp", net.JoinHostPort(h, port)
	}
	c.DBName = strings.TrimPrefix(u.Path, "/")
	c.ParseTime = true
	cs, _ := q.get("charset")
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
	for _, t := range []struct {
		name string
		dst  *time.Duration
	}{{"connect_timeout", &c.Timeout}, {"read_timeout", &c.ReadTimeout}, {"write_timeout", &c.WriteTimeout}} {
		if v, ok := q.get(t.name); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 || n > 31536000 {
				return nil, q.fail(t.name, fmt.Errorf("%s: invalid number of seconds %q (want a positive integer)", t.name, v))
			}
			*t.dst = time.Duration(n) * time.Second
		}
	}

	if host == "" {
		host = "localhost" // PyMySQL's default, and the name it checks
	}
	d := &DatabaseURL{TLS: DatabaseTLS{ServerName: host}}
	switch driver {
	case "pymysql":
		err = q.pymysqlTLS(&d.TLS)
	case "mysqldb":
		err = q.mysqldbTLS(&d.TLS)
	}
	if err != nil {
		return nil, err
	}
	if d.TLS.Mode != TLSOff {
		tc, err := q.tlsConfig(d.TLS)
		if err != nil {
			return nil, err
		}
		c.TLSConfig = registerTLS(d.TLS, tc)
		c.AllowFallbackToPlaintext = d.TLS.Mode == TLSPreferred
		if !d.TLS.Verify {
			q.warn("TLS, but the server's certificate is not verified")
		}
	}
	d.DSN, d.Warnings = c.FormatDSN(), q.warnings
	return d, nil
}

// opts are the URL's query options as the driver gets them.
type opts struct {
	driver         string
	values         map[string]string
	fromParameters map[string]bool // options only connection_parameters sets
	warnings       []string
}

// collect checks the options' names and merges the URL's query with
// connection_parameters, dropping empty values as SQLAlchemy does.
func (q *opts) collect(query, parameters url.Values) error {
	known := map[string]bool{}
	for _, k := range driverOptions[q.driver] {
		known[k] = true
	}
	var keys []string
	for k := range query {
		keys = append(keys, k)
	}
	for k := range parameters {
		if _, ok := query[k]; !ok {
			keys = append(keys, k)
			q.fromParameters[k] = true
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		var vs []string
		for _, v := range append(query[k], parameters[k]...) {
			if v != "" {
				vs = append(vs, v)
			}
		}
		switch {
		case !known[k] && q.driver == "mysqlconnector" && strings.HasPrefix(k, "ssl_"):
			return q.fail(k, fmt.Errorf("option %q: TLS options are read for mysql+pymysql:// and mysql+mysqldb:// URLs only", k))
		case !known[k]:
			return q.fail(k, fmt.Errorf("unknown option %q", k))
		case k == "ssl_key_password":
			return q.fail(k, errors.New(`option "ssl_key_password": encrypted client keys are not supported (give the key unencrypted, readable only by the proxy)`))
		case len(vs) == 0:
			if strings.HasPrefix(k, "ssl_") {
				q.warn(fmt.Sprintf("%s is empty, so it is dropped (as SQLAlchemy drops it for zun-api too)", k))
			}
		case k == "plugin":
			// SQLAlchemy's engine plugins: nothing of the connection.
		case len(vs) > 1:
			return q.fail(k, fmt.Errorf("option %q given more than once", k))
		default:
			q.values[k] = vs[0]
		}
	}
	return nil
}

func (q *opts) get(k string) (string, bool) { v, ok := q.values[k]; return v, ok }
func (q *opts) has(k string) bool           { _, ok := q.values[k]; return ok }
func (q *opts) warn(s string)               { q.warnings = append(q.warnings, s) }
func (q *opts) fail(k string, err error) error {
	return &QueryError{Option: k, InParameters: q.fromParameters[k], Err: err}
}

// present lists which of keys are set, in the order given.
func (q *opts) present(keys ...string) []string {
	var out []string
	for _, k := range keys {
		if q.has(k) {
			out = append(out, k)
		}
	}
	return out
}

// sqlalchemyBool reads a boolean as SQLAlchemy's asbool does.
func sqlalchemyBool(v string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "yes", "on", "y", "t", "1":
		return true, true
	case "false", "no", "off", "n", "f", "0":
		return false, true
	}
	return false, false
}

// checkHostnameOption reads ssl_check_hostname, which SQLAlchemy converts
// to a boolean (failing on anything else) for either driver.
func (q *opts) checkHostnameOption() (value, set bool, err error) {
	v, ok := q.get("ssl_check_hostname")
	if !ok {
		return true, false, nil
	}
	b, valid := sqlalchemyBool(v)
	if !valid {
		return false, true, q.fail("ssl_check_hostname", fmt.Errorf("ssl_check_hostname: invalid boolean %q (want true or false)", v))
	}
	return b, true, nil
}

// The options SQLAlchemy gathers into the "ssl" argument of the driver.
var sslGroup = []string{"ssl_ca", "ssl_capath", "ssl_cert", "ssl_key", "ssl_cipher", "ssl_check_hostname"}

// pymysqlTLS applies PyMySQL's rules (1.0 to 1.1) to the options as
// SQLAlchemy hands them over: ssl_ca, ssl_capath, ssl_cert, ssl_key,
// ssl_cipher and ssl_check_hostname as an "ssl" group; ssl_verify_cert,
// ssl_verify_identity and ssl_disabled as text.
func (q *opts) pymysqlTLS(t *DatabaseTLS) error {
	checkHost, checkHostSet, err := q.checkHostnameOption()
	if err != nil {
		return err
	}
	group := q.present(sslGroup...)
	direct := q.present("ssl_verify_cert", "ssl_verify_identity")
	if v, ok := q.get("ssl_disabled"); ok {
		// Any text is true to PyMySQL, "false" too.
		if b, _ := sqlalchemyBool(v); !b {
			q.warn(fmt.Sprintf("ssl_disabled=%s turns TLS off all the same: PyMySQL takes any value as true (leave the option out to keep TLS)", v))
		}
		if others := append(group, direct...); len(others) > 0 {
			q.warn(fmt.Sprintf("TLS is off (ssl_disabled), so %s not used", listIs(others)))
		}
		return nil
	}
	switch {
	case len(direct) > 0:
		// PyMySQL builds its settings from ssl_verify_cert and
		// ssl_verify_identity and its own ssl_ca, ssl_cert and ssl_key
		// arguments, which SQLAlchemy left empty (it passed them in the
		// group, which PyMySQL then drops): no CA, so the system's, and
		// no host name check.
		t.Mode = TLSRequired
		if len(group) > 0 {
			q.warn(fmt.Sprintf("%s not used: with %s set, PyMySQL drops the options SQLAlchemy passes it as a group (leave %s out: ssl_ca alone verifies the certificate and the host name)",
				listIs(group), strings.Join(direct, " and "), strings.Join(direct, " and ")))
		}
		if q.has("ssl_verify_identity") {
			q.warn("ssl_verify_identity: PyMySQL checks the host name only against an ssl_ca, which it does not get along with this option; the host name is not checked")
		}
		if v, ok := q.get("ssl_verify_cert"); ok {
			switch strings.ToLower(v) {
			case "required", "optional", "1", "true", "yes":
				t.Verify = true
			case "none", "0", "false", "no":
			default:
				q.warn(fmt.Sprintf("ssl_verify_cert=%s is not a value PyMySQL knows (true or false): it does not verify", v))
			}
		}
	case len(group) > 0:
		t.Mode = TLSRequired
		t.CAFile, _ = q.get("ssl_ca")
		t.CAPath, _ = q.get("ssl_capath")
		hasCA := q.has("ssl_ca") || q.has("ssl_capath")
		t.Verify = hasCA
		t.CheckHostname = hasCA && checkHost
		if !hasCA && checkHostSet && checkHost {
			q.warn("ssl_check_hostname: PyMySQL checks the host name only against an ssl_ca or ssl_capath; the host name is not checked")
		}
		if err := q.clientCert(t); err != nil {
			return err
		}
		return q.ciphers(t)
	}
	return nil
}

// mysqldbTLS applies mysqlclient's rules: ssl_mode (MySQL's names) and the
// "ssl" group's files; mysqlclient has no ssl_check_hostname. Without
// ssl_mode, a CA means VERIFY_CA and other files PREFERRED, as in MySQL's
// client library; no option at all is plaintext, as with MariaDB's.
func (q *opts) mysqldbTLS(t *DatabaseTLS) error {
	if _, set, err := q.checkHostnameOption(); err != nil {
		return err
	} else if set {
		q.warn("ssl_check_hostname is not read by mysqlclient: write ssl_mode=VERIFY_IDENTITY to check the host name")
	}
	files := q.present("ssl_ca", "ssl_capath", "ssl_cert", "ssl_key", "ssl_cipher")
	hasCA := q.has("ssl_ca") || q.has("ssl_capath")
	mode, ok := q.get("ssl_mode")
	if !ok {
		switch {
		case hasCA:
			mode = "VERIFY_CA"
		case len(files) > 0:
			mode = "PREFERRED"
		default:
			return nil
		}
	}
	switch mode {
	case "DISABLED":
		if len(files) > 0 {
			q.warn(fmt.Sprintf("TLS is off (ssl_mode=DISABLED), so %s not used", listIs(files)))
		}
		return nil
	case "PREFERRED":
		t.Mode = TLSPreferred
	case "REQUIRED":
		t.Mode = TLSRequired
	case "VERIFY_CA", "VERIFY_IDENTITY":
		if !hasCA {
			return q.fail("ssl_mode", fmt.Errorf("ssl_mode=%s needs ssl_ca or ssl_capath", mode))
		}
		t.Mode, t.Verify, t.CheckHostname = TLSRequired, true, mode == "VERIFY_IDENTITY"
	default:
		return q.fail("ssl_mode", fmt.Errorf("ssl_mode: invalid value %q (want DISABLED, PREFERRED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY)", mode))
	}
	if hasCA && !t.Verify {
		q.warn(fmt.Sprintf("ssl_mode=%s does not verify the server's certificate, ssl_ca notwithstanding (write ssl_mode=VERIFY_IDENTITY)", mode))
	}
	t.CAFile, _ = q.get("ssl_ca")
	t.CAPath, _ = q.get("ssl_capath")
	if err := q.clientCert(t); err != nil {
		return err
	}
	return q.ciphers(t)
}

// clientCert takes ssl_cert and ssl_key: a key alone is not used.
func (q *opts) clientCert(t *DatabaseTLS) error {
	t.CertFile, _ = q.get("ssl_cert")
	t.KeyFile, _ = q.get("ssl_key")
	if t.CertFile == "" && t.KeyFile != "" {
		q.warn("ssl_key without ssl_cert is not used")
		t.KeyFile = ""
	}
	return nil
}

// ciphers maps ssl_cipher (OpenSSL names, ':'-separated) to Go's suites.
func (q *opts) ciphers(t *DatabaseTLS) error {
	v, ok := q.get("ssl_cipher")
	if !ok {
		return nil
	}
	ids := map[string]uint16{}
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		ids[s.Name] = s.ID
	}
	for _, name := range strings.FieldsFunc(v, func(r rune) bool { return r == ':' || r == ',' || r == ' ' }) {
		id, ok := ids[openSSLCiphers[name]]
		if !ok {
			return q.fail("ssl_cipher", fmt.Errorf("ssl_cipher: %q is not a TLS 1.2 cipher suite this proxy has (write OpenSSL names such as ECDHE-RSA-AES128-GCM-SHA256, separated by ':')", name))
		}
		t.Ciphers = append(t.Ciphers, id)
	}
	if len(t.Ciphers) == 0 {
		return q.fail("ssl_cipher", errors.New("ssl_cipher: no cipher suite named"))
	}
	return nil
}

// openSSLCiphers maps OpenSSL's names of the TLS 1.2 suites Go implements
// to their standard names. (TLS 1.3's suites are not chosen, in Go as
// with OpenSSL's set_ciphers.)
var openSSLCiphers = map[string]string{
	"ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-RSA-AES128-GCM-SHA256":   "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-RSA-AES256-GCM-SHA384":   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-RSA-CHACHA20-POLY1305":   "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-ECDSA-AES128-SHA256":     "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
	"ECDHE-RSA-AES128-SHA256":       "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
	"ECDHE-ECDSA-AES128-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
	"ECDHE-RSA-AES128-SHA":          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
	"ECDHE-ECDSA-AES256-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
	"ECDHE-RSA-AES256-SHA":          "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
	"AES128-GCM-SHA256":             "TLS_RSA_WITH_AES_128_GCM_SHA256",
	"AES256-GCM-SHA384":             "TLS_RSA_WITH_AES_256_GCM_SHA384",
	"AES128-SHA256":                 "TLS_RSA_WITH_AES_128_CBC_SHA256",
	"AES128-SHA":                    "TLS_RSA_WITH_AES_128_CBC_SHA",
	"AES256-SHA":                    "TLS_RSA_WITH_AES_256_CBC_SHA",
}

// tlsConfig loads t's files into a TLS client configuration.
func (q *opts) tlsConfig(t DatabaseTLS) (*tls.Config, error) {
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		ServerName:   t.ServerName,
		CipherSuites: t.Ciphers,
		// Go's own check needs the host name; verifyPeer below checks as
		// the Python driver does, the chain without or with the name.
		InsecureSkipVerify: true,
	}
	if t.CertFile != "" {
		key := t.KeyFile
		if key == "" {
			key = t.CertFile // PyMySQL and mysqlclient look for the key in the certificate file
		}
		pair, err := tls.LoadX509KeyPair(t.CertFile, key)
		if err != nil {
			return nil, q.fail("ssl_cert", fmt.Errorf("ssl_cert: cannot load the client certificate and key: %w", unwrapPath(err)))
		}
		c.Certificates = []tls.Certificate{pair}
	}
	if !t.Verify {
		return c, nil
	}
	var roots *x509.CertPool // nil: the system's
	if t.CAFile != "" || t.CAPath != "" {
		roots = x509.NewCertPool()
		if t.CAFile != "" {
			pem, err := os.ReadFile(t.CAFile)
			if err != nil {
				return nil, q.fail("ssl_ca", fmt.Errorf("ssl_ca: unreadable: %w", unwrapPath(err)))
			}
			if !roots.AppendCertsFromPEM(pem) {
				return nil, q.fail("ssl_ca", fmt.Errorf("ssl_ca: no PEM certificate in %s", t.CAFile))
			}
		}
		if t.CAPath != "" {
			if err := appendCADir(roots, t.CAPath); err != nil {
				return nil, q.fail("ssl_capath", fmt.Errorf("ssl_capath: %w", err))
			}
		}
	}
	name := ""
	if t.CheckHostname {
		name = t.ServerName
	}
	c.VerifyConnection = verifyPeer(roots, name)
	return c, nil
}

// appendCADir adds the PEM certificates of every file in dir (as
// OpenSSL's CA directories hold them) to pool.
func appendCADir(pool *x509.CertPool, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return unwrapPath(err)
	}
	found := false
	for _, e := range entries {
		if pem, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil && pool.AppendCertsFromPEM(pem) {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("no PEM certificate in %s", dir)
	}
	return nil
}

// verifyPeer checks the server's chain against roots and, unless name is
// empty, that the certificate names it.
func verifyPeer(roots *x509.CertPool, name string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the database server sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name})
		if err != nil {
			return fmt.Errorf("database server certificate: %w", err)
		}
		return nil
	}
}

// registerTLS registers c with the driver under a name made from t, so
// that reading the same configuration again reuses the name.
func registerTLS(t DatabaseTLS, c *tls.Config) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%#v", t))
	name := "zun-wsproxy-" + hex.EncodeToString(sum[:8])
	mysql.RegisterTLSConfig(name, c) // fails only on the driver's reserved names
	return name
}

// listIs joins option names for a sentence: "ssl_ca is", "ssl_ca and
// ssl_cert are".
func listIs(names []string) string {
	if len(names) == 1 {
		return names[0] + " is"
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1] + " are"
}

// redactURLError keeps a password out of url.Parse's error text.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
