package zunsql

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zun-wsproxy/zun-wsproxy/internal/config"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// pymysqlTLS is what PyMySQL makes of a URL's TLS options
// (testdata/pymysql_tls.py).
type pymysqlTLS struct {
	Error          string
	TLS, Verify    bool
	CheckHostname  bool `json:"check_hostname"`
	CAFile, CAPath string
	Cert, Key      string
	Ciphers        bool
}

// TestReadAsPyMySQL holds the proxy's reading of [database] connection
// against Debian's PyMySQL and SQLAlchemy reading the same URLs: TLS on or
// off, the certificate verified or not, the host name checked or not,
// from which CAs, with which client certificate; refused where they fail.
func TestReadAsPyMySQL(t *testing.T) {
	ca := testenv.NewCA(t)
	cert, key := ca.Issue(t, "zun", x509.ExtKeyUsageClientAuth)
	caDir := filepath.Dir(ca.File)
	files := strings.NewReplacer("{ca}", ca.File, "{cadir}", caDir, "{cert}", cert, "{key}", key)
	queries := []string{
		"charset=utf8",
		"ssl_ca={ca}",
		"ssl_ca={ca}&ssl_check_hostname=false",
		"ssl_ca={ca}&ssl_check_hostname=Off",
		"ssl_capath={cadir}",
		"ssl_ca={ca}&ssl_capath={cadir}",
		"ssl_ca={ca}&ssl_cert={cert}&ssl_key={key}",
		"ssl_cert={cert}&ssl_key={key}",
		"ssl_key={key}",
		"ssl_check_hostname=true",
		"ssl_ca={ca}&ssl_cipher=ECDHE-RSA-AES128-GCM-SHA256",
		"ssl_verify_cert=true",
		"ssl_verify_cert=TRUE",
		"ssl_verify_cert=optional",
		"ssl_verify_cert=false",
		"ssl_verify_cert=on",
		"ssl_verify_identity=true",
		"ssl_verify_cert=true&ssl_verify_identity=true",
		"ssl_ca={ca}&ssl_verify_cert=true",
		"ssl_ca={ca}&ssl_cert={cert}&ssl_key={key}&ssl_verify_identity=1",
		"ssl_disabled=true",
		"ssl_disabled=false",
		"ssl_disabled=0&ssl_ca={ca}",
		"ssl_ca=",
		"ssl_ca=&ssl_verify_cert=true",
		"ssl_verify_cert=",
		"plugin=dbcounter&ssl_ca={ca}",
		"unix_socket=/run/mysqld/mysqld.sock&ssl_ca={ca}",
		"connect_timeout=5&read_timeout=6&write_timeout=7&ssl_ca={ca}",
		// Refused by both.
		"foo=1",
		"ssl_mode=REQUIRED",
		"ssl_ca={ca}&ssl_check_hostname=maybe",
		"ssl_ca=/nonexistent/ca.pem",
		"ssl_cert={ca}",
		"connect_timeout=0",
		"read_timeout=-1",
		"ssl_ca={ca}&ssl_ca={ca}",
	}
	var urls []string
	for _, q := range queries {
		urls = append(urls, files.Replace("mysql+pymysql://zun:pw@db.example.org/zun?"+q))
	}
	cmd := exec.Command(testenv.Python, filepath.Join("testdata", "pymysql_tls.py"))
	cmd.Stdin = strings.NewReader(strings.Join(urls, "\n") + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s with PyMySQL and SQLAlchemy: %v: %s (scripts/test-env.sh installs python3-pymysql and python3-sqlalchemy)", testenv.Python, err, stderr.String())
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for i, u := range urls {
		if !sc.Scan() {
			t.Fatalf("no answer from PyMySQL for %s", queries[i])
		}
		var py pymysqlTLS
		if err := json.Unmarshal(sc.Bytes(), &py); err != nil {
			t.Fatal(err)
		}
		d, err := config.ParseDatabaseURL(u, nil)
		switch {
		case py.Error != "" && err == nil:
			t.Errorf("%s: accepted; PyMySQL fails: %s", queries[i], py.Error)
			continue
		case py.Error != "":
			continue
		case err != nil:
			t.Errorf("%s: %v; PyMySQL accepts it: %+v", queries[i], err, py)
			continue
		}
		got := pymysqlTLS{TLS: d.TLS.Mode != config.TLSOff}
		if got.TLS {
			got.Verify, got.CheckHostname, got.Ciphers = d.TLS.Verify, d.TLS.CheckHostname, len(d.TLS.Ciphers) > 0
			got.Cert, got.Key = d.TLS.CertFile, d.TLS.KeyFile
			if d.TLS.Verify {
				got.CAFile, got.CAPath = d.TLS.CAFile, d.TLS.CAPath
			} else {
				// Loaded, and not used, by PyMySQL.
				got.CAFile, got.CAPath = py.CAFile, py.CAPath
			}
		}
		if got != py {
			t.Errorf("%s:\n here   %+v\n PyMySQL %+v", queries[i], got, py)
		}
	}
}
