package docker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// FuzzAPIEndpoint: every Docker URL apiEndpoint accepts names what it
// dials consistently: a unix socket's path, or a TCP address whose host
// is the one returned (the TLS server name) with a port (the default
// 2375/2376 when the URL has none); and the tcp:// URL of that address
// names the same endpoint.
func FuzzAPIEndpoint(f *testing.F) {
	for _, s := range []string{
		"unix:///var/run/docker.sock", "tcp://10.0.0.5:2375", "tcp://10.0.0.5", "https://docker.example",
		"http://[::1]:80", "tcp://[fe80::1%25eth0]:2375", "tcp://:2375", "unix://", "ftp://x", "tcp://a:b",
		"tcp://user:pw@host:1/path?q#f", "https://xn--bcher-kva.example",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, raw string, execTLS bool) {
		d := NewDialer(Options{ExecTLS: execTLS})
		network, addr, useTLS, host, err := d.apiEndpoint(raw)
		if err != nil {
			return
		}
		u, _ := url.Parse(raw)
		switch network {
		case "unix":
			if addr == "" || addr != u.Path || host != "docker" || useTLS {
				t.Fatalf("%q: unix %q host %q tls %v", raw, addr, host, useTLS)
			}
			return
		case "tcp":
		default:
			t.Fatalf("%q: network %q", raw, network)
		}
		h, port, err := net.SplitHostPort(addr)
		if err != nil || h != host || host == "" {
			t.Fatalf("%q: address %q (%v) does not hold host %q", raw, addr, err, host)
		}
		if u.Port() == "" && port != map[bool]string{false: "2375", true: "2376"}[useTLS] {
			t.Fatalf("%q: default port %s with tls %v", raw, port, useTLS)
		}
		again := (&url.URL{Scheme: "tcp", Host: addr}).String()
		n2, a2, _, h2, err := d.apiEndpoint(again)
		if err != nil || n2 != network || a2 != addr || h2 != host {
			t.Fatalf("%q -> %s: %s %s %q (%v), want %s %s %q", raw, again, n2, a2, h2, err, network, addr, host)
		}
	})
}

// head quotes the start of b.
func head(b []byte) string {
	if len(b) > 40 {
		return strconv.Quote(string(b[:40])) + "…"
	}
	return strconv.Quote(string(b))
}

var headerLine = regexp.MustCompile(`^[A-Za-z0-9-]+: [\x21-\x7e]*$`)

// scriptConn is a connection whose peer has already sent answer; what is
// written to it is dropped.
type scriptConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *scriptConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzExecStartAnswer: whatever Docker's answer to exec start, a 101 or
// 200 hands over the connection with not a byte of the stream after it
// lost, duplicated or reordered (what startExec buffered, then what is
// left to read, is exactly the stream), and any other status is an error
// carrying it.
func FuzzExecStartAnswer(f *testing.F) {
	f.Add(uint16(101), "Content-Type: application/vnd.docker.raw-stream", []byte("$ "))
	f.Add(uint16(200), "Content-Type: application/vnd.docker.raw-stream", []byte{})
	f.Add(uint16(101), "X: y", bytes.Repeat([]byte("\r\n\r\nHTTP/1.1 200 OK\r\n"), 200))
	f.Add(uint16(404), "Content-Type: application/json", []byte(`{"message":"No such exec"}`))
	f.Add(uint16(409), "", []byte("container stopped"))
	f.Fuzz(func(t *testing.T, code uint16, header string, stream []byte) {
		status := int(code)
		if status < 100 || status > 599 {
			status = 100 + status%500
		}
		if status == 100 || status == 102 || status == 103 {
			return // interim answers: a real daemon sends none
		}
		// One well-formed header line, of any name but those that frame
		// a body (a daemon's hijacked stream has no framing).
		if name, _, _ := strings.Cut(strings.ToLower(header), ":"); !headerLine.MatchString(header) || name == "content-length" || name == "transfer-encoding" {
			header = "X-Fuzz: 1"
		}
		answer := fmt.Sprintf("HTTP/1.1 %d %s\r\n%s\r\n\r\n", status, "Reason", header)
		c := &scriptConn{r: bytes.NewReader(append([]byte(answer), stream...))}
		rest, err := NewDialer(Options{}).startExec(c, "e1")
		if status != 101 && status != 200 {
			var se *websocket.StatusError
			if !errors.As(err, &se) || se.Code != status {
				t.Fatalf("status %d: %v, want a status error", status, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("status %d with %q: %v", status, header, err)
		}
		left, _ := io.ReadAll(c.r)
		if got := append(rest, left...); !bytes.Equal(got, stream) {
			t.Fatalf("status %d: the stream came through as %d bytes %s, want %d bytes %s", status, len(got), head(got), len(stream), head(stream))
		}
	})
}
