// Package docker dials the console streams of Docker containers: attach
// WebSockets and exec hijacks.
package docker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/rawsock"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// Options configure a Dialer.
type Options struct {
	// APIVersion is the Docker API version used in exec start paths, e.g.
	// "1.26".
	APIVersion string
	// TLS is used for wss:// attach URLs, and for exec API URLs when
	// ExecTLS is set. Nil means the system's roots and no client
	// certificate.
	TLS *tls.Config
	// ExecTLS makes exec start talk HTTPS to tcp:// API URLs, as Zun does
	// when [docker] ca_file, cert_file and key_file are set.
	ExecTLS bool
	// Timeout bounds connecting and the handshake; 0 means 10s.
	Timeout time.Duration
	// LocalAddr, when set, is the source address of TCP connections (a
	// load tool spreads its connections over several loopback addresses
	// to have more ephemeral ports).
	LocalAddr net.Addr
}

// Dialer opens console streams to Docker.
type Dialer struct {
	opts Options
	net  net.Dialer
	// attachNet dials attach sockets: as net, without TCP keepalive
	// while attachWatched is set.
	attachNet     net.Dialer
	attachWatched atomic.Bool
	// Engine API clients by endpoint, created on first use.
	apiMu sync.Mutex
	api   map[string]*http.Client
}

// NewDialer returns a Dialer.
func NewDialer(opts Options) *Dialer {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.APIVersion == "" {
		opts.APIVersion = "1.26"
	}
	d := &Dialer{opts: opts, net: net.Dialer{LocalAddr: opts.LocalAddr}, attachNet: net.Dialer{LocalAddr: opts.LocalAddr, KeepAlive: -1}}
	if opts.LocalAddr == nil {
		// A TCP connect to a daemon on this host is done inside the
		// system call: made raw, it keeps the scheduler out of it (a
		// Unix socket's is left to net; see StartConnect).
		d.net.Control, d.attachNet.Control = rawsock.StartConnect, rawsock.StartConnect
	}
	return d
}

// WatchedAttach tells the Dialer whether sessions ping the attach sockets
// it opens (heartbeats), which then find a dead Docker host on their own:
// those sockets go without TCP keepalive (four system calls fewer per
// session). Exec streams, which nothing pings, keep it. Off by default.
func (d *Dialer) WatchedAttach(on bool) { d.attachWatched.Store(on) }

// TLSConfig builds the client TLS configuration for Docker's API from
// Zun's [docker] options: caFile verifies the daemon, certFile and keyFile
// authenticate the proxy, insecure skips verification.
func TLSConfig(caFile, certFile, keyFile string, insecure bool) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read docker ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("docker ca_file %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" && keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load docker cert_file/key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Dial opens the console stream of t. The returned stream's connection
// belongs to the caller.
func (d *Dialer) Dial(ctx context.Context, t console.Target) (console.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	if t.Kind == console.Exec {
		return d.dialExec(ctx, t)
	}
	return d.dialAttach(ctx, t)
}

func (d *Dialer) dialAttach(ctx context.Context, t console.Target) (console.Stream, error) {
	u, err := url.Parse(t.URL)
	if err != nil {
		return console.Stream{}, fmt.Errorf("attach url of container %s: %w", t.ContainerUUID, err)
	}
	network, addr, host := "tcp", u.Host, u.Hostname()
	var useTLS bool
	switch u.Scheme {
	case "ws", "wss":
		useTLS = u.Scheme == "wss"
		if u.Port() == "" {
			addr = net.JoinHostPort(host, map[bool]string{false: "80", true: "443"}[useTLS])
		}
	default:
		// An Engine API URL (standalone targets): Docker's attach endpoint
		// on it.
		if network, addr, useTLS, host, err = d.apiEndpoint(t.URL); err != nil {
			return console.Stream{}, fmt.Errorf("docker url of container %s: %w", t.ContainerID, err)
		}
		// Host (and Origin) name the port, as HTTP wants for one that is
		// not the scheme's default.
		hostHeader := host
		if network == "tcp" {
			hostHeader = addr
		}
		u = &url.URL{Scheme: "ws", Host: hostHeader,
			Path:     fmt.Sprintf("/v%s/containers/%s/attach/ws", d.opts.APIVersion, t.ContainerID),
			RawQuery: "logs=0&stream=1&stdin=1&stdout=1&stderr=1"}
	}
	nd := &d.net
	if d.attachWatched.Load() {
		nd = &d.attachNet
	}
	conn, err := d.connect(ctx, nd, network, addr, useTLS, host)
	if err != nil {
		return console.Stream{}, fmt.Errorf("dial docker attach %s: %w", addr, err)
	}
	origin := "http://" + u.Host
	if useTLS {
		origin = "https://" + u.Host
	}
	release := bindDeadline(ctx, conn)
	rest, err := websocket.ClientHandshake(rawsock.Wrap(conn), u, http.Header{"Origin": {origin}, "User-Agent": {"zun-wsproxy"}})
	release()
	if err != nil {
		err = withCtx(ctx, err)
		conn.Close()
		return console.Stream{}, fmt.Errorf("attach handshake with docker %s: %w", addr, err)
	}
	return console.Stream{Conn: conn, Buffered: rest, Framed: true}, nil
}

func (d *Dialer) dialExec(ctx context.Context, t console.Target) (console.Stream, error) {
	network, addr, useTLS, host, err := d.apiEndpoint(t.URL)
	if err != nil {
		return console.Stream{}, fmt.Errorf("docker url of exec %s: %w", t.ExecID, err)
	}
	conn, err := d.connect(ctx, &d.net, network, addr, useTLS, host)
	if err != nil {
		return console.Stream{}, fmt.Errorf("dial docker %s: %w", addr, err)
	}
	release := bindDeadline(ctx, conn)
	rest, err := d.startExec(rawsock.Wrap(conn), t.ExecID)
	release()
	if err != nil {
		err = withCtx(ctx, err)
		conn.Close()
		return console.Stream{}, fmt.Errorf("start exec %s on docker %s: %w", t.ExecID, addr, err)
	}
	return console.Stream{Conn: conn, Buffered: rest, Framed: false}, nil
}

// apiEndpoint turns a Docker API URL (tcp://, unix://, http://, https://)
// into what to dial.
func (d *Dialer) apiEndpoint(raw string) (network, addr string, useTLS bool, host string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", false, "", err
	}
	switch u.Scheme {
	case "unix":
		if u.Path == "" {
			return "", "", false, "", errors.New("unix url without a socket path")
		}
		return "unix", u.Path, false, "docker", nil
	case "tcp", "http", "https":
		if u.Hostname() == "" {
			return "", "", false, "", errors.New("url without a host")
		}
		useTLS = u.Scheme == "https" || (u.Scheme == "tcp" && d.opts.ExecTLS)
		port := u.Port()
		if port == "" {
			port = map[bool]string{false: "2375", true: "2376"}[useTLS]
		}
		// From the decoded host: an IPv6 zone is escaped in URLs (%25).
		host = u.Hostname()
		addr = net.JoinHostPort(host, port)
		if !dialable(host, addr) {
			return "", "", false, "", fmt.Errorf("url with an invalid host %q", host)
		}
		return "tcp", addr, useTLS, host, nil
	}
	return "", "", false, "", fmt.Errorf("unsupported scheme %q", u.Scheme)
}

// dialable reports whether host, which addr joins with a port, can be
// dialed: an IP address (with a zone of printable ASCII, for IPv6), or a
// name, which has no colon or bracket (url.Parse lets "tcp://::" and
// "tcp://]" through).
func dialable(host, addr string) bool {
	if h, _, err := net.SplitHostPort(addr); err != nil || h != host {
		return false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		// A zone is an interface's name or number.
		return !strings.ContainsFunc(ip.Zone(), func(r rune) bool { return r <= ' ' || r > '~' })
	}
	return !strings.ContainsAny(host, ":[]")
}

// connect dials with nd and, for TLS, completes the TLS handshake within
// ctx.
func (d *Dialer) connect(ctx context.Context, nd *net.Dialer, network, addr string, useTLS bool, serverName string) (net.Conn, error) {
	conn, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if !useTLS {
		return conn, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if d.opts.TLS != nil {
		cfg = d.opts.TLS.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = serverName
	}
	tc := tls.Client(rawsock.Wrap(conn), cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	return tc, nil
}

// execStartBody asks for an interactive stream with a terminal, as Zun's
// proxy does.
const execStartBody = `{"Detach":false,"Tty":true}`

// startExec sends exec start with an upgrade to a raw TCP stream and reads
// Docker's answer; what follows it on conn is the exec's terminal.
func (d *Dialer) startExec(conn net.Conn, execID string) ([]byte, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "POST /v%s/exec/%s/start HTTP/1.1\r\n", d.opts.APIVersion, url.PathEscape(execID))
	b.WriteString("Host: docker\r\nUser-Agent: zun-wsproxy\r\nContent-Type: application/json\r\n")
	b.WriteString("Connection: Upgrade\r\nUpgrade: tcp\r\n")
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(execStartBody), execStartBody)
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return nil, fmt.Errorf("send exec start: %w", err)
	}
	// 101 UPGRADED from current daemons; 200 from old ones that hijack
	// without an upgrade.
	resp, rest, err := websocket.ReadUpgradeResponse(conn, func(code int) bool {
		return code == http.StatusSwitchingProtocols || code == http.StatusOK
	})
	if err != nil {
		return nil, fmt.Errorf("read exec start response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols && resp.StatusCode != http.StatusOK {
		return nil, &websocket.StatusError{Code: resp.StatusCode, Status: resp.Status}
	}
	return rest, nil
}

// bindDeadline makes conn's I/O end with ctx (its deadline or its
// cancellation) until the returned function is called, which leaves conn
// with no deadline. A cancellation already under way when release is
// called is waited for, so its past deadline cannot land after the clear
// and fail a dial that has completed.
func bindDeadline(ctx context.Context, conn net.Conn) (release func()) {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	cancelled := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(cancelled)
		conn.SetDeadline(time.Unix(1, 0))
	})
	return func() {
		if !stop() {
			<-cancelled
		}
		conn.SetDeadline(time.Time{})
	}
}

// withCtx prefers the context's error when the context ended, so that a
// deadline reads as a deadline rather than as the I/O error it caused.
func withCtx(ctx context.Context, err error) error {
	if ce := ctx.Err(); ce != nil {
		return fmt.Errorf("%w (%w)", ce, err)
	}
	return err
}
