// Package websocket implements the parts of RFC 6455 the proxy needs: the
// server and client opening handshakes, and a frame reader and writer that
// hold no large buffer while a connection is idle and allocate nothing per
// frame.
//
// Why its own codec rather than github.com/coder/websocket or gobwas/ws:
//   - Idle memory. A relay over coder/websocket keeps a goroutine in Read
//     per direction and the library's buffered reader and writer; here an
//     idle connection is a socket parked on epoll with a few hundred bytes
//     of state. BenchmarkIdleConnMemory (-benchtime 1x) measured, per idle
//     server connection with its client and net/http's share: 1.8-1.9 KiB
//     with this package, 15.4-15.6 KiB with coder/websocket.
//   - Read-ahead. The Reader reads at most 256 bytes past a frame header, so
//     a direction can tell "nothing buffered" and park between frames; bytes
//     read with the handshake stay its own and Buffered counts them.
//   - In-place remasking. Payloads are unmasked and re-framed in the
//     caller's buffer, with room reserved before them for the next header,
//     so relaying a message copies nothing and allocates nothing.
//   - Close control. The proxy chooses each close code and reason, bounds
//     every control write (TryWriteControl) and sets the final deadlines
//     itself; the libraries close, time out and answer pings on their own.
//
// gobwas/ws has the low-level frame API but neither this read-ahead rule nor
// the handshake-bytes handling, and it was not measured here.
package websocket

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"unicode/utf8"
)

// Opcode is a frame's opcode (RFC 6455 section 5.2).
type Opcode byte

// The opcodes of RFC 6455.
const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
	OpClose        Opcode = 0x8
	OpPing         Opcode = 0x9
	OpPong         Opcode = 0xA
)

// IsControl reports whether op is a control opcode (close, ping, pong).
func (op Opcode) IsControl() bool { return op&0x8 != 0 }

func (op Opcode) String() string {
	switch op {
	case OpContinuation:
		return "continuation"
	case OpText:
		return "text"
	case OpBinary:
		return "binary"
	case OpClose:
		return "close"
	case OpPing:
		return "ping"
	case OpPong:
		return "pong"
	}
	return fmt.Sprintf("opcode(%#x)", byte(op))
}

// Close status codes (RFC 6455 section 7.4.1 and the IANA registry).
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseProtocolError   = 1002
	CloseUnsupportedData = 1003
	CloseNoStatus        = 1005 // never sent: no code in the close frame
	CloseAbnormal        = 1006 // never sent: connection lost without a close frame
	CloseInvalidPayload  = 1007
	ClosePolicyViolation = 1008
	CloseTooBig          = 1009
	CloseInternalError   = 1011
	CloseTryAgainLater   = 1013
)

// MaxHeaderLen is the longest frame header: 2 bytes, an 8-byte extended
// length and a 4-byte masking key. Buffers given to Writer.WriteFrame keep
// this much room in front of the payload for the header.
const MaxHeaderLen = 14

// maxControlPayload is the largest payload a control frame may carry.
const maxControlPayload = 125

// Header is a parsed frame header.
type Header struct {
	Fin    bool
	Op     Opcode
	Masked bool
	Mask   [4]byte
	Length int64
}

// ProtocolError is a violation of RFC 6455 by the peer; the connection must
// be closed with Code.
type ProtocolError struct {
	Code   int
	Reason string
}

func (e *ProtocolError) Error() string { return e.Reason }

func protocolError(reason string) error {
	return &ProtocolError{Code: CloseProtocolError, Reason: reason}
}

// ErrCloseSent is returned by writes after a close frame was written.
var ErrCloseSent = errors.New("websocket: close frame already sent")

// CloseCodeSendable reports whether code may appear in a close frame on the
// wire (RFC 6455 section 7.4).
func CloseCodeSendable(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// ParseClosePayload splits a close frame's payload into its status code and
// reason. An empty payload yields CloseNoStatus.
func ParseClosePayload(p []byte) (code int, reason string, err error) {
	switch {
	case len(p) == 0:
		return CloseNoStatus, "", nil
	case len(p) == 1:
		return 0, "", protocolError("close frame with a 1-byte payload")
	}
	code = int(binary.BigEndian.Uint16(p))
	if !CloseCodeSendable(code) {
		return 0, "", protocolError(fmt.Sprintf("invalid close code %d", code))
	}
	if !utf8.Valid(p[2:]) {
		return 0, "", &ProtocolError{Code: CloseInvalidPayload, Reason: "close reason is not UTF-8"}
	}
	return code, string(p[2:]), nil
}

// mask XORs p with key, starting at key position pos, and returns the key
// position after p. It works a word at a time: masking is on the hot path of
// every frame from a client and of every frame the proxy sends to Docker.
func mask(key [4]byte, pos int, p []byte) int {
	next := (pos + len(p)) & 3
	// Rotate the key so that p[0] is masked with key[pos]; the 32- and
	// 8-byte loops keep that phase. Four words a turn: 2-2.7 times the
	// bytes per second of one (BenchmarkMask).
	k32 := bits.RotateLeft32(binary.LittleEndian.Uint32(key[:]), -8*(pos&3))
	k64 := uint64(k32) | uint64(k32)<<32
	for len(p) >= 32 {
		_ = p[31]
		binary.LittleEndian.PutUint64(p[0:], binary.LittleEndian.Uint64(p[0:])^k64)
		binary.LittleEndian.PutUint64(p[8:], binary.LittleEndian.Uint64(p[8:])^k64)
		binary.LittleEndian.PutUint64(p[16:], binary.LittleEndian.Uint64(p[16:])^k64)
		binary.LittleEndian.PutUint64(p[24:], binary.LittleEndian.Uint64(p[24:])^k64)
		p = p[32:]
	}
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, binary.LittleEndian.Uint64(p)^k64)
		p = p[8:]
	}
	for i := range p {
		p[i] ^= byte(k32 >> (8 * (i & 3)))
	}
	return next
}
