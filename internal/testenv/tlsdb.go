package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// The second MariaDB of scripts/test-env.sh, whose users must use TLS, and
// its certificates.
var (
	MariaDBTLSAddr = getenv("ZUN_WSPROXY_TEST_MARIADB_TLS_ADDR", "127.0.0.1:3307")
	MariaDBTLSDir  = getenv("ZUN_WSPROXY_TEST_MARIADB_TLS_DIR", "/var/lib/zun-wsproxy-test/mariadb-tls/certs")
)

// DBUser is an account of the TLS MariaDB.
type DBUser struct{ Name, Password string }

var (
	// TLSUser is created REQUIRE SSL: any TLS connection.
	TLSUser = DBUser{"zuntls", "zuntls-secret"}
	// X509User is created REQUIRE X509: TLS with a client certificate
	// from the test CA (MariaDBTLS.ClientCert).
	X509User = DBUser{"zuntlsx509", "zuntlsx509-secret"}
)

// MariaDBTLS is the MariaDB whose users must use TLS. Its certificate
// names 127.0.0.1 and localhost; it also listens on 127.0.0.2, which the
// certificate does not name.
type MariaDBTLS struct {
	Addr                  string // host:port
	CA                    string // the CA that signed the server's and the client's certificates
	ClientCert, ClientKey string // signed for X509User
}

// TLSMariaDB returns the TLS MariaDB, failing tb if it is not there.
func TLSMariaDB(tb testing.TB) *MariaDBTLS {
	tb.Helper()
	m := &MariaDBTLS{
		Addr:       MariaDBTLSAddr,
		CA:         filepath.Join(MariaDBTLSDir, "ca.pem"),
		ClientCert: filepath.Join(MariaDBTLSDir, "client.pem"),
		ClientKey:  filepath.Join(MariaDBTLSDir, "client-key.pem"),
	}
	for _, f := range []string{m.CA, m.ClientCert, m.ClientKey} {
		if _, err := os.ReadFile(f); err != nil {
			tb.Fatalf("the TLS MariaDB's certificates are missing (%v): %s", err, setupHint)
		}
	}
	return m
}

// URL is an SQLAlchemy URL of database db for user, at host (the port
// stays; "" = the address's host), with query appended to charset=utf8.
func (m *MariaDBTLS) URL(user DBUser, host, db, query string) string {
	h, port, _ := net.SplitHostPort(m.Addr)
	if host != "" {
		h = host
	}
	u := fmt.Sprintf("mysql+pymysql://%s:%s@%s/%s?charset=utf8", user.Name, user.Password, net.JoinHostPort(h, port), db)
	if query != "" {
		u += "&" + query
	}
	return u
}

var registerTestTLS sync.Once

// NewZunDB creates a database holding Zun's tables on the TLS MariaDB (as
// TLSUser, over verified TLS) and drops it when tb ends.
func (m *MariaDBTLS) NewZunDB(tb testing.TB, prefix string) *ZunDB {
	tb.Helper()
	pem, err := os.ReadFile(m.CA)
	if err != nil {
		tb.Fatal(err)
	}
	registerTestTLS.Do(func() {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		host, _, _ := net.SplitHostPort(m.Addr)
		mysql.RegisterTLSConfig("zun-wsproxy-testenv", &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12})
	})
	srv := server{addr: m.Addr, user: TLSUser.Name, pass: TLSUser.Password, tls: "zun-wsproxy-testenv", prefix: "zuntls"}
	return newZunDB(tb, srv, prefix)
}
