package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/front"
	"github.com/zun-wsproxy/zun-wsproxy/internal/metrics"
	"github.com/zun-wsproxy/zun-wsproxy/internal/proxyproto"
	"github.com/zun-wsproxy/zun-wsproxy/internal/rawsock"
	"github.com/zun-wsproxy/zun-wsproxy/internal/workers"
)

// tlsRecordHandshake is the first byte of every TLS ClientHello.
const tlsRecordHandshake = 0x16

const tlsRequired = "400 Bad Request: this port only accepts TLS (wss://)\n"

// ListenOptions configure Listen.
type ListenOptions struct {
	// TLS, when set, serves TLS and plain connections on the same port,
	// told apart by their first byte, as websockify does.
	TLS *tls.Config
	// SSLOnly refuses plain connections with a short HTTP 400.
	SSLOnly bool
	// FirstByteTimeout bounds the wait for a new connection's first byte
	// (default 10s), so silent clients cannot pile up; and for its PROXY
	// header.
	FirstByteTimeout time.Duration
	// ProxyProtocol: a connection from one of Trusted starts with a PROXY
	// protocol header (version 1 or 2), whose source, for a relayed TCP
	// connection, becomes its remote address. Without a valid header it is
	// closed, logged and counted (Metrics' refused, reason proxy_header).
	// Other peers send none: what they send is read as HTTP or TLS, a
	// header included (which makes a bad request).
	ProxyProtocol bool
	Trusted       *TrustedProxies
	Logger        *slog.Logger     // default: discard
	Metrics       *metrics.Metrics // nil: off
	// Workers runs each connection's first-byte and TLS handshake (nil: a
	// goroutine of its own for each).
	Workers *workers.Pool
}

// Listen opens the proxy's socket on addr.
func Listen(addr string, opts ListenOptions) (net.Listener, error) {
	tlsConfig, sslOnly := opts.TLS, opts.SSLOnly
	if opts.FirstByteTimeout <= 0 {
		opts.FirstByteTimeout = 10 * time.Second
	}
	lc := listenConfig()
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tlsConfig == nil && !opts.ProxyProtocol {
		return rawListener{ln}, nil
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &sniffListener{
		Listener:      ln,
		tls:           tlsConfig,
		sslOnly:       sslOnly,
		proxyProtocol: opts.ProxyProtocol,
		trusted:       opts.Trusted,
		log:           opts.Logger,
		metrics:       opts.Metrics,
		conns:         make(chan net.Conn),
		done:          make(chan struct{}),
		ctx:           ctx,
		cancel:        cancel,
		timeout:       opts.FirstByteTimeout,
		workers:       opts.Workers,
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// sniffListener reads what comes before HTTP on each accepted connection
// (the PROXY header, the first byte telling TLS from plain) on a worker
// (a goroutine apart), so a client that sends nothing cannot stall the accept loop.
type sniffListener struct {
	net.Listener
	tls           *tls.Config // nil: plain only
	sslOnly       bool
	proxyProtocol bool
	trusted       *TrustedProxies
	log           *slog.Logger
	metrics       *metrics.Metrics
	timeout       time.Duration // for the PROXY header and the first byte
	workers       *workers.Pool

	conns     chan net.Conn
	done      chan struct{}
	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup // acceptLoop and sniff goroutines
}

func (l *sniffListener) acceptLoop() {
	defer l.wg.Done()
	front.AcceptLoop(l.Listener, l.done, func(c net.Conn) {
		l.wg.Add(1)
		l.workers.Go(func() { l.sniff(c) })
	})
}

func (l *sniffListener) sniff(c net.Conn) {
	defer l.wg.Done()
	c.SetReadDeadline(time.Now().Add(l.timeout))
	// Close must not wait out a silent client.
	stop := context.AfterFunc(l.ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	out, first, err := l.preamble(c)
	stop()
	// Once the listener closes, its callback may still set the past
	// deadline: such a connection is dropped, never handed on.
	if err != nil || l.ctx.Err() != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	switch {
	case l.tls != nil && first == tlsRecordHandshake:
		out = tls.Server(rawIO(out), l.tls)
	case l.tls != nil && l.sslOnly:
		c.SetWriteDeadline(time.Now().Add(l.timeout))
		fmt.Fprintf(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(tlsRequired), tlsRequired)
		c.Close()
		return
	default:
		out = rawIO(out)
	}
	select {
	case l.conns <- out:
	case <-l.done:
		out.Close()
	}
}

// preamble reads what precedes HTTP on c: a trusted peer's PROXY header
// (with proxy_protocol) and, with TLS on, the first byte, which tells TLS
// from plain: peeked at, so that it stays in the socket (read, and given
// back by a wrapper, where c is no socket). out reads on from there.
func (l *sniffListener) preamble(c net.Conn) (out net.Conn, first byte, err error) {
	out = c
	if l.proxyProtocol && l.trusted.containsPeer(c.RemoteAddr()) {
		h, err := proxyproto.Read(c)
		if err != nil {
			if l.ctx.Err() == nil { // not the listener closing
				l.log.Warn("connection refused: no valid PROXY protocol header from a trusted proxy", "client", c.RemoteAddr().String(), "error", err.Error())
				l.metrics.Refused("proxy_header")
			}
			return nil, 0, err
		}
		// LOCAL (a health check), UNKNOWN and the like name no client:
		// the peer is the one.
		if src, ok := h.Client(); ok {
			out = &proxiedConn{Conn: c, remote: net.TCPAddrFromAddrPort(src)}
		}
	}
	if l.tls == nil {
		return out, 0, nil
	}
	if first, ok, err := peekFirst(c); ok {
		if err != nil {
			return nil, 0, err
		}
		return out, first, nil
	}
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		return nil, 0, err
	}
	return front.NewReplay(out, b[:]), b[0], nil
}

// rawIO gives net/http, or TLS under it, a socket whose reads and writes
// are raw system calls (internal/rawsock), as a plain session's pumps use:
// reading the request and answering the handshake, the scheduler need not
// treat them as calls that block either. A connection named by a PROXY
// header keeps its name.
func rawIO(c net.Conn) net.Conn {
	if p, ok := c.(*proxiedConn); ok {
		return &proxiedConn{Conn: rawsock.Wrap(p.Conn), remote: p.remote}
	}
	return rawsock.Wrap(c)
}

func (l *sniffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and waits for the listener's goroutines.
func (l *sniffListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		l.cancel()
		err = l.Listener.Close()
		l.wg.Wait()
	})
	return err
}

// rawListener hands out connections as rawIO makes them.
type rawListener struct{ net.Listener }

func (l rawListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return rawIO(c), nil
}

// proxiedConn is a connection whose client a PROXY header named.
type proxiedConn struct {
	net.Conn
	remote net.Addr
}

func (c *proxiedConn) RemoteAddr() net.Addr { return c.remote }

// CloseWrite half-closes the connection, as net/http does before it lets
// go of one with input left unread.
func (c *proxiedConn) CloseWrite() error { return front.CloseWrite(c.Conn) }

// unwrap gives back the socket under a plain connection once the
// listener's wrappers have done their work, so that a session reads,
// parks and half-closes the socket itself (the session's event loop wants
// the socket, not a wrapper): the one that names the client
// (nothing of it is buffered: the header was read to its last byte and
// no further), the ones that give back bytes read already (the byte that
// tells TLS from plain, a head the front handed to net/http), which are
// read again by the time a request is served; and rawIO's.
func unwrap(c net.Conn) net.Conn {
	for {
		switch w := c.(type) {
		case *proxiedConn:
			c = w.Conn
		case *rawsock.Conn:
			c = w.Conn
		case *front.Replay:
			if w.Pending() {
				return c // its bytes are still to be read
			}
			c = w.Conn
		default:
			return c
		}
	}
}
