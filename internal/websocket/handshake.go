package websocket

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/zun-wsproxy/zun-wsproxy/internal/httpsyntax"
)

const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKey computes Sec-WebSocket-Accept for a Sec-WebSocket-Key.
func AcceptKey(key string) string {
	var in [64 + len(acceptGUID)]byte
	sum := sha1.Sum(append(append(in[:0], key...), acceptGUID...))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// HandshakeError is a client opening handshake that cannot be accepted;
// Status is the HTTP status to answer with.
type HandshakeError struct {
	Status int
	Reason string
}

func (e *HandshakeError) Error() string { return e.Reason }

// headerHasToken reports whether a comma-separated header (across all its
// lines) contains token, case-insensitively.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		if listHasToken(v, token) {
			return true
		}
	}
	return false
}

// listHasToken reports whether the comma-separated list v contains token,
// case-insensitively.
func listHasToken(v, token string) bool {
	for v != "" {
		var t string
		t, v, _ = strings.Cut(v, ",")
		if strings.EqualFold(strings.TrimSpace(t), token) {
			return true
		}
	}
	return false
}

// IsUpgrade reports whether r asks for a WebSocket upgrade at all.
func IsUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Upgrade", "websocket")
}

// CheckRequest validates a client's opening handshake (RFC 6455 section
// 4.2.1) and returns its Sec-WebSocket-Key.
func CheckRequest(r *http.Request) (string, error) {
	if r.Method != http.MethodGet {
		return "", &HandshakeError{http.StatusMethodNotAllowed, "websocket handshake must use GET"}
	}
	if r.ProtoMajor < 1 || (r.ProtoMajor == 1 && r.ProtoMinor < 1) {
		return "", &HandshakeError{http.StatusBadRequest, "websocket handshake needs HTTP/1.1"}
	}
	if !IsUpgrade(r) {
		return "", &HandshakeError{http.StatusBadRequest, "not a websocket handshake: missing Upgrade: websocket"}
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") {
		return "", &HandshakeError{http.StatusBadRequest, "not a websocket handshake: missing Connection: Upgrade"}
	}
	if v := r.Header.Values("Sec-WebSocket-Version"); len(v) != 1 || strings.TrimSpace(v[0]) != "13" {
		return "", &HandshakeError{http.StatusUpgradeRequired, "unsupported websocket version (want 13)"}
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 {
		return "", &HandshakeError{http.StatusBadRequest, "missing or repeated Sec-WebSocket-Key"}
	}
	key := strings.TrimSpace(keys[0])
	if raw, err := base64.StdEncoding.DecodeString(key); err != nil || len(raw) != 16 {
		return "", &HandshakeError{http.StatusBadRequest, "malformed Sec-WebSocket-Key"}
	}
	return key, nil
}

// Subprotocols returns the subprotocols the client offers, in its order.
func Subprotocols(r *http.Request) []string {
	var out []string
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// Upgrade answers the handshake with 101 Switching Protocols, selecting
// subprotocol (none if empty), and takes over the connection. It returns
// the connection and any bytes the client sent past its handshake. The
// caller owns the connection and must close it.
func Upgrade(w http.ResponseWriter, key, subprotocol string) (net.Conn, []byte, error) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("hijack connection: %w", err)
	}
	var buffered []byte
	if n := rw.Reader.Buffered(); n > 0 {
		p, _ := rw.Reader.Peek(n)
		buffered = append([]byte(nil), p...)
	}
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + AcceptKey(key) + "\r\n"
	if subprotocol != "" {
		resp += "Sec-WebSocket-Protocol: " + subprotocol + "\r\n"
	}
	resp += "\r\n"
	if _, err := conn.Write([]byte(resp)); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("write handshake response: %w", err)
	}
	return conn, buffered, nil
}

// ClientHandshake performs the client opening handshake for u (a ws:// or
// wss:// URL) on conn, which is already connected (and TLS-wrapped for
// wss); the caller bounds it with conn's deadline. On success it returns
// bytes the server sent past its response.
func ClientHandshake(conn net.Conn, u *url.URL, header http.Header) ([]byte, error) {
	// The key only has to be unpredictable to intermediaries (RFC 6455
	// section 10.3): the runtime's generator (ChaCha8, seeded by the
	// system) serves, with no system call.
	var nonce [16]byte
	binary.LittleEndian.PutUint64(nonce[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(nonce[8:], rand.Uint64())
	key := base64.StdEncoding.EncodeToString(nonce[:])

	req := make([]byte, 0, 256)
	req = append(req, "GET "...)
	req = append(req, u.RequestURI()...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, u.Host...)
	req = append(req, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "...)
	req = append(req, key...)
	req = append(req, "\r\n"...)
	for name, vs := range header {
		for _, v := range vs {
			req = append(req, name...)
			req = append(req, ": "...)
			req = append(req, v...)
			req = append(req, "\r\n"...)
		}
	}
	req = append(req, "\r\n"...)
	if _, err := conn.Write(req); err != nil {
		return nil, fmt.Errorf("send websocket handshake: %w", err)
	}
	resp, rest, err := ReadUpgradeResponse(conn, func(code int) bool { return code == http.StatusSwitchingProtocols })
	if err != nil {
		return nil, fmt.Errorf("read websocket handshake response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, &StatusError{Code: resp.StatusCode, Status: resp.Status}
	}
	if !resp.HasToken("Upgrade", "websocket") || !resp.HasToken("Connection", "upgrade") {
		return nil, errors.New("websocket handshake response lacks Upgrade/Connection headers")
	}
	if resp.Get("Sec-WebSocket-Accept") != AcceptKey(key) {
		return nil, errors.New("websocket handshake response has a wrong Sec-WebSocket-Accept")
	}
	return rest, nil
}

// ReadUpgradeResponse reads the HTTP answer to an upgrade request sent on
// conn and returns it with a copy of the bytes conn sent past it. When
// upgraded says its status does not take the connection over, the
// answer's body is read to its end first (within conn's deadline);
// otherwise what follows the head is in rest.
//
// A plain answer that takes the connection over (Docker's, every session
// set up) is read into a pooled buffer and looked at where it lies;
// anything else (a refusal, a head too long or of another form, a field
// that bears on the body) goes to net/http's reader as soon as a line
// shows it, fed the bytes already read: it then reads and fails as it
// would have alone.
func ReadUpgradeResponse(conn net.Conn, upgraded func(code int) bool) (resp *UpgradeResponse, rest []byte, err error) {
	bp := headBuffers.Get().(*[headBufferSize]byte)
	defer headBuffers.Put(bp)
	buf := bp[:]
	n, idle := 0, 0
	var rerr error
	for n < len(buf) {
		var m int
		m, rerr = conn.Read(buf[n:])
		n += m
		if m == 0 && rerr == nil {
			if idle++; idle < 100 {
				continue
			}
			break // net/http says io.ErrNoProgress
		}
		idle = 0
		end, code, verdict := scanHead(buf[:n])
		if verdict == headPlain && upgraded(code) {
			if n > end {
				rest = append([]byte(nil), buf[end:n]...)
			}
			// One string for the head; the status and the fields are
			// its parts (the status line holds no CR).
			head := string(buf[:end])
			status := strings.IndexByte(head, '\r')
			return &UpgradeResponse{StatusCode: code, Status: head[9:status], fields: head[status+2 : end-2]}, rest, nil
		}
		if verdict != headIncomplete || rerr != nil {
			break
		}
	}
	// net/http reads on from the connection, or meets the error this
	// read met (as it would have).
	var more io.Reader = conn
	if rerr != nil {
		more = errReader{rerr}
	}
	return readResponseSlowly(io.MultiReader(bytes.NewReader(buf[:n]), more), upgraded)
}

// errReader's reads fail with err.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// headBufferSize bounds an answer's head read without net/http: Docker's
// are about 150 bytes.
const headBufferSize = 1024

var headBuffers = sync.Pool{New: func() any { return new([headBufferSize]byte) }}

// What scanHead makes of the bytes of a head read so far.
const (
	headIncomplete = iota // plain so far, not ended yet
	headPlain             // ended, every line of the plainest form
	headOther             // for net/http to read
)

// scanHead looks at the lines of b, the start of an answer's head. A head
// is plain when it has an HTTP/1.x status line with a three-digit code
// and "Name: value" fields, each line ending in CRLF, with token names,
// no control characters, and none of the fields that bear on a body
// (whose checks are net/http's). For a plain head it returns its length,
// up to and including the empty line, and its status code.
func scanHead(b []byte) (end, code int, verdict int) {
	line := 0
	for start := 0; ; line++ {
		i := bytes.IndexByte(b[start:], '\n')
		if i < 0 {
			return 0, code, headIncomplete
		}
		l := b[start : start+i]
		if len(l) == 0 || l[len(l)-1] != '\r' {
			return 0, code, headOther // a bare LF
		}
		l = l[:len(l)-1]
		start += i + 1
		switch {
		case line == 0:
			if code = statusCode(l); code == 0 {
				return 0, 0, headOther
			}
		case len(l) == 0:
			return start, code, headPlain
		default:
			name, value, ok := bytes.Cut(l, []byte{':'})
			if !ok || len(name) == 0 || !httpsyntax.IsToken(name) || !httpsyntax.IsFieldValue(value) || bodyField(name) {
				return 0, code, headOther
			}
		}
	}
}

// statusCode returns the code of a status line of the plainest form, or 0.
func statusCode(l []byte) int {
	if len(l) < 12 || !(bytes.HasPrefix(l, []byte("HTTP/1.1 ")) || bytes.HasPrefix(l, []byte("HTTP/1.0 "))) || (len(l) > 12 && l[12] != ' ') || !httpsyntax.IsFieldValue(l) {
		return 0
	}
	code := 0
	for _, c := range l[9:12] {
		if c < '0' || c > '9' {
			return 0
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return 0
	}
	return code
}

// bodyField reports whether a field bears on the body: net/http checks
// those even on answers without one.
func bodyField(name []byte) bool {
	for _, f := range [...]string{"Content-Length", "Transfer-Encoding", "Trailer"} {
		if strings.EqualFold(string(name), f) {
			return true
		}
	}
	return false
}

// readResponseSlowly reads the answer with net/http's reader, from r.
func readResponseSlowly(r io.Reader, upgraded func(code int) bool) (*UpgradeResponse, []byte, error) {
	br := bufio.NewReaderSize(r, headBufferSize)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, err
	}
	ur := &UpgradeResponse{StatusCode: resp.StatusCode, Status: resp.Status, header: resp.Header}
	if !upgraded(resp.StatusCode) {
		resp.Body.Close()
		return ur, nil, nil
	}
	var rest []byte
	if n := br.Buffered(); n > 0 {
		p, _ := br.Peek(n)
		rest = append([]byte(nil), p...)
	}
	return ur, rest, nil
}

// UpgradeResponse is the head of an answer to an upgrade request.
type UpgradeResponse struct {
	StatusCode int
	Status     string // "101 Switching Protocols"
	// Its fields: as the lines read (scanHead), or as net/http
	// parsed them.
	fields string
	header http.Header
}

// Get returns the first value of the field name, trimmed, or "".
func (r *UpgradeResponse) Get(name string) string {
	for v := range r.values(name) {
		return v
	}
	return ""
}

// HasToken reports whether the comma-separated field name (across all
// its lines) contains token, case-insensitively.
func (r *UpgradeResponse) HasToken(name, token string) bool {
	for v := range r.values(name) {
		if listHasToken(v, token) {
			return true
		}
	}
	return false
}

// values yields the values of the field name, trimmed, in their order.
func (r *UpgradeResponse) values(name string) iter.Seq[string] {
	return func(yield func(string) bool) {
		if r.header != nil {
			for _, v := range r.header.Values(name) {
				if !yield(v) {
					return
				}
			}
			return
		}
		for rest := r.fields; rest != ""; {
			var f string
			f, rest, _ = strings.Cut(rest, "\r\n")
			if n, v, _ := strings.Cut(f, ":"); strings.EqualFold(n, name) && !yield(strings.Trim(v, " \t")) {
				return
			}
		}
	}
}

// StatusError is an HTTP answer other than the one a handshake expects.
type StatusError struct {
	Code   int
	Status string
}

func (e *StatusError) Error() string { return "unexpected HTTP status " + e.Status }
