package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

func TestWSS(t *testing.T) {
	t.Parallel()
	s := newDeployment(t)
	certFile, keyFile, pool := testenv.SelfSignedCert(t)
	for _, sslOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("ssl_only=%v", sslOnly), func(t *testing.T) {
			p := startProxy(t, baseConf(s.db), fmt.Sprintf(`[websocket_proxy]
base_url = wss://127.0.0.1/
cert = %s
key = %s
ssl_only = %v
`, certFile, keyFile, sslOnly))
			c := s.attachable(t, "sh")
			ctx := ctxTimeout(t, 30*time.Second)
			tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
			url := strings.Replace(p.url(c.Token, c.UUID, ""), "ws://", "wss://", 1)
			conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
				HTTPClient:   tlsClient,
				Subprotocols: []string{"binary"},
				HTTPHeader:   http.Header{"Origin": {"https://" + p.addr()}},
			})
			if err != nil {
				t.Fatalf("wss dial: %v", err)
			}
			testenv.Echo(t, conn, "hello")
			conn.Close(websocket.StatusNormalClosure, "")

			// Same port, plain ws://: websockify serves both unless
			// ssl_only is set.
			c2 := s.attachable(t, "sh")
			if sslOnly {
				if status := refusal(ctx, p.url(c2.Token, c2.UUID, ""), nil); status != 400 {
					t.Fatalf("plain ws:// with ssl_only = true: %d, want 400", status)
				}
				raw, derr := net.Dial("tcp", p.addr())
				if derr != nil {
					t.Fatal(derr)
				}
				defer raw.Close()
				fmt.Fprintf(raw, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				line, _ := bufio.NewReader(raw).ReadString('\n')
				if !strings.HasPrefix(line, "HTTP/1.1 400") {
					t.Errorf("plain HTTP on an ssl_only port: %q", line)
				}
				return
			}
			conn2 := open(ctx, t, p.url(c2.Token, c2.UUID, ""), nil)
			testenv.Echo(t, conn2, "plain")
			conn2.Close(websocket.StatusNormalClosure, "")
		})
	}
}

// SIGHUP reloads the listener's certificate without dropping sessions.
func TestCertificateReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	s := newDeployment(t)
	certA, keyA, poolA := testenv.SelfSignedCert(t)
	certB, keyB, poolB := testenv.SelfSignedCert(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testenv.CopyFile(t, certA, cert)
	testenv.CopyFile(t, keyA, key)
	p := startProxy(t, baseConf(s.db), fmt.Sprintf("[websocket_proxy]\nbase_url = wss://127.0.0.1/\ncert = %s\nkey = %s\n", cert, key))
	handshakeWith := func(pool *x509.CertPool) error {
		c, err := tls.Dial("tcp", p.addr(), &tls.Config{RootCAs: pool})
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := handshakeWith(poolA); err != nil {
		t.Fatalf("first certificate: %v", err)
	}
	// A session open across the reload keeps working.
	c := s.attachable(t, "sh")
	ctx := ctxTimeout(t, 30*time.Second)
	conn, _, err := websocket.Dial(ctx, strings.Replace(p.url(c.Token, c.UUID, ""), "ws://", "wss://", 1), &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: poolA}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	// A certificate file that cannot be loaded: logged, and the one in
	// use stays.
	if err := os.WriteFile(cert, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.logs.WaitLine(t, `TLS certificate not reloaded; the previous one stays in use.*trigger=SIGHUP.*error=.+`, settle)
	if err := handshakeWith(poolA); err != nil {
		t.Fatalf("after a failed reload, the previous certificate is not served: %v", err)
	}
	testenv.CopyFile(t, certB, cert)
	testenv.CopyFile(t, keyB, key)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.logs.WaitLine(t, `TLS certificate reloaded.*trigger=SIGHUP`, settle)
	if err := handshakeWith(poolB); err != nil {
		t.Fatalf("after SIGHUP, the new certificate is not served: %v", err)
	}
	testenv.Echo(t, conn, "still")
}
