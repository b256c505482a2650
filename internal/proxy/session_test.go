package proxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"

	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/idle"
	"github.com/zun-wsproxy/zun-wsproxy/internal/loop"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// These tests drive a Session between a test client and a test peer that
// speaks Docker's attach protocol (a WebSocket server) or exec protocol (a
// raw stream), over loopback TCP. The real Docker engine is exercised by the
// end-to-end tests; here the peers inject exact byte splits and faults.

func TestMain(m *testing.M) {
	flag.BoolVar(&parkAll, "park-all", false, "run every session test with a Poller that parks after 20ms")
	engine := flag.String("engine", "loop", "the engine of every session test: loop (the default) or goroutines")
	flag.Parse()
	switch *engine {
	case "loop":
		onLoops = true
	case "goroutines":
	default:
		fmt.Fprintf(os.Stderr, "-engine %q: loop or goroutines\n", *engine)
		os.Exit(2)
	}
	if onLoops {
		g, err := loop.NewGroup(2)
		if err != nil {
			panic(err)
		}
		testLoops = g
		code := m.Run()
		g.Close()
		if err := goleak.Find(); err != nil && code == 0 {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
		os.Exit(code)
	}
	goleak.VerifyTestMain(m)
}

var parkAll bool

// onLoops: -engine loop (the default); testLoops serve the sessions then.
var (
	onLoops   bool
	testLoops *loop.Group
)

// peer is one end talking WebSocket frames. It behaves as real clients
// and Docker do: a close frame it receives is answered with one (unless
// it sent its own), and then it closes its side of the connection.
type peer struct {
	conn net.Conn
	r    *websocket.Reader
	w    *websocket.Writer
	// reading: a goroutine of the test reads the peer until its
	// connection ends (the harness does not).
	reading atomic.Bool
}

// closed answers a close frame of code.
func (p *peer) closed(code int) {
	if !p.w.CloseSent() {
		if !websocket.CloseCodeSendable(code) {
			code = websocket.CloseNormal
		}
		p.w.WriteClose(code, "")
	}
	if cw, ok := p.conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// drain reads and drops everything until the connection ends, answering
// pings and the close.
func (p *peer) drain() {
	if p.reading.Swap(true) {
		return
	}
	p.conn.SetReadDeadline(time.Time{})
	p.answerPings()
}

func (p *peer) send(t *testing.T, op websocket.Opcode, payload []byte) {
	t.Helper()
	if err := p.trySend(op, payload); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// trySend is send for goroutines other than the test's.
func (p *peer) trySend(op websocket.Opcode, payload []byte) error {
	buf := make([]byte, websocket.MaxHeaderLen+len(payload))
	copy(buf[websocket.MaxHeaderLen:], payload)
	return p.w.WriteFrame(true, op, buf, websocket.MaxHeaderLen, len(buf))
}

// message is a received data message, or a close frame.
type message struct {
	op      websocket.Opcode
	payload []byte
	code    int
	reason  string
}

// keepAnswering has a goroutine read the peer, answering pings, as
// Docker's attach endpoint does, until the connection ends.
func (p *peer) keepAnswering() {
	p.reading.Store(true)
	go p.answerPings()
}

// answerPings reads everything and answers pings (and the close), until
// the connection ends.
func (p *peer) answerPings() {
	var ctrl [125]byte
	for {
		hd, err := p.r.NextFrame()
		if err != nil {
			return
		}
		switch hd.Op {
		case websocket.OpPing:
			pl, _ := p.r.ReadControl(ctrl[:])
			p.w.WriteControl(websocket.OpPong, pl)
		case websocket.OpClose:
			pl, _ := p.r.ReadControl(ctrl[:])
			code, _, _ := websocket.ParseClosePayload(pl)
			p.closed(code)
		}
	}
}

// recvAnswering is recv that answers pings, as real clients do.
func (p *peer) recvAnswering(t *testing.T) message {
	t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ctrl [125]byte
	for {
		h, err := p.r.NextFrame()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if h.Op == websocket.OpPing {
			pl, _ := p.r.ReadControl(ctrl[:])
			p.w.WriteControl(websocket.OpPong, pl)
			continue
		}
		if h.Op == websocket.OpClose {
			pl, _ := p.r.ReadControl(ctrl[:])
			code, reason, _ := websocket.ParseClosePayload(pl)
			p.closed(code)
			return message{op: websocket.OpClose, code: code, reason: reason}
		}
		data, _ := io.ReadAll(p.r)
		return message{op: h.Op, payload: data}
	}
}

func (p *peer) recv(t *testing.T) message {
	t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		h, err := p.r.NextFrame()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		switch h.Op {
		case websocket.OpPing, websocket.OpPong:
			continue
		case websocket.OpClose:
			var ctrl [125]byte
			pl, _ := p.r.ReadControl(ctrl[:])
			code, reason, err := websocket.ParseClosePayload(pl)
			if err != nil {
				t.Fatalf("close payload: %v", err)
			}
			p.closed(code)
			return message{op: websocket.OpClose, code: code, reason: reason}
		}
		data, err := io.ReadAll(p.r)
		if err != nil {
			t.Fatalf("recv payload: %v", err)
		}
		return message{op: h.Op, payload: data}
	}
}

// recvMessage receives one whole data message and checks its framing as
// a strict peer does (RFC 6455 section 5.4): a text or binary frame, then
// continuation frames up to the one with FIN, control frames between
// them allowed.
func (p *peer) recvMessage(t *testing.T) message {
	t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m message
	var ctrl [125]byte
	for frames := 0; ; {
		h, err := p.r.NextFrame()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if h.Op.IsControl() {
			pl, _ := p.r.ReadControl(ctrl[:])
			if h.Op == websocket.OpClose {
				code, reason, _ := websocket.ParseClosePayload(pl)
				p.closed(code)
				t.Fatalf("closed with %d %q after %d frames of a message", code, reason, frames)
			}
			continue
		}
		switch {
		case frames == 0 && h.Op == websocket.OpContinuation:
			t.Fatal("a message begins with a continuation frame")
		case frames > 0 && h.Op != websocket.OpContinuation:
			t.Fatalf("frame %d of a message is %v, not a continuation", frames+1, h.Op)
		}
		if frames == 0 {
			m.op = h.Op
		}
		frames++
		data, err := io.ReadAll(p.r)
		if err != nil {
			t.Fatalf("recv payload: %v", err)
		}
		m.payload = append(m.payload, data...)
		if h.Fin {
			return m
		}
	}
}

// sendFragments sends payload as one message of len(cuts)+1 frames, cut
// at the given offsets.
func (p *peer) sendFragments(t *testing.T, op websocket.Opcode, payload []byte, cuts ...int) {
	t.Helper()
	if err := writeFragments(p.w, op, payload, cuts...); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func writeFragments(w *websocket.Writer, op websocket.Opcode, payload []byte, cuts ...int) error {
	from := 0
	for i, to := range append(cuts, len(payload)) {
		buf := append(make([]byte, websocket.MaxHeaderLen), payload[from:to]...)
		if i > 0 {
			op = websocket.OpContinuation
		}
		if err := w.WriteFrame(i == len(cuts), op, buf, websocket.MaxHeaderLen, len(buf)); err != nil {
			return err
		}
		from = to
	}
	return nil
}

// settle is testenv.Settle.
const settle = testenv.Settle

type harness struct {
	sess    *Session
	client  *peer
	docker  *peer    // attach
	exec    net.Conn // exec
	results chan Result
	cancel  context.CancelFunc
}

func start(t *testing.T, framed bool, opts Options) *harness {
	t.Helper()
	return startSetup(t, setup{framed: framed, opts: opts})
}

// startAfter is start for a client connection and a container stream of
// which clientEarly and containerEarly were read along with their
// handshakes.
func startAfter(t *testing.T, framed bool, opts Options, clientEarly, containerEarly []byte) *harness {
	t.Helper()
	return startSetup(t, setup{framed: framed, opts: opts, clientEarly: clientEarly, containerEarly: containerEarly})
}

// setup is how a test session starts.
type setup struct {
	framed                      bool // attach (a WebSocket), else exec
	opts                        Options
	clientEarly, containerEarly []byte // read with the handshakes
	// tightClient, tightContainer: the smallest socket buffers on that
	// side, so that a peer that reads nothing soon blocks writes.
	tightClient, tightContainer bool
}

func startSetup(t *testing.T, su setup) *harness {
	t.Helper()
	framed, opts := su.framed, su.opts
	if opts.Poller == nil && parkAll {
		p := idle.New()
		t.Cleanup(func() { p.Close() })
		opts.Poller, opts.IdleAfter = p, 20*time.Millisecond
	}
	if onLoops && opts.Loop == nil {
		if opts.Poller == nil {
			p := idle.New()
			t.Cleanup(func() { p.Close() })
			opts.Poller = p
		}
		opts.Loop = testLoops.Pick()
	}
	pair := func(tight bool) (net.Conn, net.Conn) {
		if tight {
			return testenv.TightSocketPair(t)
		}
		return testenv.SocketPair(t, "tcp")
	}
	clientEnd, proxyClientEnd := pair(su.tightClient)
	proxyBackendEnd, backendEnd := pair(su.tightContainer)
	h := &harness{
		client:  &peer{conn: clientEnd, r: websocket.NewReader(clientEnd, websocket.ReaderOptions{}), w: websocket.NewWriter(clientEnd, true)},
		results: make(chan Result, 1),
	}
	if framed {
		h.docker = &peer{conn: backendEnd, r: websocket.NewReader(backendEnd, websocket.ReaderOptions{FromClient: true}), w: websocket.NewWriter(backendEnd, false)}
	} else {
		h.exec = backendEnd
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	s := New(proxyClientEnd, su.clientEarly, console.Stream{Conn: proxyBackendEnd, Framed: framed, Buffered: su.containerEarly}, opts)
	h.sess = s
	go func() { h.results <- s.Run(ctx) }()
	t.Cleanup(func() {
		h.drain()
		if h.exec != nil {
			h.exec.Close()
		}
		cancel()
		select {
		case <-h.results:
		case <-time.After(settle):
			t.Error("session did not end")
		}
	})
	return h
}

// drain has the peers take what the proxy sends from now on, its close
// frames among it, and answer them, as clients and Docker do: the
// session ends without waiting for them.
func (h *harness) drain() {
	go h.client.drain()
	if h.docker != nil {
		go h.docker.drain()
	}
}

// startClocked is start with a fakeClock, once the session has started
// by it.
func startClocked(t *testing.T, framed bool, opts Options) (*harness, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	opts.Clock = clock
	h := start(t, framed, opts)
	if !testenv.WaitFor(settle, clock.armed) {
		t.Fatal("the session did not start its checks")
	}
	return h, clock
}

// running fails the test if the session has ended.
func (h *harness) running(t *testing.T, when string) {
	t.Helper()
	select {
	case r := <-h.results:
		h.results <- r // for Cleanup
		t.Fatalf("%s: the session ended: %s", when, r.Reason)
	default:
	}
}

// result waits for the session's end, the peers draining meanwhile.
func (h *harness) result(t *testing.T) Result {
	t.Helper()
	h.drain()
	return h.ended(t)
}

// ended waits for the session's end while the peers read nothing.
func (h *harness) ended(t *testing.T) Result {
	t.Helper()
	select {
	case r := <-h.results:
		h.results <- r // for Cleanup
		return r
	case <-time.After(settle):
		t.Fatal("session did not end")
	}
	return Result{}
}

func TestAttachBothWays(t *testing.T) {
	t.Parallel()
	h := start(t, true, Options{})
	h.client.send(t, websocket.OpBinary, []byte("ls\n"))
	if m := h.docker.recv(t); string(m.payload) != "ls\n" || m.op != websocket.OpBinary {
		t.Fatalf("docker got %v %q", m.op, m.payload)
	}
	h.client.send(t, websocket.OpText, []byte("text keys"))
	if m := h.docker.recv(t); string(m.payload) != "text keys" || m.op != websocket.OpText {
		t.Fatalf("docker got %v %q", m.op, m.payload)
	}
	h.docker.send(t, websocket.OpBinary, []byte("bin\nboot\n"))
	if m := h.client.recv(t); string(m.payload) != "bin\nboot\n" || m.op != websocket.OpBinary {
		t.Fatalf("client got %v %q", m.op, m.payload)
	}
	// A big message crosses in several chunks and arrives intact.
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000)
	go h.client.trySend(websocket.OpBinary, big)
	var got []byte
	for len(got) < len(big) {
		got = append(got, h.docker.recv(t).payload...)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("big message changed on its way")
	}
}

// Docker splits output anywhere, in frames of any size: the client gets
// every byte, in binary messages that each are UTF-8 by themselves.
// Docker below API 1.28 (Zun's default is 1.26) sends attach output in text
// messages with whatever bytes the process printed. The client gets binary
// messages (base64 text under base64), the bytes unchanged: a browser fails
// the whole connection on a text message that is not UTF-8.
func TestAttachOutputIsBinaryWhateverDockerSends(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		encoding Encoding
		dockerOp websocket.Opcode
		output   string
	}{
		{"text utf-8", Binary, websocket.OpText, "€ é 中\n"},
		{"text 0xff", Binary, websocket.OpText, "\xff\xfe\n"},
		{"text latin-1", Binary, websocket.OpText, "caf\xe9\n"},
		{"binary 0xff", Binary, websocket.OpBinary, "\xff\n"},
		{"base64 text 0xff", Base64, websocket.OpText, "\xff\xfe\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := start(t, true, Options{Encoding: c.encoding})
			h.docker.send(t, c.dockerOp, []byte(c.output))
			m := h.client.recv(t)
			got, wantOp := m.payload, websocket.OpBinary
			if c.encoding == Base64 {
				wantOp = websocket.OpText
				var err error
				if got, err = base64.StdEncoding.DecodeString(string(m.payload)); err != nil {
					t.Fatalf("base64 message %q: %v", m.payload, err)
				}
			}
			if m.op != wantOp || string(got) != c.output {
				t.Fatalf("client got %v %q, want %v %q", m.op, got, wantOp, c.output)
			}
		})
	}
}

func TestAttachNeverSplitsCharacters(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		text  string
		sizes []int // frame sizes, used in turn
	}{
		{"7-byte frames", strings.Repeat("€uro 😀 ", 500), []int{7}},
		// Below, at and above a chunk.
		{"bulk frames", strings.Repeat("€uro 😀 ascii ", 40000),
			[]int{smallChunk, smallChunk + 1, 8 << 10, chunk - 1, chunk, chunk + 1, 3*chunk + 7, 200_001}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := start(t, true, Options{})
			text := []byte(c.text)
			go func() {
				for i, k := 0, 0; i < len(text); k++ {
					n := min(c.sizes[k%len(c.sizes)], len(text)-i)
					if h.docker.trySend(websocket.OpBinary, text[i:i+n]) != nil {
						return
					}
					i += n
				}
			}()
			h.client.recvOutput(t, text)
		})
	}
}

// recvOutput receives messages until it has len(want) bytes, and checks
// they are want, in binary messages that each are UTF-8 by themselves.
func (p *peer) recvOutput(t *testing.T, want []byte) {
	t.Helper()
	var got []byte
	for len(got) < len(want) {
		m := p.recv(t)
		if m.op != websocket.OpBinary {
			t.Fatalf("got %v after %d bytes", m.op, len(got))
		}
		if !utf8.Valid(m.payload) {
			t.Fatalf("message of %d bytes after %d is not UTF-8 by itself: %x", len(m.payload), len(got), m.payload[:min(len(m.payload), 16)])
		}
		got = append(got, m.payload...)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes changed")
	}
}

// Docker may send output right behind its handshake: what was read with
// it comes first, however much it is.
func TestAttachOutputReadWithHandshake(t *testing.T) {
	t.Parallel()
	var frames bytes.Buffer
	var want []byte
	w := websocket.NewWriter(&frames, false)
	for i := range 4 {
		payload := bytes.Repeat([]byte{'a' + byte(i)}, chunk+i)
		buf := append(make([]byte, websocket.MaxHeaderLen), payload...)
		w.WriteFrame(true, websocket.OpBinary, buf, websocket.MaxHeaderLen, len(buf))
		want = append(want, payload...)
	}
	for _, early := range []int{100, chunk + 1000} {
		t.Run(fmt.Sprintf("early=%d", early), func(t *testing.T) {
			h := startAfter(t, true, Options{}, nil, frames.Bytes()[:early])
			go h.docker.conn.Write(frames.Bytes()[early:])
			h.client.recvOutput(t, want)
		})
	}
}

// A client may send frames right behind its handshake, and the proxy
// reads them along with it: however many bytes that is, and with a pong
// among them (after which a direction may park at once), every frame
// reaches the container.
func TestClientFramesReadWithHandshake(t *testing.T) {
	t.Parallel()
	// A 250-byte frame (242 bytes of payload) and a 6-byte pong fill the
	// reader's 256-byte read-ahead exactly; a 300-byte frame follows.
	var wire bytes.Buffer
	w := websocket.NewWriter(&wire, true)
	a, b := bytes.Repeat([]byte("a"), 242), bytes.Repeat([]byte("b"), 300)
	writeFragments(w, websocket.OpBinary, a)
	w.WriteControl(websocket.OpPong, nil)
	writeFragments(w, websocket.OpBinary, b)
	for _, early := range []int{100, 256, wire.Len()} {
		t.Run(fmt.Sprintf("early=%d", early), func(t *testing.T) {
			t.Parallel()
			opts, _ := parkedOptions(t)
			opts.CloseTimeout = 100 * time.Millisecond
			h := startAfter(t, true, opts, wire.Bytes()[:early], nil)
			if rest := wire.Bytes()[early:]; len(rest) > 0 {
				h.client.conn.Write(rest)
			}
			for _, want := range [][]byte{a, b} {
				if m := h.docker.recvMessage(t); !bytes.Equal(m.payload, want) {
					t.Fatalf("docker got %d bytes %.10q…, want %d bytes %.10q…", len(m.payload), m.payload, len(want), want)
				}
			}
		})
	}
}

func TestAttachContainerExit(t *testing.T) {
	t.Parallel()
	h := start(t, true, Options{})
	// The output ends inside a character: it is flushed as is at the end.
	h.docker.send(t, websocket.OpBinary, []byte{'b', 'y', 'e', 0xE2, 0x82})
	h.docker.w.WriteClose(websocket.CloseNormal, "")
	if m := h.client.recv(t); string(m.payload) != "bye" {
		t.Fatalf("client got %q", m.payload)
	}
	if m := h.client.recv(t); !bytes.Equal(m.payload, []byte{0xE2, 0x82}) {
		t.Fatalf("client got %x, want the held-back bytes", m.payload)
	}
	m := h.client.recv(t)
	if m.op != websocket.OpClose || m.code != websocket.CloseNormal || m.reason != "container exited" {
		t.Fatalf("client got %+v", m)
	}
	h.client.w.WriteClose(websocket.CloseNormal, "")
	r := h.result(t)
	if r.Reason != "container exited" || r.ClientCode != 1000 || r.ToClient != 5 {
		t.Fatalf("result %+v", r)
	}
	assertClosed(t, h.client.conn)
}

// A client's close reaches Docker as a close, and the proxy closes the
// attach socket then, without waiting for Docker's answer (for which it
// would wait up to CloseTimeout).
func TestAttachClientCloses(t *testing.T) {
	t.Parallel()
	h := start(t, true, Options{CloseTimeout: time.Minute})
	h.client.w.WriteClose(websocket.CloseNormal, "bye")
	hd, err := h.docker.r.NextFrame()
	if err != nil || hd.Op != websocket.OpClose {
		t.Fatalf("docker got %+v %v, want a close", hd, err)
	}
	assertClosed(t, h.docker.conn) // Docker has not answered
	if m := h.client.recv(t); m.op != websocket.OpClose || m.code != websocket.CloseNormal {
		t.Fatalf("client got %+v", m)
	}
	if r := h.result(t); !strings.HasPrefix(r.Reason, "client closed") {
		t.Fatalf("result %+v", r)
	}
}

// A client that closed first sends nothing more (RFC 6455 section
// 5.5.1): once answered, its connection is closed at once, not lingered
// on until the client closes its end (here: never), and the session ends
// then. (A client's answer to the proxy's close, on the loop engine, is
// read by the lingering close itself, which then waits for the client's
// FIN as before.)
func TestClientThatClosedIsClosedAtOnce(t *testing.T) {
	t.Parallel()
	h := start(t, true, Options{CloseTimeout: time.Minute})
	h.client.w.WriteClose(websocket.CloseNormal, "")
	// The proxy's answer, read without the peer's own half-close
	// (peer.recv's).
	h.client.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	hd, err := h.client.r.NextFrame()
	if err != nil || hd.Op != websocket.OpClose {
		t.Fatalf("client got %+v %v, want a close", hd, err)
	}
	var ctrl [125]byte
	pl, _ := h.client.r.ReadControl(ctrl[:])
	if code, _, _ := websocket.ParseClosePayload(pl); code != websocket.CloseNormal {
		t.Fatalf("close code %d, want 1000", code)
	}
	// The client keeps its end open and reads on: the proxy's end closes,
	// with a FIN (EOF), not a reset, and the session ends, well within
	// CloseTimeout.
	h.client.conn.SetReadDeadline(time.Now().Add(settle))
	if n, err := h.client.conn.Read(ctrl[:]); n != 0 || err != io.EOF {
		t.Fatalf("after the close: %d bytes, %v; want EOF", n, err)
	}
	h.ended(t)
}

func TestClientVanishes(t *testing.T) {
	t.Parallel()
	h := start(t, true, Options{})
	h.client.conn.Close()
	assertClosed(t, h.docker.conn)
	if r := h.result(t); !strings.HasPrefix(r.Reason, "client disconnected") {
		t.Fatalf("result %+v", r)
	}
}

func TestClientProtocolError(t *testing.T) {
	t.Parallel()
	h := start(t, true, Options{})
	// An unmasked frame from a client breaks RFC 6455.
	h.client.conn.Write([]byte{0x82, 0x01, 'x'})
	m := h.client.recv(t)
	if m.op != websocket.OpClose || m.code != websocket.CloseProtocolError {
		t.Fatalf("client got %+v", m)
	}
	if r := h.result(t); !strings.HasPrefix(r.Reason, "client protocol error") {
		t.Fatalf("result %+v", r)
	}
}

func TestMessageTooBig(t *testing.T) {
	t.Parallel()
	h := start(t, true, Options{MaxMessage: 1024})
	go h.client.trySend(websocket.OpBinary, make([]byte, 4096))
	if m := h.client.recv(t); m.op != websocket.OpClose || m.code != websocket.CloseTooBig {
		t.Fatalf("client got %+v", m)
	}
}

func TestPingAnswered(t *testing.T) {
	t.Parallel()
	h := start(t, true, Options{})
	h.client.w.WriteControl(websocket.OpPing, []byte("p1"))
	h.client.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	hd, err := h.client.r.NextFrame()
	if err != nil || hd.Op != websocket.OpPong {
		t.Fatalf("got %+v %v", hd, err)
	}
	var ctrl [125]byte
	if p, _ := h.client.r.ReadControl(ctrl[:]); string(p) != "p1" {
		t.Fatalf("pong payload %q", p)
	}
}

func TestShutdownClosesWith1001(t *testing.T) {
	t.Parallel()
	h := start(t, true, Options{})
	h.cancel()
	if m := h.client.recv(t); m.op != websocket.OpClose || m.code != websocket.CloseGoingAway {
		t.Fatalf("client got %+v", m)
	}
	if m := h.docker.recv(t); m.op != websocket.OpClose || m.code != websocket.CloseGoingAway {
		t.Fatalf("docker got %+v", m)
	}
}

func TestExecStream(t *testing.T) {
	t.Parallel()
	h := start(t, false, Options{})
	h.client.send(t, websocket.OpBinary, []byte("echo hi\n"))
	buf := make([]byte, 64)
	h.exec.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.ReadAtLeast(h.exec, buf, 8)
	if err != nil || string(buf[:n]) != "echo hi\n" {
		t.Fatalf("exec got %q %v", buf[:n], err)
	}
	h.exec.Write([]byte("hi\r\n"))
	if m := h.client.recv(t); string(m.payload) != "hi\r\n" || m.op != websocket.OpBinary {
		t.Fatalf("client got %+v", m)
	}
	h.exec.Close() // the exec process ended
	if m := h.client.recv(t); m.op != websocket.OpClose || m.code != 1000 || m.reason != "exec session ended" {
		t.Fatalf("client got %+v", m)
	}
}

func TestBase64Subprotocol(t *testing.T) {
	t.Parallel()
	h := start(t, false, Options{Encoding: Base64})
	// A base64 message split across two frames at an awkward place.
	enc := base64.StdEncoding.EncodeToString([]byte("echo €\n"))
	h.client.w.WriteFrame(false, websocket.OpText, append(make([]byte, 14), enc[:5]...), 14, 19)
	rest := []byte(enc[5:])
	h.client.w.WriteFrame(true, websocket.OpContinuation, append(make([]byte, 14), rest...), 14, 14+len(rest))
	buf := make([]byte, 64)
	h.exec.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.ReadAtLeast(h.exec, buf, len("echo €\n"))
	if err != nil || string(buf[:n]) != "echo €\n" {
		t.Fatalf("exec got %q %v", buf[:n], err)
	}
	h.exec.Write([]byte("€\n"))
	m := h.client.recv(t)
	dec, err := base64.StdEncoding.DecodeString(string(m.payload))
	if m.op != websocket.OpText || err != nil || string(dec) != "€\n" {
		t.Fatalf("client got %v %q (%v)", m.op, m.payload, err)
	}
	h.client.send(t, websocket.OpText, []byte("not base64!"))
	if m := h.client.recv(t); m.op != websocket.OpClose || m.code != websocket.CloseInvalidPayload {
		t.Fatalf("client got %+v", m)
	}
}

// A fragmented client message reaches Docker as one message: a first
// frame, then continuation frames (RFC 6455 section 5.4), under base64
// too, where each fragment is decoded on its own way through.
func TestFragmentedMessageStaysOneMessage(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("paste €\n"), 30000) // over two chunks
	for _, c := range []struct {
		name     string
		encoding Encoding
		text     []byte
		cuts     []int // where the client cuts its message into frames
	}{
		{"binary", Binary, []byte("echo hi\n"), []int{3, 7}},
		{"base64", Base64, []byte("echo €\n"), []int{5}},
		{"base64, fragments of less than a quantum", Base64, []byte("echo €\n"), []int{2, 3, 6}},
		{"base64, bulk", Base64, big, []int{chunk + 1, 3*chunk + 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, true, Options{Encoding: c.encoding, CloseTimeout: 100 * time.Millisecond})
			payload, op := c.text, websocket.OpBinary
			if c.encoding == Base64 {
				payload, op = []byte(base64.StdEncoding.EncodeToString(c.text)), websocket.OpText
			}
			go writeFragments(h.client.w, op, payload, c.cuts...)
			m := h.docker.recvMessage(t)
			if m.op != websocket.OpBinary || !bytes.Equal(m.payload, c.text) {
				t.Fatalf("docker got a %v message of %d bytes, want binary %d bytes", m.op, len(m.payload), len(c.text))
			}
			// The next message is a message of its own.
			h.client.send(t, websocket.OpBinary, []byte("x"))
			if m := h.docker.recvMessage(t); string(m.payload) != "x" {
				t.Fatalf("docker got %q after the fragmented message", m.payload)
			}
		})
	}
}

// A client that stops reading must stop the proxy reading from the
// container, not make it buffer.
func TestBackpressure(t *testing.T) {
	t.Parallel()
	h := start(t, false, Options{})
	var written int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		chunk := make([]byte, 64<<10)
		for written < 256<<20 {
			// A write that waits this long is held back.
			h.exec.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
			n, err := h.exec.Write(chunk)
			written += int64(n)
			if err != nil {
				return
			}
		}
	}()
	<-done
	// Only socket buffers (a few MiB each on loopback) and one chunk may
	// hold what the client did not read.
	if written > 64<<20 {
		t.Fatalf("container wrote %d MiB to a client that reads nothing", written>>20)
	}
	t.Logf("container could write %d KiB before backpressure stopped it", written>>10)
}

// assertClosed reads c until the proxy closes it (at once, in the tests
// that call it: a hang fails after settle).
func assertClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(settle))
	buf := make([]byte, 1024)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("connection still open")
		}
		return
	}
}

func TestFragmentedMessageTooBig(t *testing.T) {
	t.Parallel()
	h := start(t, true, Options{MaxMessage: 1000})
	frag := append(make([]byte, websocket.MaxHeaderLen), make([]byte, 600)...)
	h.client.w.WriteFrame(false, websocket.OpBinary, frag, websocket.MaxHeaderLen, len(frag))
	if m := h.docker.recv(t); len(m.payload) != 600 {
		t.Fatalf("first fragment: %d bytes", len(m.payload))
	}
	frag = append(make([]byte, websocket.MaxHeaderLen), make([]byte, 600)...)
	h.client.w.WriteFrame(true, websocket.OpContinuation, frag, websocket.MaxHeaderLen, len(frag))
	if m := h.client.recv(t); m.op != websocket.OpClose || m.code != websocket.CloseTooBig {
		t.Fatalf("client got %+v", m)
	}
}

// A Docker attach socket that stops answering is declared dead after two
// heartbeat intervals, and not before; the client is told with 1011.
func TestHeartbeatBackendDead(t *testing.T) {
	t.Parallel()
	const hb, step = 30 * time.Second, 15 * time.Second
	h, clock := startClocked(t, true, Options{Heartbeat: hb, CheckInterval: step})
	// The docker peer reads nothing and answers no ping.
	for elapsed := step; elapsed <= 2*hb; elapsed += step {
		<-clock.Advance(step)
		h.running(t, fmt.Sprintf("%v without an answer", elapsed))
	}
	// Past two intervals: the next check lets Docker go. On the loop
	// engine a check re-arms its timer on the loop, possibly after this
	// advance: keep moving the clock until the session ends.
	clock.Advance(step)
	nudged := make(chan struct{})
	defer close(nudged)
	go func() {
		for {
			select {
			case <-nudged:
				return
			case <-time.After(100 * time.Millisecond):
				clock.Advance(step)
			}
		}
	}()
	m := h.client.recvAnswering(t)
	if m.op != websocket.OpClose || m.code != websocket.CloseInternalError {
		t.Fatalf("client got %+v", m)
	}
	if r := h.result(t); !strings.Contains(r.Reason, "no answer to pings") {
		t.Fatalf("result %+v", r)
	}
}

// A client that answers pings keeps its session; one that does not is
// closed with 1001 after two heartbeat intervals, and not before.
func TestHeartbeatClient(t *testing.T) {
	t.Parallel()
	const hb, step = 30 * time.Second, 15 * time.Second
	h, clock := startClocked(t, true, Options{Heartbeat: hb, CheckInterval: step, PingClient: true})
	// Docker answers pings (as x/net/websocket does); the client too, for
	// four intervals.
	h.docker.keepAnswering()
	h.client.conn.SetReadDeadline(time.Now().Add(settle))
	var ctrl [125]byte
	nextPing := func(answer bool) websocket.Header {
		t.Helper()
		for {
			hd, err := h.client.r.NextFrame()
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			p, _ := h.client.r.ReadControl(ctrl[:])
			switch hd.Op {
			case websocket.OpPing:
				if answer {
					h.client.w.WriteControl(websocket.OpPong, p)
				}
				return hd
			case websocket.OpClose:
				code, reason, _ := websocket.ParseClosePayload(p)
				h.client.closed(code)
				if code != websocket.CloseGoingAway || reason != "no answer to pings" {
					t.Fatalf("client closed with %d %q", code, reason)
				}
				return hd
			}
		}
	}
	// The pongs of a check reach the proxy before the next check.
	pongs := func(seen ...*atomic.Int64) {
		t.Helper()
		now := clock.Now().UnixNano()
		for _, s := range seen {
			if !testenv.WaitFor(settle, func() bool { return s.Load() == now }) {
				t.Fatal("a pong was not seen")
			}
		}
	}
	for elapsed := step; elapsed <= 4*hb; elapsed += step {
		checked := clock.Advance(step)
		if hd := nextPing(true); hd.Op != websocket.OpPing {
			t.Fatalf("%v answering pings: the session ended", elapsed)
		}
		<-checked
		pongs(&h.sess.clientSeen, &h.sess.backendSeen)
	}
	// Now the client goes silent: it is let go at the first check more
	// than two intervals after its last pong.
	for elapsed := step; ; elapsed += step {
		checked := clock.Advance(step)
		if hd := nextPing(false); hd.Op == websocket.OpClose {
			if elapsed != 2*hb+step {
				t.Fatalf("let go %v after its last pong, want at the first check after two intervals (%v)", elapsed, 2*hb+step)
			}
			break
		}
		<-checked
		pongs(&h.sess.backendSeen)
	}
}

// idle_timeout ends a session that many seconds after its last data
// either way, and not before; max_session_duration after its start,
// data or not.
func TestIdleAndMaxDuration(t *testing.T) {
	t.Parallel()
	const limit, step = time.Minute, 15 * time.Second
	h, clock := startClocked(t, false, Options{IdleTimeout: limit, CheckInterval: step})
	<-clock.Advance(3 * step)
	h.running(t, "idle 45s")
	// Data at 45s: the session is idle from then on.
	before := h.sess.dataSeen.Load()
	h.client.send(t, websocket.OpBinary, []byte("x"))
	if !testenv.WaitFor(settle, func() bool { return h.sess.dataSeen.Load() != before }) {
		t.Fatal("the client's data was not seen")
	}
	for elapsed := step; elapsed < limit; elapsed += step {
		<-clock.Advance(step)
		h.running(t, fmt.Sprintf("idle %v after data", elapsed))
	}
	clock.Advance(step)
	if m := h.client.recv(t); m.op != websocket.OpClose || m.code != websocket.CloseGoingAway || m.reason != "session idle for idle_timeout" {
		t.Fatalf("idle: client got %+v", m)
	}

	h, clock = startClocked(t, false, Options{MaxDuration: limit, CheckInterval: step})
	for elapsed := step; elapsed < limit; elapsed += step {
		<-clock.Advance(step)
		h.client.send(t, websocket.OpBinary, []byte("busy"))
		h.running(t, fmt.Sprintf("%v into the session", elapsed))
	}
	clock.Advance(step)
	if m := h.client.recv(t); m.op != websocket.OpClose || m.reason != "session reached max_session_duration" {
		t.Fatalf("max duration: client got %+v", m)
	}
}

// A client that takes no output is disconnected after WriteTimeout.
func TestWriteTimeout(t *testing.T) {
	t.Parallel()
	h := start(t, false, Options{WriteTimeout: 300 * time.Millisecond})
	go func() {
		chunk := make([]byte, 64<<10)
		for {
			h.exec.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := h.exec.Write(chunk); err != nil {
				return
			}
		}
	}()
	r := h.ended(t)
	if !strings.Contains(r.Reason, "write to client") {
		t.Fatalf("result %+v", r)
	}
}

// Clients outside the web console are not pinged (Zun's CLI would stall).
func TestHeartbeatSparesCLIClients(t *testing.T) {
	t.Parallel()
	const hb = 30 * time.Second
	h, clock := startClocked(t, true, Options{Heartbeat: hb, CheckInterval: hb / 2})
	h.docker.keepAnswering()
	for range 6 {
		<-clock.Advance(hb / 2) // a ping to the client would be written by now
		// Docker's pong reaches the proxy before the next check.
		now := clock.Now().UnixNano()
		if !testenv.WaitFor(settle, func() bool { return h.sess.backendSeen.Load() == now }) {
			t.Fatal("Docker's pong was not seen")
		}
	}
	h.client.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if hd, err := h.client.r.NextFrame(); err == nil {
		t.Fatalf("a CLI client got a %v frame while idle", hd.Op)
	}
	h.running(t, "three intervals")
	h.client.send(t, websocket.OpBinary, []byte("still here"))
}

// recordingTap keeps what a Tap sees.
type recordingTap struct {
	mu      sync.Mutex
	in, out []byte
	sizes   [][2]int
	// fail names the method that returns err instead.
	fail string
	err  error
}

func (r *recordingTap) Output(p []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail == "output" {
		return r.err
	}
	r.out = append(r.out, p...)
	return nil
}

func (r *recordingTap) Input(p []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail == "input" {
		return r.err
	}
	r.in = append(r.in, p...)
	return nil
}

func (r *recordingTap) Resize(rows, cols int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail == "resize" {
		return r.err
	}
	r.sizes = append(r.sizes, [2]int{rows, cols})
	return nil
}

func TestTapSeesWhatIsForwarded(t *testing.T) {
	t.Parallel()
	tap := &recordingTap{}
	h := start(t, true, Options{Tap: tap, Resize: func(context.Context, int, int) error { return nil }})
	h.client.send(t, websocket.OpBinary, []byte("ls\n"))
	h.docker.recv(t)
	h.client.send(t, websocket.OpText, []byte(`{"type":"resize","rows":40,"cols":120}`))
	big := bytes.Repeat([]byte("output €"), 20000)
	h.docker.send(t, websocket.OpBinary, big)
	var got []byte
	for len(got) < len(big) {
		got = append(got, h.client.recv(t).payload...)
	}
	h.docker.send(t, websocket.OpBinary, []byte("$ "))
	h.client.recv(t)
	h.cancel()
	h.result(t)
	tap.mu.Lock()
	defer tap.mu.Unlock()
	if string(tap.in) != "ls\n" {
		t.Errorf("tap input %q, want %q", tap.in, "ls\n")
	}
	if want := append(big, "$ "...); !bytes.Equal(tap.out, want) {
		t.Errorf("tap output: %d bytes, want the %d bytes the client got", len(tap.out), len(want))
	}
	if len(tap.sizes) != 1 || tap.sizes[0] != [2]int{40, 120} {
		t.Errorf("tap resizes %v, want [[40 120]]", tap.sizes)
	}
}

// A Tap that refuses data ends the session: what it refused goes neither
// to the client nor to the container, and the client is told why.
func TestTapRefusal(t *testing.T) {
	t.Parallel()
	limit := &TapError{Code: websocket.ClosePolicyViolation, Reason: "limit reached", End: "limited", Err: errors.New("too much")}
	cases := []struct {
		fail        string
		err         error
		code        int
		reason, end string
	}{
		{"output", limit, websocket.ClosePolicyViolation, "limit reached", "limited"},
		{"input", limit, websocket.ClosePolicyViolation, "limit reached", "limited"},
		{"resize", limit, websocket.ClosePolicyViolation, "limit reached", "limited"},
		{"output", errors.New("disk full"), websocket.CloseInternalError, "internal error", EndTap},
	}
	for _, c := range cases {
		t.Run(c.fail+" "+c.end, func(t *testing.T) {
			tap := &recordingTap{fail: c.fail, err: c.err}
			h := start(t, true, Options{Tap: tap, Resize: func(context.Context, int, int) error { return nil }})
			switch c.fail {
			case "output":
				h.docker.send(t, websocket.OpBinary, []byte("secret output"))
			case "input":
				h.client.send(t, websocket.OpBinary, []byte("typed"))
			case "resize":
				h.client.send(t, websocket.OpText, []byte(`{"type":"resize","rows":40,"cols":120}`))
			}
			f := h.client.recv(t)
			if f.op != websocket.OpClose {
				t.Fatalf("client got a %v frame %q, want the close", f.op, f.payload)
			}
			if f.code != c.code || f.reason != c.reason {
				t.Fatalf("client closed with %d %q, want %d %q", f.code, f.reason, c.code, c.reason)
			}
			h.client.w.WriteClose(f.code, "") // as clients do: no wait for it
			h.client.conn.Close()
			if c.fail == "input" {
				if f := h.docker.recv(t); f.op != websocket.OpClose {
					t.Fatalf("the container got a %v frame %q, want the close", f.op, f.payload)
				}
			}
			r := h.result(t)
			if r.End != c.end || r.ClientCode != c.code || !strings.Contains(r.Reason, c.err.Error()) {
				t.Fatalf("result %+v", r)
			}
		})
	}
}

// slowReader takes at most 1 KiB a millisecond: a client on a slow link.
type slowReader struct{ r io.Reader }

func (s slowReader) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	return s.r.Read(p[:min(len(p), 1024)])
}

// output has Docker send payload until its connection ends, pausing
// between messages.
func (h *harness) output(payload []byte, pause time.Duration) {
	go func() {
		for {
			h.docker.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if h.docker.trySend(websocket.OpBinary, payload) != nil {
				return
			}
			time.Sleep(pause)
		}
	}()
}

// letGoSilent waits for the session to end as one whose client answers
// no pings, within d.
func (h *harness) letGoSilent(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case res := <-h.results:
		h.results <- res
		if res.End != EndClientNoPong {
			t.Fatalf("ended with %s (%s), want %s", res.End, res.Reason, EndClientNoPong)
		}
	case <-time.After(d):
		t.Fatalf("a client answering no ping is still served %v later", d)
	}
}

// A pinged client that takes output slower than the container makes it,
// but steadily, answering every ping it gets, is not let go as dead: the
// output waiting for it must not keep its pings from going out. Once it
// stops reading, and so answers no ping, it is.
func TestHeartbeatSparesSlowReader(t *testing.T) {
	t.Parallel()
	const hb = 200 * time.Millisecond
	h := startSetup(t, setup{framed: true, tightClient: true, opts: Options{Heartbeat: hb, PingClient: true}})
	h.docker.keepAnswering()
	h.output(make([]byte, 60<<10), 0)
	r := websocket.NewReader(slowReader{h.client.conn}, websocket.ReaderOptions{})
	var ctrl [125]byte
	var got int64
	deadline := time.Now().Add(15 * hb)
	h.client.conn.SetReadDeadline(deadline.Add(5 * time.Second))
	for time.Now().Before(deadline) {
		hd, err := r.NextFrame()
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
		switch hd.Op {
		case websocket.OpPing:
			p, _ := r.ReadControl(ctrl[:])
			h.client.w.WriteControl(websocket.OpPong, p)
		case websocket.OpClose:
			p, _ := r.ReadControl(ctrl[:])
			code, reason, _ := websocket.ParseClosePayload(p)
			t.Fatalf("after %d bytes the proxy closed with %d %q", got, code, reason)
		default:
			n, err := io.Copy(io.Discard, r)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	}
	t.Logf("%d bytes in %v", got, 15*hb)
	h.letGoSilent(t, 50*hb)
	h.docker.conn.Close()
}

// A pinged client that answers no ping is let go, though its socket's
// buffer still takes the container's trickle of output (a laptop closed
// on a console whose program prints now and then).
func TestHeartbeatLetsGoSilentClientTakingOutput(t *testing.T) {
	t.Parallel()
	const hb = 100 * time.Millisecond
	h := start(t, true, Options{Heartbeat: hb, PingClient: true})
	h.docker.keepAnswering()
	h.output(bytes.Repeat([]byte("."), 100), 10*time.Millisecond)
	h.letGoSilent(t, 50*hb)
	h.docker.conn.Close()
}
