package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
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
	// (default 10s), so silent clients cannot pile up.
	FirstByteTimeout time.Duration
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
	if tlsConfig == nil {
		return ln, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &sniffListener{
		Listener: ln,
		tls:      tlsConfig,
		sslOnly:  sslOnly,
		conns:    make(chan net.Conn),
		done:     make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		timeout:  opts.FirstByteTimeout,
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// sniffListener classifies each accepted connection in a goroutine of its
// own, so a client that sends nothing cannot stall the accept loop.
type sniffListener struct {
	net.Listener
	tls     *tls.Config
	sslOnly bool
	timeout time.Duration // for the first byte

	conns     chan net.Conn
	done      chan struct{}
	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup // acceptLoop and sniff goroutines
}

func (l *sniffListener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		l.wg.Add(1)
		go l.sniff(c)
	}
}

func (l *sniffListener) sniff(c net.Conn) {
	defer l.wg.Done()
	var first [1]byte
	c.SetReadDeadline(time.Now().Add(l.timeout))
	// Close must not wait out a silent client.
	stop := context.AfterFunc(l.ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	_, err := c.Read(first[:])
	stop()
	if err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	var out net.Conn = &prefixConn{Conn: c, first: first[0], pending: true}
	switch {
	case first[0] == tlsRecordHandshake:
		out = tls.Server(out, l.tls)
	case l.sslOnly:
		c.SetWriteDeadline(time.Now().Add(l.timeout))
		fmt.Fprintf(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(tlsRequired), tlsRequired)
		c.Close()
		return
	}
	select {
	case l.conns <- out:
	case <-l.done:
		out.Close()
	}
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

// prefixConn gives back the byte read to classify the connection.
type prefixConn struct {
	net.Conn
	first   byte
	pending bool
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if c.pending && len(p) > 0 {
		p[0] = c.first
		c.pending = false
		return 1, nil
	}
	return c.Conn.Read(p)
}
