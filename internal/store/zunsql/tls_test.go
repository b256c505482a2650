package zunsql

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/config"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// TLS to a real MariaDB whose users must use it (REQUIRE SSL, REQUIRE
// X509), with [database] connection URLs as zun.conf holds them.
func TestTLS(t *testing.T) {
	m := testenv.TLSMariaDB(t)
	z := m.NewZunDB(t, "tls")
	c := z.InsertContainer(t, testenv.Container{Name: "web", DockerID: "abc", Token: "tok"})
	otherCA := testenv.NewCA(t)
	otherCert, otherKey := otherCA.Issue(t, "zuntlsx509", x509.ExtKeyUsageClientAuth)
	files := strings.NewReplacer("{ca}", m.CA, "{cert}", m.ClientCert, "{key}", m.ClientKey,
		"{otherca}", otherCA.File, "{othercert}", otherCert, "{otherkey}", otherKey)

	cases := []struct {
		name  string
		user  testenv.DBUser
		host  string // "" = 127.0.0.1, which the server's certificate names
		query string
		err   string // a regular expression; "" when the lookup succeeds
	}{
		{"verified", testenv.TLSUser, "", "ssl_ca={ca}", ""},
		{"plaintext refused", testenv.TLSUser, "", "", "Access denied for user 'zuntls'"},
		{"wrong CA", testenv.TLSUser, "", "ssl_ca={otherca}", "certificate signed by unknown authority"},
		{"system CAs", testenv.TLSUser, "", "ssl_verify_cert=true", "certificate signed by unknown authority"},
		{"not verified", testenv.TLSUser, "", "ssl_verify_cert=false", ""},
		{"name not in the certificate", testenv.TLSUser, "127.0.0.2", "ssl_ca={ca}", "not 127.0.0.2"},
		{"name not checked", testenv.TLSUser, "127.0.0.2", "ssl_ca={ca}&ssl_check_hostname=false", ""},
		{"disabled", testenv.TLSUser, "", "ssl_ca={ca}&ssl_disabled=true", "Access denied for user 'zuntls'"},
		{"mysqlclient VERIFY_IDENTITY", testenv.TLSUser, "", "ssl_mode=VERIFY_IDENTITY&ssl_ca={ca}", ""},
		{"X509 without a client certificate", testenv.X509User, "", "ssl_ca={ca}", "Access denied for user 'zuntlsx509'"},
		{"X509 with a client certificate", testenv.X509User, "", "ssl_ca={ca}&ssl_cert={cert}&ssl_key={key}", ""},
		// With TLS 1.3 the server refuses a client certificate after the
		// client's handshake: the client hears of it as an alert or as a
		// connection reset, whichever comes first.
		{"X509 with another CA's certificate", testenv.X509User, "", "ssl_ca={ca}&ssl_cert={othercert}&ssl_key={otherkey}", "unknown certificate authority|connection reset by peer|broken pipe"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := files.Replace(m.URL(tc.user, tc.host, z.Name, tc.query))
			if strings.HasPrefix(tc.name, "mysqlclient") {
				url = strings.Replace(url, "mysql+pymysql://", "mysql://", 1)
			}
			d, err := config.ParseDatabaseURL(url, nil)
			if err != nil {
				t.Fatal(err)
			}
			var logged strings.Builder
			db, err := Open(d.DSN, Options{QueryTimeout: 5 * time.Second, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			got, err := db.ContainerByUUID(context.Background(), c.UUID)
			if tc.err == "" {
				if err != nil || got.WebsocketToken != "tok" {
					t.Fatalf("lookup: %+v %v", got, err)
				}
				return
			}
			// The reason is in the error, or (when the driver keeps it to
			// itself) in the log.
			if !errors.Is(err, store.ErrUnavailable) || !regexp.MustCompile(tc.err).MatchString(err.Error()+logged.String()) {
				t.Fatalf("lookup: %v, logged %q, want ErrUnavailable with %q", err, logged.String(), tc.err)
			}
			if tc.query == "" && !strings.Contains(err.Error(), "the connection is not TLS") {
				t.Fatalf("no word of TLS: %v", err)
			}
			if strings.Contains(err.Error()+logged.String(), tc.user.Password) {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}
