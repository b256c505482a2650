package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// tlsFiles are a CA and a client certificate, as the URLs of the tests
// name them: {ca}, {cadir}, {cert}, {key}, {both} (certificate and key in
// one file).
type tlsFiles struct {
	ca          *testenv.CA
	replace     *strings.Replacer
	dir, single string
}

func newTLSFiles(t *testing.T) *tlsFiles {
	ca := testenv.NewCA(t)
	cert, key := ca.Issue(t, "zun", x509.ExtKeyUsageClientAuth)
	dir := t.TempDir()
	both := filepath.Join(dir, "both.pem")
	c, _ := os.ReadFile(cert)
	k, _ := os.ReadFile(key)
	if err := os.WriteFile(both, append(c, k...), 0o600); err != nil {
		t.Fatal(err)
	}
	caDir := t.TempDir()
	pem, _ := os.ReadFile(ca.File)
	os.WriteFile(filepath.Join(caDir, "ca.pem"), pem, 0o600)
	os.WriteFile(filepath.Join(caDir, "README"), []byte("not a certificate\n"), 0o600)
	return &tlsFiles{ca: ca, dir: caDir, single: both, replace: strings.NewReplacer(
		"{ca}", ca.File, "{cadir}", caDir, "{cert}", cert, "{key}", key, "{both}", both)}
}

func (f *tlsFiles) tls(t DatabaseTLS) DatabaseTLS {
	for _, s := range []*string{&t.CAFile, &t.CAPath, &t.CertFile, &t.KeyFile} {
		*s = f.replace.Replace(*s)
	}
	return t
}

// registeredName stands for the TLS configuration's name in the DSNs.
var registeredName = regexp.MustCompile(`tls=zun-wsproxy-[0-9a-f]{16}`)

func TestParseDatabaseURL(t *testing.T) {
	f := newTLSFiles(t)
	verified := func(host string) DatabaseTLS {
		return DatabaseTLS{Mode: TLSRequired, Verify: true, CheckHostname: true, ServerName: host, CAFile: "{ca}"}
	}
	cases := []struct {
		name, url, params string
		dsn               string // "tls=TLS" stands for the registered name
		tls               DatabaseTLS
		warnings          []string // one substring per warning
		err               string
	}{
		// Addresses, credentials and the options that are not TLS.
		{name: "charset", url: "mysql+pymysql://zun:secret@127.0.0.1/zun?charset=utf8",
			dsn: "zun:secret@tcp(127.0.0.1:3306)/zun?interpolateParams=true&parseTime=true&charset=utf8", tls: DatabaseTLS{ServerName: "127.0.0.1"}},
		{name: "port", url: "mysql://zun:secret@db:3307/zun",
			dsn: "zun:secret@tcp(db:3307)/zun?interpolateParams=true&parseTime=true", tls: DatabaseTLS{ServerName: "db"}},
		{name: "IPv6", url: "mysql+mysqldb://zun@[::1]/zun",
			dsn: "zun@tcp([::1]:3306)/zun?interpolateParams=true&parseTime=true", tls: DatabaseTLS{ServerName: "::1"}},
		{name: "escaped password", url: "mariadb://u:p%2Fa%3Ab%40c@h/d",
			dsn: "u:p/a:b@c@tcp(h:3306)/d?interpolateParams=true&parseTime=true", tls: DatabaseTLS{ServerName: "h"}},
		{name: "socket and timeouts", url: "mysql+pymysql://zun:pw@/zun?unix_socket=/run/mysqld/mysqld.sock&read_timeout=5&write_timeout=6&connect_timeout=7",
			dsn: "zun:pw@unix(/run/mysqld/mysqld.sock)/zun?interpolateParams=true&parseTime=true&readTimeout=5s&timeout=7s&writeTimeout=6s", tls: DatabaseTLS{ServerName: "localhost"}},
		{name: "multi-byte charset", url: "mysql://zun:pw@db/zun?charset=sjis",
			dsn: "zun:pw@tcp(db:3306)/zun?parseTime=true&charset=sjis", tls: DatabaseTLS{ServerName: "db"}},
		{name: "harmless options", url: "mysql+pymysql://zun:pw@db/zun?charset=utf8&use_unicode=1&plugin=dbcounter&plugin=other",
			dsn: "zun:pw@tcp(db:3306)/zun?interpolateParams=true&parseTime=true&charset=utf8", tls: DatabaseTLS{ServerName: "db"}},
		{name: "connection_parameters", url: "mysql+pymysql://zun:pw@db/zun", params: "charset=utf8",
			dsn: "zun:pw@tcp(db:3306)/zun?interpolateParams=true&parseTime=true&charset=utf8", tls: DatabaseTLS{ServerName: "db"}},

		// PyMySQL: the options SQLAlchemy groups as "ssl".
		{name: "ssl_ca verifies chain and name", url: "mysql+pymysql://zun:pw@db.example.org/zun?charset=utf8&ssl_ca={ca}",
			dsn: "zun:pw@tcp(db.example.org:3306)/zun?interpolateParams=true&parseTime=true&tls=TLS&charset=utf8", tls: verified("db.example.org")},
		{name: "ssl_ca from connection_parameters", url: "mysql+pymysql://zun:pw@db/zun", params: "ssl_ca={ca}",
			dsn: "zun:pw@tcp(db:3306)/zun?interpolateParams=true&parseTime=true&tls=TLS", tls: verified("db")},
		{name: "ssl_check_hostname=false", url: "mysql+pymysql://zun:pw@10.0.0.5/zun?ssl_ca={ca}&ssl_check_hostname=false",
			tls: DatabaseTLS{Mode: TLSRequired, Verify: true, ServerName: "10.0.0.5", CAFile: "{ca}"}},
		{name: "ssl_check_hostname=No", url: "mysql+pymysql://zun:pw@db/zun?ssl_ca={ca}&ssl_check_hostname=No",
			tls: DatabaseTLS{Mode: TLSRequired, Verify: true, ServerName: "db", CAFile: "{ca}"}},
		{name: "ssl_capath", url: "mysql+pymysql://zun:pw@db/zun?ssl_capath={cadir}",
			tls: DatabaseTLS{Mode: TLSRequired, Verify: true, CheckHostname: true, ServerName: "db", CAPath: "{cadir}"}},
		{name: "client certificate", url: "mysql+pymysql://zun:pw@db/zun?ssl_ca={ca}&ssl_cert={cert}&ssl_key={key}",
			tls: DatabaseTLS{Mode: TLSRequired, Verify: true, CheckHostname: true, ServerName: "db", CAFile: "{ca}", CertFile: "{cert}", KeyFile: "{key}"}},
		{name: "key in the certificate file", url: "mysql+pymysql://zun:pw@db/zun?ssl_ca={ca}&ssl_cert={both}",
			tls: DatabaseTLS{Mode: TLSRequired, Verify: true, CheckHostname: true, ServerName: "db", CAFile: "{ca}", CertFile: "{both}"}},
		{name: "client certificate without CA", url: "mysql+pymysql://zun:pw@db/zun?ssl_cert={cert}&ssl_key={key}",
			tls:      DatabaseTLS{Mode: TLSRequired, ServerName: "db", CertFile: "{cert}", KeyFile: "{key}"},
			warnings: []string{"not verified"}},
		{name: "ciphers", url: "mysql+pymysql://zun:pw@db/zun?ssl_ca={ca}&ssl_cipher=ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
			tls: DatabaseTLS{Mode: TLSRequired, Verify: true, CheckHostname: true, ServerName: "db", CAFile: "{ca}",
				Ciphers: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}}},
		{name: "key alone", url: "mysql+pymysql://zun:pw@db/zun?ssl_ca={ca}&ssl_key={key}",
			tls: verified("db"), warnings: []string{"ssl_key without ssl_cert is not used"}},
		{name: "check_hostname without CA", url: "mysql+pymysql://zun:pw@db/zun?ssl_check_hostname=true",
			tls:      DatabaseTLS{Mode: TLSRequired, ServerName: "db"},
			warnings: []string{"host name is not checked", "not verified"}},

		// PyMySQL: the options it takes as text.
		{name: "ssl_verify_cert=true", url: "mysql+pymysql://zun:pw@db/zun?ssl_verify_cert=true",
			tls: DatabaseTLS{Mode: TLSRequired, Verify: true, ServerName: "db"}},
		{name: "ssl_verify_cert=optional", url: "mysql+pymysql://zun:pw@db/zun?ssl_verify_cert=optional",
			tls: DatabaseTLS{Mode: TLSRequired, Verify: true, ServerName: "db"}},
		{name: "ssl_verify_cert=false", url: "mysql+pymysql://zun:pw@db/zun?ssl_verify_cert=false",
			tls: DatabaseTLS{Mode: TLSRequired, ServerName: "db"}, warnings: []string{"not verified"}},
		{name: "ssl_verify_cert=on", url: "mysql+pymysql://zun:pw@db/zun?ssl_verify_cert=on",
			tls: DatabaseTLS{Mode: TLSRequired, ServerName: "db"}, warnings: []string{"not a value PyMySQL knows", "not verified"}},
		{name: "ssl_verify_identity", url: "mysql+pymysql://zun:pw@db/zun?ssl_verify_cert=true&ssl_verify_identity=true",
			tls: DatabaseTLS{Mode: TLSRequired, Verify: true, ServerName: "db"}, warnings: []string{"host name is not checked"}},
		{name: "ssl_verify_cert drops ssl_ca", url: "mysql+pymysql://zun:pw@db/zun?ssl_ca={ca}&ssl_cert={cert}&ssl_verify_cert=true",
			tls:      DatabaseTLS{Mode: TLSRequired, Verify: true, ServerName: "db"},
			warnings: []string{"ssl_ca and ssl_cert are not used: with ssl_verify_cert set, PyMySQL drops"}},
		{name: "ssl_disabled", url: "mysql+pymysql://zun:pw@db/zun?ssl_disabled=true",
			dsn: "zun:pw@tcp(db:3306)/zun?interpolateParams=true&parseTime=true", tls: DatabaseTLS{ServerName: "db"}},
		{name: "ssl_disabled=false", url: "mysql+pymysql://zun:pw@db/zun?ssl_disabled=false&ssl_ca={ca}",
			tls: DatabaseTLS{ServerName: "db"}, warnings: []string{"ssl_disabled=false turns TLS off all the same", "ssl_ca is not used"}},
		{name: "empty ssl_ca", url: "mysql+pymysql://zun:pw@db/zun?ssl_ca=",
			dsn: "zun:pw@tcp(db:3306)/zun?interpolateParams=true&parseTime=true", tls: DatabaseTLS{ServerName: "db"},
			warnings: []string{"ssl_ca is empty, so it is dropped"}},

		// mysqlclient.
		{name: "mysqlclient VERIFY_IDENTITY", url: "mysql://zun:pw@db/zun?ssl_mode=VERIFY_IDENTITY&ssl_ca={ca}", tls: verified("db")},
		{name: "mysqlclient VERIFY_CA", url: "mysql+mysqldb://zun:pw@db/zun?ssl_mode=VERIFY_CA&ssl_ca={ca}",
			tls: DatabaseTLS{Mode: TLSRequired, Verify: true, ServerName: "db", CAFile: "{ca}"}},
		{name: "mysqlclient CA alone", url: "mysql://zun:pw@db/zun?ssl_ca={ca}",
			tls: DatabaseTLS{Mode: TLSRequired, Verify: true, ServerName: "db", CAFile: "{ca}"}},
		{name: "mysqlclient REQUIRED", url: "mysql://zun:pw@db/zun?ssl_mode=REQUIRED",
			tls: DatabaseTLS{Mode: TLSRequired, ServerName: "db"}, warnings: []string{"not verified"}},
		{name: "mysqlclient PREFERRED", url: "mysql://zun:pw@db/zun?ssl_mode=PREFERRED",
			dsn: "zun:pw@tcp(db:3306)/zun?allowFallbackToPlaintext=true&interpolateParams=true&parseTime=true&tls=TLS",
			tls: DatabaseTLS{Mode: TLSPreferred, ServerName: "db"}, warnings: []string{"not verified"}},
		{name: "mysqlclient certificate alone", url: "mysql://zun:pw@db/zun?ssl_cert={cert}&ssl_key={key}",
			tls: DatabaseTLS{Mode: TLSPreferred, ServerName: "db", CertFile: "{cert}", KeyFile: "{key}"}, warnings: []string{"not verified"}},
		{name: "mysqlclient DISABLED", url: "mysql://zun:pw@db/zun?ssl_mode=DISABLED&ssl_ca={ca}",
			tls: DatabaseTLS{ServerName: "db"}, warnings: []string{"ssl_ca is not used"}},
		{name: "mysqlclient check_hostname", url: "mysql://zun:pw@db/zun?ssl_ca={ca}&ssl_check_hostname=true",
			tls:      DatabaseTLS{Mode: TLSRequired, Verify: true, ServerName: "db", CAFile: "{ca}"},
			warnings: []string{"ssl_check_hostname is not read by mysqlclient"}},
		{name: "mysqlclient REQUIRED with CA", url: "mysql://zun:pw@db/zun?ssl_mode=REQUIRED&ssl_ca={ca}",
			tls: DatabaseTLS{Mode: TLSRequired, ServerName: "db", CAFile: "{ca}"}, warnings: []string{"ssl_ca notwithstanding", "not verified"}},
		{name: "mysqlclient DISABLED alone", url: "mysql://zun:pw@db/zun?ssl_mode=DISABLED",
			dsn: "zun:pw@tcp(db:3306)/zun?interpolateParams=true&parseTime=true", tls: DatabaseTLS{ServerName: "db"}},
		{name: "mysqlclient ciphers", url: "mysql://zun:pw@db/zun?ssl_mode=VERIFY_CA&ssl_ca={ca}&ssl_cipher=ECDHE-RSA-AES256-GCM-SHA384",
			tls: DatabaseTLS{Mode: TLSRequired, Verify: true, ServerName: "db", CAFile: "{ca}", Ciphers: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}}},
		{name: "a year of timeout", url: "mysql+pymysql://zun:pw@db/zun?read_timeout=31536000&write_timeout=1",
			dsn: "zun:pw@tcp(db:3306)/zun?interpolateParams=true&parseTime=true&readTimeout=8760h0m0s&writeTimeout=1s", tls: DatabaseTLS{ServerName: "db"}},

		// Refused.
		{name: "unknown option", url: "mysql+pymysql://zun:pw@db/zun?charset=utf8&foo=1", err: `unknown option "foo"`},
		{name: "unknown empty option", url: "mysql+pymysql://zun:pw@db/zun?foo=", err: `unknown option "foo"`},
		{name: "unknown in parameters", url: "mysql+pymysql://zun:pw@db/zun", params: "init_command=SET x=1", err: `unknown option "init_command"`},
		{name: "read_default_file", url: "mysql+pymysql://zun:pw@db/zun?read_default_file=/etc/my.cnf", err: `unknown option "read_default_file"`},
		{name: "pymysql has no ssl_mode", url: "mysql+pymysql://zun:pw@db/zun?ssl_mode=REQUIRED", err: `unknown option "ssl_mode"`},
		{name: "mysqlclient has no ssl_verify_cert", url: "mysql://zun:pw@db/zun?ssl_verify_cert=true", err: `unknown option "ssl_verify_cert"`},
		{name: "mysqlconnector TLS", url: "mysql+mysqlconnector://zun:pw@db/zun?ssl_ca={ca}", err: "TLS options are read for mysql+pymysql:// and mysql+mysqldb:// URLs only"},
		{name: "twice", url: "mysql+pymysql://zun:pw@db/zun?ssl_ca={ca}&ssl_ca={ca}", err: `option "ssl_ca" given more than once`},
		{name: "twice across", url: "mysql+pymysql://zun:pw@db/zun?charset=utf8", params: "charset=latin1", err: `option "charset" given more than once`},
		{name: "key password", url: "mysql+pymysql://zun:pw@db/zun?ssl_key_password=pw", err: "encrypted client keys are not supported"},
		{name: "bad boolean", url: "mysql+pymysql://zun:pw@db/zun?ssl_ca={ca}&ssl_check_hostname=maybe", err: `ssl_check_hostname: invalid boolean "maybe"`},
		{name: "bad timeout", url: "mysql+pymysql://zun:pw@db/zun?connect_timeout=0", err: `connect_timeout: invalid number of seconds "0"`},
		{name: "timeout over a year", url: "mysql+pymysql://zun:pw@db/zun?write_timeout=31536001", err: `write_timeout: invalid number of seconds "31536001"`},
		{name: "fractional timeout", url: "mysql+pymysql://zun:pw@db/zun?read_timeout=2.5", err: `read_timeout: invalid number of seconds "2.5"`},
		{name: "missing CA", url: "mysql+pymysql://zun:pw@db/zun?ssl_ca=/nonexistent/ca.pem", err: "ssl_ca: unreadable: /nonexistent/ca.pem: no such file or directory"},
		{name: "CA not PEM", url: "mysql+pymysql://zun:pw@db/zun?ssl_ca=" + os.DevNull, err: "ssl_ca: no PEM certificate in /dev/null"},
		{name: "CA directory without certificates", url: "mysql+pymysql://zun:pw@db/zun?ssl_capath=/nonexistent", err: "ssl_capath: /nonexistent: no such file or directory"},
		{name: "certificate without key", url: "mysql+pymysql://zun:pw@db/zun?ssl_cert={ca}", err: "ssl_cert: cannot load the client certificate and key"},
		{name: "cipher keyword", url: "mysql+pymysql://zun:pw@db/zun?ssl_cipher=HIGH:!aNULL", err: `ssl_cipher: "HIGH" is not a TLS 1.2 cipher suite`},
		{name: "mode case", url: "mysql://zun:pw@db/zun?ssl_mode=required", err: `ssl_mode: invalid value "required"`},
		{name: "VERIFY_CA without CA", url: "mysql://zun:pw@db/zun?ssl_mode=VERIFY_CA", err: "ssl_mode=VERIFY_CA needs ssl_ca or ssl_capath"},
		{name: "postgres", url: "postgresql://zun@db/zun", err: `unsupported database "postgresql"`},
		{name: "sqlite", url: "sqlite:///x.db", err: "unsupported database"},
		{name: "bad port", url: "mysql://zun:pw@db:notaport/zun", err: "invalid URL"},
		{name: "bracket for a host", url: "mysql://]", err: `invalid host "]" in the URL`},
		{name: "bracket after a host", url: "mysql://zun:pw@db]:3306/zun", err: `invalid host "db]" in the URL`},
		{name: "bad query", url: "mysql://zun:pw@db/zun?a=%zz", err: "invalid query"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			params, err := url.ParseQuery(f.replace.Replace(c.params))
			if err != nil {
				t.Fatal(err)
			}
			d, err := ParseDatabaseURL(f.replace.Replace(c.url), params)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %v, want error %q", err, c.err)
				}
				if strings.Contains(err.Error(), "pw") {
					t.Fatalf("the error shows the password: %v", err)
				}
				var qe *QueryError
				if errors.As(err, &qe) && qe.InParameters != (c.params != "" && !strings.Contains(c.url, qe.Option)) {
					t.Fatalf("error placed in connection_parameters: %v, want %v", qe.InParameters, !qe.InParameters)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := f.tls(c.tls); !reflect.DeepEqual(d.TLS, want) {
				t.Errorf("TLS\n got %+v\nwant %+v", d.TLS, want)
			}
			if dsn := registeredName.ReplaceAllString(d.DSN, "tls=TLS"); c.dsn != "" && dsn != c.dsn {
				t.Errorf("DSN %q, want %q", dsn, c.dsn)
			}
			if len(d.Warnings) != len(c.warnings) {
				t.Fatalf("warnings %q, want %d like %q", d.Warnings, len(c.warnings), c.warnings)
			}
			for i, w := range c.warnings {
				if !strings.Contains(d.Warnings[i], w) {
					t.Errorf("warning %q, want %q", d.Warnings[i], w)
				}
			}
			checkRegistered(t, d)
		})
	}
}

// checkRegistered checks the TLS configuration the driver gets from the
// DSN, as the stores open it.
func checkRegistered(t *testing.T, d *DatabaseURL) {
	t.Helper()
	cfg, err := mysql.ParseDSN(d.DSN)
	if err != nil {
		t.Fatalf("the DSN does not parse: %v", err)
	}
	if d.TLS.Mode == TLSOff {
		if cfg.TLS != nil || cfg.TLSConfig != "" {
			t.Fatalf("TLS configured: %q", cfg.TLSConfig)
		}
		return
	}
	tc := cfg.TLS
	if tc == nil {
		t.Fatalf("no TLS configuration registered as %q", cfg.TLSConfig)
	}
	if tc.MinVersion != tls.VersionTLS12 || tc.ServerName != d.TLS.ServerName || !reflect.DeepEqual(tc.CipherSuites, d.TLS.Ciphers) {
		t.Errorf("TLS configuration: min version %x, server name %q, ciphers %v", tc.MinVersion, tc.ServerName, tc.CipherSuites)
	}
	if (tc.VerifyConnection != nil) != d.TLS.Verify {
		t.Errorf("verification %v, want %v", tc.VerifyConnection != nil, d.TLS.Verify)
	}
	if (len(tc.Certificates) == 1) != (d.TLS.CertFile != "") {
		t.Errorf("%d client certificates for %q", len(tc.Certificates), d.TLS.CertFile)
	}
	if cfg.AllowFallbackToPlaintext != (d.TLS.Mode == TLSPreferred) {
		t.Errorf("fallback to plaintext: %v", cfg.AllowFallbackToPlaintext)
	}
}

// TestDatabaseTLSHandshake runs the registered configurations' handshakes
// against a TLS server on loopback: they accept and refuse exactly the
// certificates PyMySQL would.
func TestDatabaseTLSHandshake(t *testing.T) {
	f := newTLSFiles(t)
	other := testenv.NewCA(t)
	serverCert, serverKey := f.ca.Issue(t, "db", x509.ExtKeyUsageServerAuth) // for 127.0.0.1 and localhost
	otherCert, otherKey := other.Issue(t, "db", x509.ExtKeyUsageServerAuth)
	cases := []struct {
		name, host, query string
		serverCA          *testenv.CA // the CA that signed the server's certificate
		err               string      // "" when the handshake succeeds
	}{
		{"verified", "127.0.0.1", "ssl_ca={ca}", f.ca, ""},
		{"verified by name", "localhost", "ssl_ca={ca}", f.ca, ""},
		{"CA directory", "127.0.0.1", "ssl_capath={cadir}", f.ca, ""},
		{"wrong CA", "127.0.0.1", "ssl_ca={ca}", other, "certificate signed by unknown authority"},
		{"wrong name", "127.0.0.2", "ssl_ca={ca}", f.ca, "not 127.0.0.2"},
		{"name not checked", "127.0.0.2", "ssl_ca={ca}&ssl_check_hostname=false", f.ca, ""},
		{"wrong CA, name not checked", "127.0.0.2", "ssl_ca={ca}&ssl_check_hostname=false", other, "certificate signed by unknown authority"},
		{"not verified", "127.0.0.2", "ssl_verify_cert=false", other, ""},
		{"system CAs", "127.0.0.1", "ssl_verify_cert=true", f.ca, "certificate signed by unknown authority"},
		{"client certificate", "127.0.0.1", "ssl_ca={ca}&ssl_cert={cert}&ssl_key={key}", f.ca, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cert, key := serverCert, serverKey
			if c.serverCA == other {
				cert, key = otherCert, otherKey
			}
			pair, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				t.Fatal(err)
			}
			d, err := ParseDatabaseURL(f.replace.Replace("mysql+pymysql://zun:pw@"+c.host+"/zun?"+c.query), nil)
			if err != nil {
				t.Fatal(err)
			}
			cfg, _ := mysql.ParseDSN(d.DSN)
			wantClientCert := strings.Contains(c.query, "ssl_cert")
			serverErr, clientErr := handshake(t, cfg.TLS, &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert}, wantClientCert)
			if serverErr != nil && clientErr == nil {
				t.Fatalf("server: %v", serverErr)
			}
			if c.err == "" && clientErr != nil {
				t.Fatalf("handshake: %v", clientErr)
			}
			if c.err != "" && (clientErr == nil || !strings.Contains(clientErr.Error(), c.err)) {
				t.Fatalf("handshake: %v, want %q", clientErr, c.err)
			}
		})
	}
}

// handshake runs a TLS handshake over loopback between client and
// server and reports each side's error; the server also checks whether
// the client presented a certificate.
func handshake(t *testing.T, client, server *tls.Config, wantClientCert bool) (serverErr, clientErr error) {
	t.Helper()
	a, b := testenv.SocketPair(t, "tcp")
	done := make(chan error, 1)
	go func() {
		s := tls.Server(a, server)
		s.SetDeadline(time.Now().Add(10 * time.Second))
		err := s.Handshake()
		if err == nil && (len(s.ConnectionState().PeerCertificates) > 0) != wantClientCert {
			err = errors.New("client certificate presented: " + map[bool]string{true: "no", false: "yes"}[wantClientCert])
		}
		a.Close()
		done <- err
	}()
	c := tls.Client(b, client)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	clientErr = c.Handshake()
	b.Close()
	return <-done, clientErr
}

func FuzzParseDatabaseURL(f *testing.F) {
	f.Add("mysql+pymysql://zun:secret@db.example.org:3306/zun?charset=utf8&ssl_ca=/etc/ca.pem", "")
	f.Add("mysql://zun:pw@/zun?unix_socket=/run/mysqld/mysqld.sock&ssl_mode=VERIFY_IDENTITY", "ssl_capath=/etc/ssl/certs")
	f.Add("mysql+pymysql://u:p%40ss@[::1]/z?ssl_verify_cert=true&ssl_disabled=&plugin=a&plugin=b", "read_timeout=3")
	f.Add("mariadb+pymysql://u@h/d?ssl_cipher=AES128-SHA:ECDHE-RSA-AES128-SHA&ssl_check_hostname=No", "connect_timeout=5&ssl_key=/k")
	f.Fuzz(func(t *testing.T, connection, parameters string) {
		extra, err := url.ParseQuery(parameters)
		if err != nil {
			return
		}
		d, err := ParseDatabaseURL(connection, extra)
		if err != nil {
			// The password stays out of errors (when it is not also
			// elsewhere in the URL).
			if u, perr := url.Parse(connection); perr == nil && u.User != nil {
				if pw, ok := u.User.Password(); ok && len(pw) >= 4 {
					rest := strings.Replace(connection, u.User.String(), "", 1)
					// Elsewhere, escaped or not, it may be quoted as an option's text.
					plain, _ := url.PathUnescape(rest)
					params, _ := url.PathUnescape(parameters)
					elsewhere := false
					for _, text := range []string{rest, plain, parameters, params} {
						// Quoted (%q), an option's escapes can spell it too:
						// "\x80000" holds 0000.
						if strings.Contains(text, pw) || strings.Contains(strconv.Quote(text), pw) {
							elsewhere = true
						}
					}
					if !elsewhere && strings.Contains(err.Error(), pw) {
						t.Fatalf("error shows the password %q: %v", pw, err)
					}
				}
			}
			return
		}
		cfg, err := mysql.ParseDSN(d.DSN)
		if err != nil {
			t.Fatalf("%q gave a DSN that does not parse: %q: %v", connection, d.DSN, err)
		}
		if (cfg.TLS != nil) != (d.TLS.Mode != TLSOff) {
			t.Fatalf("TLS mode %v, configuration %v", d.TLS.Mode, cfg.TLS != nil)
		}
		if d.TLS.CheckHostname && !d.TLS.Verify {
			t.Fatalf("host name checked without verifying the chain: %+v", d.TLS)
		}
		if _, _, err := net.SplitHostPort(cfg.Addr); cfg.Net == "tcp" && err != nil {
			t.Fatalf("address %q: %v", cfg.Addr, err)
		}
	})
}

// Through Load: errors name the file, the section and the option the bad
// query option is in; warnings name the option.
func TestDatabaseOptionsInConfig(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ conf, err string }{
		{"[database]\nconnection = mysql+pymysql://zun:pw@db/zun?foo=1\n", `: [database] connection: unknown option "foo"`},
		{"[database]\nconnection = mysql+pymysql://zun:pw@db/zun\nconnection_parameters = charset=utf8&foo=1\n", `: [database] connection_parameters: unknown option "foo"`},
		{"[database]\nconnection = mysql+pymysql://zun:pw@db/zun?charset=utf8\nconnection_parameters = charset=latin1\n", `: [database] connection: option "charset" given more than once`},
		{"[database]\nconnection = mysql+pymysql://zun:pw@db/zun\nconnection_parameters = a=%zz\n", `: [database] connection_parameters: invalid parameters`},
	} {
		file := write(t, dir, "zun.conf", c.conf)
		_, err := Load([]string{file}, nil)
		if err == nil || err.Error() != file+c.err && !strings.HasPrefix(err.Error(), file+c.err) {
			t.Errorf("%q: %v, want %q", c.conf, err, file+c.err)
		}
		if err != nil && strings.Contains(err.Error(), ":pw@") {
			t.Errorf("error shows the password: %v", err)
		}
	}
	file := write(t, dir, "zun.conf", "[database]\nconnection = mysql+pymysql://zun:pw@db/zun?ssl_verify_cert=false\n")
	c, err := Load([]string{file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := file + ": [database] connection: TLS, but the server's certificate is not verified"; !reflect.DeepEqual(c.Warnings, []string{want}) {
		t.Errorf("warnings %q, want %q", c.Warnings, want)
	}
	if c.Database.TLS.String() != "required, not verified" {
		t.Errorf("TLS %q", c.Database.TLS)
	}
}
