package testenv

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"net/http"
)

// The WebSocket wire, written by hand: what a client library would not
// send, or a client that sends and then reads nothing.

// UpgradeHeaders sets the headers of a WebSocket opening handshake (RFC
// 6455 section 4.1) on h, with a fresh key.
func UpgradeHeaders(h http.Header) {
	h.Set("Upgrade", "websocket")
	h.Set("Connection", "Upgrade")
	h.Set("Sec-WebSocket-Version", "13")
	h.Set("Sec-WebSocket-Key", wsKey())
}

// Handshake is the bytes of an opening handshake for target (a path and
// query) offering the binary subprotocol, with extra header lines.
func Handshake(target string, extra ...string) string {
	h := "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: " + wsKey() + "\r\nSec-WebSocket-Protocol: binary\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h + "\r\n"
}

func wsKey() string {
	var key [16]byte
	rand.Read(key[:])
	return base64.StdEncoding.EncodeToString(key[:])
}

// Frame is one client frame whose first byte is b0 (FIN, RSV and opcode
// bits), masked as clients must unless unmasked is set.
func Frame(b0 byte, payload []byte, unmasked bool) []byte {
	out := []byte{b0}
	maskBit := byte(0x80)
	if unmasked {
		maskBit = 0
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, maskBit|byte(n))
	case n < 65536:
		out = append(out, maskBit|126, byte(n>>8), byte(n))
	default:
		out = binary.BigEndian.AppendUint64(append(out, maskBit|127), uint64(n))
	}
	if unmasked {
		return append(out, payload...)
	}
	key := []byte{0x11, 0x22, 0x33, 0x44}
	out = append(out, key...)
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
}
