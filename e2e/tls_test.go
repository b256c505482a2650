package e2e

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
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
