package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// Zun's database over TLS, on a MariaDB whose account for the proxy
// requires it: with ssl_ca in [database] connection a console works;
// without, the client gets 503 and the log says that the connection was
// not TLS.
func TestZunDatabaseOverTLS(t *testing.T) {
	m := testenv.TLSMariaDB(t)
	db := m.NewZunDB(t, "e2e")
	d := testenv.NewDocker(t)
	c := db.InsertContainer(t, testenv.Container{DockerID: d.Run(`read x; echo "tls-$x"`), Token: testenv.NewUUID()})
	start := func(query string) *proxy {
		return startProxy(t, baseConf(nil), "[database]\nconnection = "+m.URL(testenv.TLSUser, "", db.Name, query)+"\n")
	}

	t.Run("verified", func(t *testing.T) {
		p := start("ssl_ca=" + m.CA)
		p.logs.WaitLine(t, `zun-wsproxy listening.*database_tls="required, certificate and host name verified"`, settle)
		ctx := ctxTimeout(t, 30*time.Second)
		conn := attach(t, p, c)
		if err := conn.Write(ctx, websocket.MessageBinary, []byte("now\n")); err != nil {
			t.Fatal(err)
		}
		testenv.ReadUntil(ctx, t, conn, "tls-now")
	})

	t.Run("plaintext", func(t *testing.T) {
		p := start("")
		status, body, _ := handshake(t, p.addr(), "/?token="+c.Token+"&uuid="+c.UUID, nil)
		if status != 503 || !strings.Contains(body, "container database unavailable") {
			t.Fatalf("got %d %q, want 503 container database unavailable", status, body)
		}
		p.logs.WaitLine(t, `request refused.*Access denied for user 'zuntls'.*the connection is not TLS`, settle)
	})
}
