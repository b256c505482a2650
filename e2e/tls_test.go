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
	s := newSession(t) // a plain proxy we do not use; it brings the DB and Docker
	certFile, keyFile, pool := testenv.SelfSignedCert(t)
	for _, sslOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("ssl_only=%v", sslOnly), func(t *testing.T) {
			port := freePort(t)
			p := startProxy(t, port, baseConf(s.db, port), fmt.Sprintf(`[websocket_proxy]
base_url = wss://127.0.0.1:%d/
cert = %s
key = %s
ssl_only = %v
`, port, certFile, keyFile, sslOnly))
			c := s.attachable(t, "sh")
			ctx := ctxTimeout(t, 30*time.Second)
			tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
			url := strings.Replace(p.url(c.Token, c.UUID, ""), "ws://", "wss://", 1)
			conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
				HTTPClient:   tlsClient,
				Subprotocols: []string{"binary"},
				HTTPHeader:   http.Header{"Origin": {fmt.Sprintf("https://127.0.0.1:%d", port)}},
			})
			if err != nil {
				t.Fatalf("wss dial: %v", err)
			}
			conn.Write(ctx, websocket.MessageBinary, []byte("echo hello-$((6*7))\n"))
			readUntil(ctx, t, conn, "hello-42")
			conn.Close(websocket.StatusNormalClosure, "")

			// Same port, plain ws://: websockify serves both unless
			// ssl_only is set.
			c2 := s.attachable(t, "sh")
			conn2, resp, err := dial(ctx, p.url(c2.Token, c2.UUID, ""), nil)
			if sslOnly {
				if err == nil {
					conn2.CloseNow()
					t.Fatal("plain ws:// accepted with ssl_only = true")
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
			if err != nil {
				t.Fatalf("plain ws:// on the TLS port: %v (%v)", err, resp)
			}
			conn2.Write(ctx, websocket.MessageBinary, []byte("echo plain-$((6*7))\n"))
			readUntil(ctx, t, conn2, "plain-42")
			conn2.Close(websocket.StatusNormalClosure, "")
		})
	}
}

// SIGHUP reloads the listener's certificate without dropping sessions.
func TestCertificateReloadOnSIGHUP(t *testing.T) {
	s := newSession(t)
	certA, keyA, poolA := testenv.SelfSignedCert(t)
	certB, keyB, poolB := testenv.SelfSignedCert(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cp := func(from, to string) {
		b, _ := os.ReadFile(from)
		os.WriteFile(to, b, 0o600)
	}
	cp(certA, cert)
	cp(keyA, key)
	port := freePort(t)
	p := startProxy(t, port, baseConf(s.db, port), fmt.Sprintf("[websocket_proxy]\nbase_url = wss://127.0.0.1:%d/\ncert = %s\nkey = %s\n", port, cert, key))
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
	cp(certB, cert)
	cp(keyB, key)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.logs.waitLine(t, `TLS certificate reloaded.*trigger=SIGHUP`, 5*time.Second)
	if err := handshakeWith(poolB); err != nil {
		t.Fatalf("after SIGHUP, the new certificate is not served: %v", err)
	}
	conn.Write(ctx, websocket.MessageBinary, []byte("echo still-$((6*7))\n"))
	readUntil(ctx, t, conn, "still-42")
}
