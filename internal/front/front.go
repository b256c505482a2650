// Package front serves the first request of each connection to the
// console port when it is a WebSocket handshake for a console path, and
// hands every other connection to net/http, its bytes read so far given
// back.
//
// A console handshake is the proxy's hot path: net/http would give each
// connection 8 KiB of buffers that a hijacked connection never returns,
// a goroutine watching for the client going away, and contexts, for a
// request that is answered once and then leaves HTTP. The front reads
// the request head into a pooled buffer, parses it strictly (what it does
// not fully understand goes to net/http, which answers it as before), and
// calls the same handler with a ResponseWriter that can be hijacked.
//
// What the front's requests lack against net/http's: their context is
// not cancelled when the client goes away before it is answered (the
// handler's lookups and dials have timeouts of their own), r.TLS is not
// set, and a refusal closes the connection (Connection: close, as the
// handler says anyway).
package front

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
	"github.com/zun-wsproxy/zun-wsproxy/internal/workers"
)

// headSize is the pooled buffer a head is read into: a console handshake
// (browsers' with cookies included) is well under it; a longer head goes
// to net/http.
const headSize = 4 << 10

var headEnd = []byte("\r\n\r\n")

var heads = sync.Pool{New: func() any { return new([headSize]byte) }}

// Options configure a Listener.
type Options struct {
	// Takes reports whether a WebSocket handshake for this path is the
	// front's to serve (its handler's console paths).
	Takes func(path string) bool
	// HeaderTimeout bounds a TLS handshake and the reading of a head,
	// from when the connection is accepted (default 10s).
	HeaderTimeout time.Duration
	// MaxHeaderBytes: a longer head goes to net/http, which refuses it.
	MaxHeaderBytes int
	Logger         *slog.Logger // default: discard
	// Workers runs each connection's serving (nil: a goroutine of its
	// own for each).
	Workers *workers.Pool
}

// Listener accepts connections from the listener it wraps, serves the
// requests it takes, and gives net/http (the caller of Accept) the rest.
type Listener struct {
	inner   net.Listener
	handler http.Handler
	opts    Options

	handoff chan net.Conn
	done    chan struct{} // closed by Close

	closeOnce sync.Once
	closeErr  error

	mu sync.Mutex
	// active counts the connections accepted and not yet answered,
	// upgraded or handed off; reading are those still reading a head.
	active  int
	reading map[net.Conn]struct{}
	idle    chan struct{} // closed when active falls to 0, for Wait
}

// New starts accepting from inner, serving with h what it takes.
func New(inner net.Listener, h http.Handler, opts Options) *Listener {
	if opts.HeaderTimeout <= 0 {
		opts.HeaderTimeout = 10 * time.Second
	}
	if opts.MaxHeaderBytes <= 0 || opts.MaxHeaderBytes > headSize {
		opts.MaxHeaderBytes = headSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Listener{
		inner:   inner,
		handler: h,
		opts:    opts,
		handoff: make(chan net.Conn),
		done:    make(chan struct{}),
		reading: make(map[net.Conn]struct{}),
	}
	l.mu.Lock()
	l.active++ // the accept loop, until it returns
	l.mu.Unlock()
	go l.acceptLoop()
	return l
}

// Accept returns the next connection for net/http.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.handoff:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting. Requests already accepted are still served:
// Wait waits for them.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = l.inner.Close()
	})
	return l.closeErr
}

// Addr is the wrapped listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Wait returns once every connection accepted has been answered,
// upgraded or handed to net/http, or when ctx ends: then the heads still
// being read are cut short, and their connections closed unanswered.
func (l *Listener) Wait(ctx context.Context) error {
	for {
		l.mu.Lock()
		if l.active == 0 {
			l.mu.Unlock()
			return nil
		}
		if l.idle == nil {
			l.idle = make(chan struct{})
		}
		idle := l.idle
		l.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			l.mu.Lock()
			for c := range l.reading {
				c.SetReadDeadline(time.Unix(1, 0))
			}
			l.mu.Unlock()
			return ctx.Err()
		}
	}
}

func (l *Listener) acceptLoop() {
	defer l.finished()
	if err := AcceptLoop(l.inner, l.done, func(c net.Conn) {
		l.mu.Lock()
		l.active++
		l.reading[c] = struct{}{}
		l.mu.Unlock()
		l.opts.Workers.Go(func() { l.serve(c) })
	}); err != nil {
		l.Close() // Accept answers net/http's next call with it
	}
}

// AcceptLoop accepts connections from ln and gives each to take (which
// must not block), until done is closed (it returns nil) or ln is closed
// (net.ErrClosed). On other errors (out of file descriptors and the
// like) it backs off, as net/http does.
func AcceptLoop(ln net.Listener, done <-chan struct{}, take func(net.Conn)) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-done:
				return nil
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		take(c)
	}
}

// finished counts one connection (or the accept loop) out of active.
func (l *Listener) finished() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active--; l.active == 0 && l.idle != nil {
		close(l.idle)
		l.idle = nil
	}
}

// serve reads c's first head and serves it, or hands c to net/http.
func (l *Listener) serve(c net.Conn) {
	defer l.finished()
	buf := heads.Get().(*[headSize]byte)
	n, end, err := l.readHead(c, buf[:l.opts.MaxHeaderBytes])
	l.mu.Lock()
	delete(l.reading, c)
	l.mu.Unlock()
	if err != nil && (n == 0 || !errors.Is(err, io.EOF)) {
		// Silence, a client gone or a failed TLS handshake: net/http
		// closes these unanswered too. Part of a head and then the end
		// of the stream is net/http's to answer, 400, below; a TLS
		// stream cut inside a record, or ended by an alert, is closed
		// here (net/http would answer those 400: only a broken client
		// reads it).
		heads.Put(buf)
		c.Close()
		return
	}
	var r *http.Request
	taken := false
	if end > 0 {
		r, taken = parseHead(string(buf[:end]), l.opts.Takes)
		taken = taken && websocket.IsUpgrade(r)
	}
	if !taken {
		replay := &Replay{Conn: c, pending: append([]byte(nil), buf[:n]...)}
		heads.Put(buf)
		select {
		case l.handoff <- replay:
		case <-l.done:
			c.Close()
		}
		return
	}
	var rest []byte
	if end < n {
		rest = append([]byte(nil), buf[end:n]...)
	}
	heads.Put(buf)
	r.RemoteAddr = c.RemoteAddr().String()
	w := &response{conn: c, rest: rest}
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				l.opts.Logger.Error("panic serving a request", "client", r.RemoteAddr, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			}
			if !w.hijacked {
				c.Close()
			}
		}
	}()
	l.handler.ServeHTTP(w, r)
	if !w.hijacked {
		w.finish(l.opts.HeaderTimeout)
	}
}

// readHead reads into buf until the empty line that ends a head: n bytes
// read, the head's end (0 if buf filled up first). A TLS connection's
// handshake is made first, within the same bound.
func (l *Listener) readHead(c net.Conn, buf []byte) (n, end int, err error) {
	deadline := time.Now().Add(l.opts.HeaderTimeout)
	c.SetReadDeadline(deadline)
	if tc, ok := c.(*tls.Conn); ok {
		c.SetWriteDeadline(deadline)
		if err := tc.Handshake(); err != nil {
			l.opts.Logger.Debug("TLS handshake failed", "client", c.RemoteAddr().String(), "error", err.Error())
			return 0, 0, err
		}
		c.SetWriteDeadline(time.Time{})
	}
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		from := max(n-3, 0)
		read := n
		n += m
		if i := bytes.Index(buf[from:n], headEnd); i >= 0 {
			return n, from + i + 4, nil
		}
		if bareLF(buf, read, n) {
			// net/http reads lines ending in a LF alone: the head is
			// its to answer now, not at the header timeout.
			return n, 0, nil
		}
		if err != nil {
			return n, 0, err
		}
	}
	return n, 0, nil
}

// bareLF reports whether buf[from:to] has a LF with no CR before it.
func bareLF(buf []byte, from, to int) bool {
	for i := from; i < to; i++ {
		if buf[i] == '\n' && (i == 0 || buf[i-1] != '\r') {
			return true
		}
	}
	return false
}

// response is the ResponseWriter of a request the front serves: hijacked
// (the handshake answered by the handler), or buffered and written with
// Connection: close once the handler returns.
type response struct {
	conn     net.Conn
	rest     []byte // read past the head
	header   http.Header
	status   int
	body     []byte
	hijacked bool
}

func (w *response) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

func (w *response) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, p...)
	return len(p), nil
}

// Hijack gives the handler the connection, and the bytes the client sent
// past its head buffered in the reader.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.status != 0 {
		return nil, nil, errors.New("front: hijack after a response was begun")
	}
	w.hijacked = true
	// No deadline left from reading the head, as net/http's Hijack.
	w.conn.SetDeadline(time.Time{})
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(w.rest), w.conn), max(len(w.rest), 16))
	if len(w.rest) > 0 {
		br.Peek(len(w.rest)) // buffered, as net/http's would be
	}
	return w.conn, bufio.NewReadWriter(br, bufio.NewWriterSize(w.conn, 16)), nil
}

// finish writes the response and closes the connection.
func (w *response) finish(timeout time.Duration) {
	defer w.conn.Close()
	if w.status == 0 {
		w.status = http.StatusOK
	}
	h := w.Header()
	h.Set("Connection", "close")
	h.Set("Content-Length", strconv.Itoa(len(w.body)))
	if h.Get("Date") == "" {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %03d %s\r\n", w.status, http.StatusText(w.status))
	h.Write(&b)
	b.WriteString("\r\n")
	b.Write(w.body)
	w.conn.SetWriteDeadline(time.Now().Add(timeout))
	io.WriteString(w.conn, b.String())
}

// Replay is a connection whose first bytes, read already, are read again
// before the rest.
type Replay struct {
	net.Conn
	pending []byte
}

// NewReplay gives back p on c.
func NewReplay(c net.Conn, p []byte) *Replay { return &Replay{Conn: c, pending: p} }

func (c *Replay) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// Pending reports whether bytes are still to be read again.
func (c *Replay) Pending() bool { return len(c.pending) > 0 }

// CloseWrite half-closes the connection, as net/http does before it lets
// go of one with input left unread.
func (c *Replay) CloseWrite() error { return CloseWrite(c.Conn) }

// CloseWrite half-closes c if c can (a socket, or a wrapper of one that
// passes it on), else does nothing: how the console port's connection
// wrappers pass the half-close net/http looks for on to what they wrap.
func CloseWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
