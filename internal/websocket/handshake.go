package websocket

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKey computes Sec-WebSocket-Accept for a Sec-WebSocket-Key.
func AcceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte(acceptGUID))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
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
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
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

	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", u.RequestURI(), u.Host)
	b.WriteString("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n")
	fmt.Fprintf(&b, "Sec-WebSocket-Key: %s\r\n", key)
	for name, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", name, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return nil, fmt.Errorf("send websocket handshake: %w", err)
	}
	resp, rest, err := ReadUpgradeResponse(conn, func(code int) bool { return code == http.StatusSwitchingProtocols })
	if err != nil {
		return nil, fmt.Errorf("read websocket handshake response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, &StatusError{Code: resp.StatusCode, Status: resp.Status}
	}
	if !headerHasToken(resp.Header, "Upgrade", "websocket") || !headerHasToken(resp.Header, "Connection", "upgrade") {
		return nil, errors.New("websocket handshake response lacks Upgrade/Connection headers")
	}
	if resp.Header.Get("Sec-WebSocket-Accept") != AcceptKey(key) {
		return nil, errors.New("websocket handshake response has a wrong Sec-WebSocket-Accept")
	}
	return rest, nil
}

// responseReaders read the answers to upgrade requests: one per session
// set up, given back once the answer is read.
var responseReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 1024) }}

// ReadUpgradeResponse reads the HTTP answer to an upgrade request sent on
// conn and returns it with a copy of the bytes conn sent past it. When
// upgraded says its status does not take the connection over, the
// answer's body is read to its end first (within conn's deadline);
// otherwise what follows the head is in rest, and its body is empty.
func ReadUpgradeResponse(conn net.Conn, upgraded func(code int) bool) (resp *http.Response, rest []byte, err error) {
	br := responseReaders.Get().(*bufio.Reader)
	br.Reset(conn)
	defer func() {
		br.Reset(nil)
		responseReaders.Put(br)
	}()
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, err
	}
	if !upgraded(resp.StatusCode) {
		resp.Body.Close()
		return resp, nil, nil
	}
	if n := br.Buffered(); n > 0 {
		p, _ := br.Peek(n)
		rest = append([]byte(nil), p...)
	}
	resp.Body = http.NoBody // not the pooled reader, which goes back now
	return resp, rest, nil
}

// StatusError is an HTTP answer other than the one a handshake expects.
type StatusError struct {
	Code   int
	Status string
}

func (e *StatusError) Error() string { return "unexpected HTTP status " + e.Status }
