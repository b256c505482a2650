package docker

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// apiEndpoint: what each Docker URL form dials, with Docker's default
// ports (2375 plain, 2376 TLS), TLS for https:// and, with ExecTLS, for
// tcp://; and a clear error for what cannot be an endpoint.
func TestAPIEndpoint(t *testing.T) {
	cases := []struct {
		url     string
		execTLS bool
		network string
		addr    string
		tls     bool
		host    string
		err     string
	}{
		{url: "unix:///var/run/docker.sock", network: "unix", addr: "/var/run/docker.sock", host: "docker"},
		{url: "unix:///run/d.sock", execTLS: true, network: "unix", addr: "/run/d.sock", host: "docker"},
		{url: "tcp://10.0.0.5:2375", network: "tcp", addr: "10.0.0.5:2375", host: "10.0.0.5"},
		{url: "tcp://10.0.0.5", network: "tcp", addr: "10.0.0.5:2375", host: "10.0.0.5"},
		{url: "tcp://10.0.0.5", execTLS: true, network: "tcp", addr: "10.0.0.5:2376", tls: true, host: "10.0.0.5"},
		{url: "tcp://docker.example:12376", execTLS: true, network: "tcp", addr: "docker.example:12376", tls: true, host: "docker.example"},
		{url: "http://docker.example", execTLS: true, network: "tcp", addr: "docker.example:2375", host: "docker.example"},
		{url: "https://docker.example", network: "tcp", addr: "docker.example:2376", tls: true, host: "docker.example"},
		{url: "https://[::1]", network: "tcp", addr: "[::1]:2376", tls: true, host: "::1"},
		{url: "tcp://[fd00::5]:2375/", network: "tcp", addr: "[fd00::5]:2375", host: "fd00::5"},
		{url: "unix://", err: "unix url without a socket path"},
		{url: "tcp://:2375", err: "url without a host"},
		{url: "ftp://docker.example", err: `unsupported scheme "ftp"`},
		{url: "docker.example:2375", err: `unsupported scheme "docker.example"`},
		{url: "tcp://10.0.0.5:port", err: "invalid port"},
		{url: "tcp://::", err: `url with an invalid host ":"`},
		{url: "http://]", err: `url with an invalid host "]"`},
		{url: "tcp://[fe80::1%25eth0]:2375", network: "tcp", addr: "[fe80::1%eth0]:2375", host: "fe80::1%eth0"},
		{url: "tcp://[fe80::1%25\xc3\xa9]:2375", err: "url with an invalid host"},
	}
	for _, tc := range cases {
		d := NewDialer(Options{ExecTLS: tc.execTLS})
		network, addr, useTLS, host, err := d.apiEndpoint(tc.url)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("apiEndpoint(%q): %v, want an error with %q", tc.url, err, tc.err)
			}
			continue
		}
		if err != nil || network != tc.network || addr != tc.addr || useTLS != tc.tls || host != tc.host {
			t.Errorf("apiEndpoint(%q, ExecTLS %v) = %s %s tls=%v host %q, %v; want %s %s tls=%v host %q",
				tc.url, tc.execTLS, network, addr, useTLS, host, err, tc.network, tc.addr, tc.tls, tc.host)
		}
	}
}

// fakeDocker accepts one connection, hands the request Docker got to
// got, and writes answer; then what the test writes to the returned
// connection's peer.
func fakeDocker(t *testing.T, answer string) (addr string, got chan *http.Request, peer chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got, peer = make(chan *http.Request, 1), make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		t.Cleanup(func() { c.Close() })
		r, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			close(got)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		// A WebSocket answer needs the client's key.
		io.WriteString(c, strings.ReplaceAll(answer, "{accept}", websocket.AcceptKey(r.Header.Get("Sec-WebSocket-Key"))))
		got <- r
		peer <- c
	}()
	return ln.Addr().String(), got, peer
}

// Exec start: POST /v{version}/exec/{id}/start with {"Detach":false,
// "Tty":true} and an upgrade to tcp; Docker's 101 UPGRADED (or an old
// daemon's 200) hands over the connection, and the bytes that came with
// the answer are the first of the stream. Other answers are errors
// carrying the status.
func TestExecStartHijack(t *testing.T) {
	cases := []struct {
		name   string
		answer string
		status int // of the error; 0: the stream opens
	}{
		{"101 UPGRADED", "HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n$ ", 0},
		{"old daemon's 200", "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n$ ", 0},
		{"no such exec", "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"message\":\"No such exec\"}\n", 404},
		{"container stopped", "HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n", 409},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, got, peer := fakeDocker(t, tc.answer)
			d := NewDialer(Options{APIVersion: "1.41"})
			s, err := d.Dial(context.Background(), console.Target{Kind: console.Exec, ExecID: "e1", URL: "tcp://" + addr})
			r := <-got
			if r == nil {
				t.Fatal("Docker got no request")
			}
			body, _ := io.ReadAll(r.Body)
			if r.Method != "POST" || r.URL.Path != "/v1.41/exec/e1/start" || string(body) != `{"Detach":false,"Tty":true}` ||
				r.Header.Get("Connection") != "Upgrade" || r.Header.Get("Upgrade") != "tcp" || r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("exec start request: %s %s %q %v", r.Method, r.URL.Path, body, r.Header)
			}
			if tc.status != 0 {
				var se *websocket.StatusError
				if !errors.As(err, &se) || se.Code != tc.status {
					t.Fatalf("Dial: %v, want a status error %d", err, tc.status)
				}
				return
			}
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer s.Conn.Close()
			if s.Framed {
				t.Error("an exec stream is raw bytes, not WebSocket frames")
			}
			c := <-peer
			io.WriteString(c, "hello")
			rest := make([]byte, 5)
			if _, err := io.ReadFull(s.Conn, rest); err != nil {
				t.Fatal(err)
			}
			if string(s.Buffered)+string(rest) != "$ hello" {
				t.Errorf("stream: %q then %q, want \"$ hello\"", s.Buffered, rest)
			}
		})
	}
}

// Attach on an Engine API URL (standalone mode): Docker's attach
// WebSocket of the container at the API version, stdin and output, no
// logs, with an Origin of the same host.
func TestAttachOnAPIURL(t *testing.T) {
	addr, got, peer := fakeDocker(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
	d := NewDialer(Options{APIVersion: "1.41"})
	s, err := d.Dial(context.Background(), console.Target{Kind: console.Attach, ContainerID: "c1", URL: "tcp://" + addr})
	r := <-got
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer s.Conn.Close()
	<-peer
	if want := "/v1.41/containers/c1/attach/ws?logs=0&stream=1&stdin=1&stdout=1&stderr=1"; r.URL.RequestURI() != want || r.Header.Get("Origin") != "http://"+addr {
		t.Errorf("attach request %s (Origin %q), want %s (Origin http://%s)", r.URL.RequestURI(), r.Header.Get("Origin"), want, addr)
	}
	if !s.Framed {
		t.Error("an attach stream is WebSocket frames")
	}
	// A Zun attach URL is used as it is.
	addr, got, peer = fakeDocker(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
	zunURL := "ws://" + addr + "/v1.26/containers/c1/attach/ws?logs=0&stream=1&stdin=1&stdout=1&stderr=1"
	s, err = d.Dial(context.Background(), console.Target{Kind: console.Attach, ContainerID: "c1", URL: zunURL})
	if r = <-got; err != nil || r.URL.RequestURI() != strings.TrimPrefix(zunURL, "ws://"+addr) {
		t.Fatalf("Dial %s: %v; Docker got %s", zunURL, err, r.URL.RequestURI())
	}
	s.Conn.Close()
	<-peer
}

// A daemon that accepts and never answers: the dial ends at Timeout with
// a deadline error, attach and exec.
func TestDialTimeout(t *testing.T) {
	// A server that accepts and never answers: held until the dialer
	// gives up and closes.
	addr := testenv.ServeTCP(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	d := NewDialer(Options{Timeout: 100 * time.Millisecond})
	for _, target := range []console.Target{
		{Kind: console.Attach, URL: "ws://" + addr + "/v1.26/containers/c/attach/ws"},
		{Kind: console.Exec, ExecID: "e", URL: "tcp://" + addr},
	} {
		start := time.Now()
		dialed := make(chan error, 1)
		go func() {
			s, err := d.Dial(context.Background(), target)
			if err == nil {
				s.Conn.Close()
			}
			dialed <- err
		}()
		select {
		case err := <-dialed:
			// The context's deadline, or the connection's, set to it.
			if !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)) {
				t.Errorf("%v on a silent daemon: %v after %v, want a deadline after 100ms", target.Kind, err, time.Since(start))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%v on a silent daemon: still dialing after 5s (Timeout 100ms)", target.Kind)
		}
	}
}

// TLSConfig: ca_file verifies, cert_file and key_file authenticate,
// api_insecure skips verification; unreadable or empty files are errors
// naming the option.
func TestTLSConfig(t *testing.T) {
	ca := testenv.NewCA(t)
	cert, key := ca.Issue(t, "zun-wsproxy", x509.ExtKeyUsageClientAuth)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	os.WriteFile(notPEM, []byte("hello\n"), 0o600)
	cases := []struct {
		name                string
		ca, cert, key       string
		insecure            bool
		roots, certs, skips bool
		err                 string
	}{
		{name: "CA and client certificate", ca: ca.File, cert: cert, key: key, roots: true, certs: true},
		{name: "CA only", ca: ca.File, roots: true},
		{name: "certificate without its key is not loaded", cert: cert},
		{name: "insecure", cert: cert, key: key, insecure: true, certs: true, skips: true},
		{name: "missing CA file", ca: filepath.Join(t.TempDir(), "none.pem"), err: "read docker ca_file"},
		{name: "CA file without PEM", ca: notPEM, err: "holds no PEM certificate"},
		{name: "key that is not one", cert: cert, key: notPEM, err: "load docker cert_file/key_file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := TLSConfig(tc.ca, tc.cert, tc.key, tc.insecure)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("TLSConfig: %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (cfg.RootCAs != nil) != tc.roots || (len(cfg.Certificates) == 1) != tc.certs || cfg.InsecureSkipVerify != tc.skips || cfg.MinVersion != tls.VersionTLS12 {
				t.Errorf("roots %v, %d certificates, insecure %v, min version %x; want roots %v, certificate %v, insecure %v, TLS 1.2",
					cfg.RootCAs != nil, len(cfg.Certificates), cfg.InsecureSkipVerify, cfg.MinVersion, tc.roots, tc.certs, tc.skips)
			}
		})
	}
}

// TLS to the Engine API verifies the daemon's chain and its name (the
// URL's host), presents the client certificate, and with api_insecure
// verifies nothing.
func TestAPIOverTLS(t *testing.T) {
	ca := testenv.NewCA(t)
	serverCert, serverKey := ca.Issue(t, "docker", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := ca.Issue(t, "zun-wsproxy", x509.ExtKeyUsageClientAuth)
	pair, err := tls.LoadX509KeyPair(serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	// The certificate names 127.0.0.1, ::1 and localhost: a daemon
	// reached as 127.0.0.2 has a certificate for another host.
	daemon := func(host string) string {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "OK") }))
		srv.Listener = ln
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return "https://" + ln.Addr().String()
	}
	named, other := daemon("127.0.0.1"), daemon("127.0.0.2")
	localhost := strings.Replace(named, "127.0.0.1", "localhost", 1)
	otherCA := testenv.NewCA(t)
	cases := []struct {
		name     string
		ca       string
		client   bool
		insecure bool
		endpoint string
		err      string // "" for success
	}{
		{"verified by IP", ca.File, true, false, named, ""},
		{"verified by name", ca.File, true, false, localhost, ""},
		{"another host's certificate", ca.File, true, false, other, "certificate is valid for 127.0.0.1, ::1, not 127.0.0.2"},
		{"another CA", otherCA.File, true, false, named, "certificate signed by unknown authority"},
		{"no client certificate", ca.File, false, false, named, "certificate required"},
		{"insecure: another host", otherCA.File, true, true, other, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cert, key := "", ""
			if tc.client {
				cert, key = clientCert, clientKey
			}
			cfg, err := TLSConfig(tc.ca, cert, key, tc.insecure)
			if err != nil {
				t.Fatal(err)
			}
			err = NewDialer(Options{TLS: cfg}).Ping(context.Background(), tc.endpoint)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Ping %s: %v", tc.endpoint, err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Ping %s: %v, want an error with %q", tc.endpoint, err, tc.err)
			}
		})
	}
}
