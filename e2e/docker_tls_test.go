package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"regexp"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// tlsDocker puts a TLS front requiring client certificates (what dockerd
// --tlsverify does) before the test's Docker engine, and returns its
// address. The engine itself serves every byte.
func tlsDocker(t *testing.T, ca *testenv.CA) string {
	t.Helper()
	certFile, keyFile := ca.Issue(t, "docker", x509.ExtKeyUsageServerAuth)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	return testenv.Forward(t, ln, testenv.DockerAddr).Addr
}

// Attach over wss:// and exec over TLS, with [docker] ca_file, cert_file
// and key_file as zun-compute's Docker uses them.
func TestDockerTLS(t *testing.T) {
	t.Parallel()
	s := newDeployment(t)
	ca := testenv.NewCA(t)
	front := tlsDocker(t, ca)
	clientCert, clientKey := ca.Issue(t, "zun-wsproxy", x509.ExtKeyUsageClientAuth)
	otherCA := testenv.NewCA(t)

	id := s.docker.Run("sh")
	wssURL := fmt.Sprintf("wss://%s/v%s/containers/%s/attach/ws?logs=0&stream=1&stdin=1&stdout=1&stderr=1", front, testenv.APIVersion, id)
	c := s.db.InsertContainer(t, testenv.Container{DockerID: id, Token: testenv.NewUUID(), WebsocketURL: wssURL})
	execID, execToken := s.db.NewExec(t, s.docker, c, "tcp://"+front)

	cases := []struct {
		name   string
		docker string
		ok     bool
	}{
		{"verified with client certificate", fmt.Sprintf("ca_file = %s\ncert_file = %s\nkey_file = %s\n", ca.File, clientCert, clientKey), true},
		{"daemon signed by another CA", fmt.Sprintf("ca_file = %s\ncert_file = %s\nkey_file = %s\n", otherCA.File, clientCert, clientKey), false},
		{"api_insecure skips verification", fmt.Sprintf("ca_file = %s\ncert_file = %s\nkey_file = %s\napi_insecure = true\n", otherCA.File, clientCert, clientKey), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, baseConf(s.db), "[docker]\n"+tc.docker)
			ctx := ctxTimeout(t, 30*time.Second)

			if !tc.ok {
				if status := refusal(ctx, p.url(c.Token, c.UUID, ""), nil); status != 502 {
					t.Fatalf("attach through an unverified Docker TLS endpoint: %d, want 502", status)
				}
				return
			}
			conn := attach(t, p, c)
			testenv.Echo(t, conn, "tls")
			conn.Close(websocket.StatusNormalClosure, "")

			if tc.name == "api_insecure skips verification" {
				return // Zun talks plain HTTP to Docker for exec when api_insecure is set
			}
			conn = open(ctx, t, p.url(execToken, c.UUID, execID), nil)
			testenv.Echo(t, conn, "exec-tls")
			conn.Close(websocket.StatusNormalClosure, "")
		})
	}
}

// exec_instance.url may name Docker's unix socket.
func TestExecOverUnixSocket(t *testing.T) {
	t.Parallel()
	s := newSession(t)
	c := s.attachable(t, "sleep 600")
	execID, token := s.db.NewExec(t, s.docker, c, "unix://"+testenv.DockerSocket)
	conn := open(ctxTimeout(t, 30*time.Second), t, s.proxy.url(token, c.UUID, execID), nil)
	testenv.Echo(t, conn, "unix")
	conn.Close(websocket.StatusNormalClosure, "")
}

// Against a real dockerd --tlsverify with certificates made by
// scripts/test-env.sh: attach over wss:// and exec over TLS verify the
// daemon against ca_file and present the client certificate.
func TestDockerTLSVerify(t *testing.T) {
	t.Parallel()
	db := testenv.NewZunDB(t, "dtls")
	d := testenv.NewDockerTLS(t)
	ca, cert, key := testenv.DockerTLSFiles()
	id := d.Run("sh")
	wssURL := fmt.Sprintf("wss://%s/v%s/containers/%s/attach/ws?logs=0&stream=1&stdin=1&stdout=1&stderr=1", testenv.DockerTLSAddr, testenv.APIVersion, id)
	c := db.InsertContainer(t, testenv.Container{DockerID: id, Token: testenv.NewUUID(), WebsocketURL: wssURL})
	execID, execToken := db.NewExec(t, d, c, "tcp://"+testenv.DockerTLSAddr)
	otherCA := testenv.NewCA(t)

	p := startProxy(t, baseConf(db), fmt.Sprintf("[docker]\nca_file = %s\ncert_file = %s\nkey_file = %s\n", ca, cert, key))
	ctx := ctxTimeout(t, 30*time.Second)
	conn := attach(t, p, c)
	testenv.Echo(t, conn, "tlsverify")
	conn.Close(websocket.StatusNormalClosure, "")
	conn = open(ctx, t, p.url(execToken, c.UUID, execID), nil)
	testenv.Echo(t, conn, "exec-tlsverify")
	conn.Close(websocket.StatusNormalClosure, "")

	// A proxy that trusts another CA refuses the daemon (502); one without
	// a client certificate is refused by the daemon (502).
	for name, docker := range map[string]string{
		"untrusted daemon":      fmt.Sprintf("[docker]\nca_file = %s\ncert_file = %s\nkey_file = %s\n", otherCA.File, cert, key),
		"no client certificate": fmt.Sprintf("[docker]\nca_file = %s\n", ca),
	} {
		p := startProxy(t, baseConf(db), docker)
		if status := refusal(ctx, p.url(c.Token, c.UUID, ""), nil); status != 502 {
			t.Errorf("%s: %d, want 502", name, status)
		}
	}
}

// tlsDockerRelay relays TCP from a fresh port on host (a loopback
// address) to the test environment's TLS dockerd, so that the proxy
// reaches the daemon, and checks its certificate, under that name.
func tlsDockerRelay(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	return testenv.Forward(t, ln, testenv.DockerTLSAddr).Addr
}

// The daemon's certificate must name the host the proxy dials, not only
// come from ca_file's CA: the TLS dockerd's certificate (its CA's, for
// 127.0.0.1 and localhost) is refused when the daemon is reached as
// 127.0.0.2, attach and exec alike, with 502 and the reason in the log.
func TestDockerTLSHostName(t *testing.T) {
	t.Parallel()
	db := testenv.NewZunDB(t, "dtlsname")
	d := testenv.NewDockerTLS(t)
	ca, cert, key := testenv.DockerTLSFiles()
	p := startProxy(t, baseConf(db), fmt.Sprintf("[docker]\nca_file = %s\ncert_file = %s\nkey_file = %s\n", ca, cert, key))
	id := d.Run("sh")
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"127.0.0.1", true}, // in the certificate
		{"127.0.0.2", false},
	} {
		t.Run(tc.host, func(t *testing.T) {
			relay := tlsDockerRelay(t, tc.host)
			wssURL := fmt.Sprintf("wss://%s/v%s/containers/%s/attach/ws?logs=0&stream=1&stdin=1&stdout=1&stderr=1", relay, testenv.APIVersion, id)
			c := db.InsertContainer(t, testenv.Container{DockerID: id, Token: testenv.NewUUID(), WebsocketURL: wssURL})
			execID, execToken := db.NewExec(t, d, c, "tcp://"+relay)
			ctx := ctxTimeout(t, 30*time.Second)
			for _, kind := range []struct{ name, url string }{
				{"attach", p.url(c.Token, c.UUID, "")},
				{"exec", p.url(execToken, c.UUID, execID)},
			} {
				if tc.ok {
					conn := open(ctx, t, kind.url, nil)
					testenv.Echo(t, conn, kind.name+"-named")
					conn.Close(websocket.StatusNormalClosure, "")
					continue
				}
				if status := refusal(ctx, kind.url, nil); status != 502 {
					t.Errorf("%s through a daemon whose certificate names another host: %d, want 502", kind.name, status)
				}
			}
			if !tc.ok {
				p.logs.WaitLines(t, `request refused.*status=502.*certificate is valid for 127\.0\.0\.1, not `+regexp.QuoteMeta(tc.host), 2, settle)
			}
		})
	}
}

// api_insecure: Docker's certificate is not verified (here ca_file is
// another CA's), for attach over wss:// and for exec on an https:// URL;
// the client certificate is still presented. An exec on a tcp:// URL is
// plain HTTP, as Zun's docker-py client makes it then, even with the TLS
// files set.
func TestDockerAPIInsecureExec(t *testing.T) {
	t.Parallel()
	db := testenv.NewZunDB(t, "dinsec")
	tlsd, plain := testenv.NewDockerTLS(t), testenv.NewDocker(t)
	_, cert, key := testenv.DockerTLSFiles()
	otherCA := testenv.NewCA(t)
	p := startProxy(t, baseConf(db), fmt.Sprintf("[docker]\nca_file = %s\ncert_file = %s\nkey_file = %s\napi_insecure = true\n", otherCA.File, cert, key))

	id := tlsd.Run("sh")
	wssURL := fmt.Sprintf("wss://%s/v%s/containers/%s/attach/ws?logs=0&stream=1&stdin=1&stdout=1&stderr=1", testenv.DockerTLSAddr, testenv.APIVersion, id)
	c := db.InsertContainer(t, testenv.Container{DockerID: id, Token: testenv.NewUUID(), WebsocketURL: wssURL})
	httpsExec, httpsToken := db.NewExec(t, tlsd, c, "https://"+testenv.DockerTLSAddr)
	pc := db.InsertContainer(t, testenv.Container{DockerID: plain.Run("sh"), Token: testenv.NewUUID()})
	tcpExec, tcpToken := db.NewExec(t, plain, pc, "tcp://"+testenv.DockerAddr)

	ctx := ctxTimeout(t, 30*time.Second)
	for _, tc := range []struct{ name, url string }{
		{"attach over wss:// unverified", p.url(c.Token, c.UUID, "")},
		{"exec over https:// unverified", p.url(httpsToken, c.UUID, httpsExec)},
		{"exec over tcp:// in plain HTTP", p.url(tcpToken, pc.UUID, tcpExec)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := open(ctx, t, tc.url, nil)
			testenv.Echo(t, conn, "insecure")
			conn.Close(websocket.StatusNormalClosure, "")
		})
	}
}
