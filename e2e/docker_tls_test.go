package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"sync"
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
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	track := func(c net.Conn) { mu.Lock(); open = append(open, c); mu.Unlock() }
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err != nil {
					return
				}
				up, err := net.Dial("tcp", testenv.DockerAddr)
				if err != nil {
					return
				}
				track(up)
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { io.Copy(up, c); done <- struct{}{} }()
				go func() { io.Copy(c, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// Attach over wss:// and exec over TLS, with [docker] ca_file, cert_file
// and key_file as zun-compute's Docker uses them.
func TestDockerTLS(t *testing.T) {
	s := newSession(t)
	ca := testenv.NewCA(t)
	front := tlsDocker(t, ca)
	clientCert, clientKey := ca.Issue(t, "zun-wsproxy", x509.ExtKeyUsageClientAuth)
	otherCA := testenv.NewCA(t)

	id := s.docker.Run("sh")
	wssURL := fmt.Sprintf("wss://%s/v%s/containers/%s/attach/ws?logs=0&stream=1&stdin=1&stdout=1&stderr=1", front, testenv.APIVersion, id)
	c := s.db.InsertContainer(t, testenv.Container{DockerID: id, Token: testenv.NewUUID(), WebsocketURL: wssURL})
	execID := s.docker.Exec(id, "sh")
	execToken := testenv.NewUUID()
	s.db.InsertExec(t, c.ID, execID, execToken, "tcp://"+front)

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
			port := freePort(t)
			p := startProxy(t, port, baseConf(s.db, port), "[docker]\n"+tc.docker)
			ctx := ctxTimeout(t, 30*time.Second)

			conn, resp, err := dial(ctx, p.url(c.Token, c.UUID, ""), nil)
			if !tc.ok {
				if err == nil {
					conn.CloseNow()
					t.Fatal("attach through an unverified Docker TLS endpoint was accepted")
				}
				if resp == nil || resp.StatusCode != 502 {
					t.Fatalf("attach: %v, want 502", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("attach over wss: %v", err)
			}
			conn.Write(ctx, websocket.MessageBinary, []byte("echo tls-$((6*7))\n"))
			readUntil(ctx, t, conn, "tls-42")
			conn.Close(websocket.StatusNormalClosure, "")

			if tc.name == "api_insecure skips verification" {
				return // Zun talks plain HTTP to Docker for exec when api_insecure is set
			}
			conn, _, err = dial(ctx, p.url(execToken, c.UUID, execID), nil)
			if err != nil {
				t.Fatalf("exec over TLS: %v", err)
			}
			conn.Write(ctx, websocket.MessageBinary, []byte("echo exec-tls-$((6*7))\n"))
			readUntil(ctx, t, conn, "exec-tls-42")
			conn.Close(websocket.StatusNormalClosure, "")
		})
	}
}

// exec_instance.url may name Docker's unix socket.
func TestExecOverUnixSocket(t *testing.T) {
	s := newSession(t)
	c := s.attachable(t, "sleep 600")
	execID := s.docker.Exec(c.DockerID, "sh")
	token := testenv.NewUUID()
	s.db.InsertExec(t, c.ID, execID, token, "unix://"+testenv.DockerSocket)
	ctx := ctxTimeout(t, 30*time.Second)
	conn, _, err := dial(ctx, s.proxy.url(token, c.UUID, execID), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.CloseNow()
	conn.Write(ctx, websocket.MessageBinary, []byte("echo unix-$((6*7))\n"))
	readUntil(ctx, t, conn, "unix-42")
	conn.Close(websocket.StatusNormalClosure, "")
}

// Against a real dockerd --tlsverify with certificates made by
// scripts/test-env.sh: attach over wss:// and exec over TLS verify the
// daemon against ca_file and present the client certificate.
func TestDockerTLSVerify(t *testing.T) {
	db := testenv.NewZunDB(t, "dtls")
	d := testenv.NewDockerTLS(t)
	ca, cert, key := testenv.DockerTLSFiles()
	id := d.Run("sh")
	wssURL := fmt.Sprintf("wss://%s/v%s/containers/%s/attach/ws?logs=0&stream=1&stdin=1&stdout=1&stderr=1", testenv.DockerTLSAddr, testenv.APIVersion, id)
	c := db.InsertContainer(t, testenv.Container{DockerID: id, Token: testenv.NewUUID(), WebsocketURL: wssURL})
	execID := d.Exec(id, "sh")
	execToken := testenv.NewUUID()
	db.InsertExec(t, c.ID, execID, execToken, "tcp://"+testenv.DockerTLSAddr)
	otherCA := testenv.NewCA(t)

	port := freePort(t)
	p := startProxy(t, port, baseConf(db, port), fmt.Sprintf("[docker]\nca_file = %s\ncert_file = %s\nkey_file = %s\n", ca, cert, key))
	ctx := ctxTimeout(t, 30*time.Second)
	conn, _, err := dial(ctx, p.url(c.Token, c.UUID, ""), nil)
	if err != nil {
		t.Fatalf("attach over wss:// to dockerd --tlsverify: %v", err)
	}
	conn.Write(ctx, websocket.MessageBinary, []byte("echo tlsverify-$((6*7))\n"))
	readUntil(ctx, t, conn, "tlsverify-42")
	conn.Close(websocket.StatusNormalClosure, "")
	conn, _, err = dial(ctx, p.url(execToken, c.UUID, execID), nil)
	if err != nil {
		t.Fatalf("exec over TLS to dockerd --tlsverify: %v", err)
	}
	conn.Write(ctx, websocket.MessageBinary, []byte("echo exec-tlsverify-$((6*7))\n"))
	readUntil(ctx, t, conn, "exec-tlsverify-42")
	conn.Close(websocket.StatusNormalClosure, "")

	// A proxy that trusts another CA refuses the daemon (502); one without
	// a client certificate is refused by the daemon (502).
	for name, docker := range map[string]string{
		"untrusted daemon":      fmt.Sprintf("[docker]\nca_file = %s\ncert_file = %s\nkey_file = %s\n", otherCA.File, cert, key),
		"no client certificate": fmt.Sprintf("[docker]\nca_file = %s\n", ca),
	} {
		port := freePort(t)
		p := startProxy(t, port, baseConf(db, port), docker)
		if _, resp, err := dial(ctx, p.url(c.Token, c.UUID, ""), nil); err == nil || resp == nil || resp.StatusCode != 502 {
			t.Errorf("%s: %v, want 502", name, err)
		}
	}
}
