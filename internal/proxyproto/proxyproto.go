// Package proxyproto reads the PROXY protocol header a load balancer puts
// before a connection's first byte to tell the receiver whom it relays
// (HAProxy's send-proxy and send-proxy-v2): version 1, one line of text,
// and version 2, binary, as HAProxy's specification (proxy-protocol.txt)
// defines them.
//
// Read consumes exactly the header and never a byte after it, with no
// buffer of its own, so what follows (a TLS ClientHello, an HTTP request)
// is read from the connection as if the header had not been there.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// ErrInvalid is what a header that breaks the specification wraps.
var ErrInvalid = errors.New("invalid PROXY protocol header")

// Command says whether a header relays a connection.
type Command uint8

const (
	// Local: the balancer opened the connection itself (a health check);
	// the connection's own endpoints are the real ones.
	Local Command = iota
	// Proxy: the connection is relayed; the header names its endpoints.
	Proxy
)

// Transport is what a header's addresses are.
type Transport uint8

const (
	Unspec       Transport = iota // no addresses: LOCAL, UNKNOWN, AF_UNSPEC
	TCP4                          // TCP over IPv4
	TCP6                          // TCP over IPv6
	UDP4                          // UDP over IPv4 (version 2)
	UDP6                          // UDP over IPv6 (version 2)
	UnixStream                    // AF_UNIX stream socket (version 2)
	UnixDatagram                  // AF_UNIX datagram socket (version 2)
)

// Header is one PROXY protocol header.
type Header struct {
	Version   int // 1 or 2
	Command   Command
	Transport Transport
	// Source and Destination are the relayed connection's endpoints for
	// the TCP and UDP transports.
	Source, Destination netip.AddrPort
	// SourcePath and DestinationPath are the socket paths of the Unix
	// transports.
	SourcePath, DestinationPath string
}

// Client returns the relayed client's address: the source of a relayed
// TCP connection. ok is false when the header names no TCP client (LOCAL,
// UNKNOWN, AF_UNSPEC, UDP, Unix sockets); the connection's own peer is then
// the one to believe, as the specification says.
func (h Header) Client() (addr netip.AddrPort, ok bool) {
	if h.Command != Proxy || (h.Transport != TCP4 && h.Transport != TCP6) {
		return netip.AddrPort{}, false
	}
	return h.Source, true
}

const (
	// v1Max is the longest version 1 line, CRLF included.
	v1Max = 107
	// minHeader is the shortest header of either version ("PROXY
	// UNKNOWN\r\n"; a version 2 header has 16 bytes): it is read first,
	// whatever the version.
	minHeader = 15
	// MaxV2Block bounds a version 2 header's address and TLV block. Its
	// addresses take at most 216 bytes; HAProxy's TLVs (ALPN, SNI, a
	// unique id, TLS details) a few hundred more.
	MaxV2Block = 4096
	// unixPath is the size of an AF_UNIX address in version 2.
	unixPath = 108
)

// v2Signature starts every version 2 header.
var v2Signature = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// Read reads one header from r, of either version, and nothing after it.
// r should be the connection itself, with a read deadline: Read makes a
// few small reads (three for a version 2 header, about seven for a
// version 1 line) rather than read ahead. A header cut short returns the
// read's error (io.ErrUnexpectedEOF, a timeout); a malformed one an error
// wrapping ErrInvalid.
func Read(r io.Reader) (Header, error) {
	var buf [16 + 2*unixPath]byte // the longest version 1 line fits too
	if _, err := io.ReadFull(r, buf[:minHeader]); err != nil {
		return Header{}, readError(err)
	}
	switch {
	case bytes.HasPrefix(buf[:], v2Signature[:]):
		return readV2(r, &buf)
	case bytes.HasPrefix(buf[:], []byte("PROXY ")):
		return readV1(r, buf[:v1Max])
	}
	return Header{}, fmt.Errorf("%w: no PROXY signature", ErrInvalid)
}

func readError(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read PROXY protocol header: %w", err)
}

// readV1 reads the rest of a version 1 line, whose first minHeader bytes
// are in line. The line's end is not known before it is read, so each
// read asks for no more bytes than the shortest valid line beginning with
// what has been read would still have.
func readV1(r io.Reader, line []byte) (Header, error) {
	proto := line[6:minHeader]
	var fields int // of a TCP line; 0 for UNKNOWN, whose rest is free
	switch {
	case bytes.HasPrefix(proto, []byte("TCP4 ")), bytes.HasPrefix(proto, []byte("TCP6 ")):
		fields = 6 // PROXY, the protocol, two addresses, two ports
	case bytes.HasPrefix(proto, []byte("UNKNOWN")) && (proto[7] == ' ' || proto[7] == '\r'):
	default:
		return Header{}, fmt.Errorf("%w: version 1 protocol not TCP4, TCP6 or UNKNOWN", ErrInvalid)
	}
	n := minHeader
	for {
		end, err := lineEnd(line[:n])
		if err != nil {
			return Header{}, err
		}
		if end {
			break
		}
		need := 2 // CRLF
		switch {
		case line[n-1] == '\r':
			need = 1
		case fields > 0:
			// Each field still to come is a space and at least one byte;
			// after a space, the current field is at least one byte.
			spaces := bytes.Count(line[:n], []byte{' '})
			if spaces >= fields {
				return Header{}, fmt.Errorf("%w: version 1 line with more than %d fields", ErrInvalid, fields)
			}
			need += 2 * (fields - 1 - spaces)
			if line[n-1] == ' ' {
				need++
			}
		}
		if n+need > v1Max {
			return Header{}, fmt.Errorf("%w: no CRLF within %d bytes", ErrInvalid, v1Max)
		}
		if _, err := io.ReadFull(r, line[n:n+need]); err != nil {
			return Header{}, readError(err)
		}
		n += need
	}
	return parseV1(string(line[:n-2]))
}

// lineEnd reports whether line ends with its CRLF; a CR or LF anywhere
// else makes it invalid (a lone CR or LF does not end a line).
func lineEnd(line []byte) (bool, error) {
	for i, c := range line {
		switch {
		case c == '\n' && i == len(line)-1 && i > 0 && line[i-1] == '\r':
			return true, nil
		case c == '\n', c == '\r' && i < len(line)-1 && line[i+1] != '\n':
			return false, fmt.Errorf("%w: CR or LF inside the version 1 line", ErrInvalid)
		}
	}
	return false, nil
}

// parseV1 parses a complete version 1 line without its CRLF.
func parseV1(line string) (Header, error) {
	f := strings.Split(line, " ")
	if f[1] == "UNKNOWN" {
		// The rest of the line is to be ignored.
		return Header{Version: 1, Command: Proxy, Transport: Unspec}, nil
	}
	if len(f) != 6 {
		return Header{}, fmt.Errorf("%w: version 1 line of %d fields, want 6", ErrInvalid, len(f))
	}
	h := Header{Version: 1, Command: Proxy, Transport: TCP4}
	if f[1] == "TCP6" {
		h.Transport = TCP6
	}
	var err error
	if h.Source, err = v1Endpoint(h.Transport, f[2], f[4]); err != nil {
		return Header{}, fmt.Errorf("source: %w", err)
	}
	if h.Destination, err = v1Endpoint(h.Transport, f[3], f[5]); err != nil {
		return Header{}, fmt.Errorf("destination: %w", err)
	}
	return h, nil
}

// v1Endpoint parses an address of the line's family and a port: decimal,
// 0-65535, without leading zeros (nor IPv4 octets with them, which
// netip refuses).
func v1Endpoint(t Transport, addr, port string) (netip.AddrPort, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" || (t == TCP4) != a.Is4() {
		return netip.AddrPort{}, fmt.Errorf("%w: address %q is not %s", ErrInvalid, addr, map[Transport]string{TCP4: "IPv4", TCP6: "IPv6"}[t])
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (len(port) > 1 && port[0] == '0') {
		return netip.AddrPort{}, fmt.Errorf("%w: port %q", ErrInvalid, port)
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// readV2 reads the rest of a version 2 header, whose first minHeader bytes
// are in buf: one byte for the length, then exactly the block it counts.
func readV2(r io.Reader, buf *[16 + 2*unixPath]byte) (Header, error) {
	if _, err := io.ReadFull(r, buf[minHeader:16]); err != nil {
		return Header{}, readError(err)
	}
	if buf[12]>>4 != 2 {
		return Header{}, fmt.Errorf("%w: version %d in a version 2 signature", ErrInvalid, buf[12]>>4)
	}
	h := Header{Version: 2, Command: Command(buf[12] & 0xF)}
	if h.Command != Local && h.Command != Proxy {
		return Header{}, fmt.Errorf("%w: command %d", ErrInvalid, h.Command)
	}
	family, transport := buf[13]>>4, buf[13]&0xF
	length := int(binary.BigEndian.Uint16(buf[14:16]))
	if length > MaxV2Block {
		return Header{}, fmt.Errorf("%w: %d-byte block, over %d", ErrInvalid, length, MaxV2Block)
	}
	// The addresses first, then the rest (TLVs), skipped through the
	// buffer once the addresses are parsed.
	block := buf[16:]
	have := min(length, len(block))
	if _, err := io.ReadFull(r, block[:have]); err != nil {
		return Header{}, readError(err)
	}
	h, err := parseV2(h, family, transport, block[:have])
	if err != nil {
		return Header{}, err
	}
	for rest := length - have; rest > 0; {
		n := min(rest, len(block))
		if _, err := io.ReadFull(r, block[:n]); err != nil {
			return Header{}, readError(err)
		}
		rest -= n
	}
	return h, nil
}

// parseV2 reads a version 2 header's addresses from the start of its
// block.
func parseV2(h Header, family, transport byte, block []byte) (Header, error) {
	if h.Command == Local {
		// The block, family included, is to be ignored.
		return h, nil
	}
	if family > 3 || transport > 2 {
		return Header{}, fmt.Errorf("%w: address family %d, transport %d", ErrInvalid, family, transport)
	}
	if family == 0 || transport == 0 {
		return h, nil // AF_UNSPEC: no addresses to use
	}
	ipLen := map[byte]int{1: 4, 2: 16}[family]
	size := 2*ipLen + 4
	if family == 3 {
		size = 2 * unixPath
	}
	if len(block) < size {
		return Header{}, fmt.Errorf("%w: %d-byte block for %d bytes of addresses", ErrInvalid, len(block), size)
	}
	if family == 3 {
		h.SourcePath, h.DestinationPath = cString(block[:unixPath]), cString(block[unixPath:size])
		h.Transport = [2]Transport{UnixStream, UnixDatagram}[transport-1]
		return h, nil
	}
	src, _ := netip.AddrFromSlice(block[:ipLen])
	dst, _ := netip.AddrFromSlice(block[ipLen : 2*ipLen])
	h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(block[2*ipLen:]))
	h.Destination = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(block[2*ipLen+2:]))
	h.Transport = [2][2]Transport{{TCP4, UDP4}, {TCP6, UDP6}}[family-1][transport-1]
	return h, nil
}

// cString is b up to its first NUL.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// Append appends h, encoded in its version, to b: what Read reads back
// as h, for any h Read can return. A version 1 line says UNKNOWN for what
// it cannot carry (LOCAL, the UDP and Unix transports); a version 2
// header of an IPv4 transport writes other addresses as 0.0.0.0.
func (h Header) Append(b []byte) []byte {
	if h.Version == 1 {
		if h.Command != Proxy || (h.Transport != TCP4 && h.Transport != TCP6) {
			return append(b, "PROXY UNKNOWN\r\n"...)
		}
		proto := "TCP4"
		if h.Transport == TCP6 {
			proto = "TCP6"
		}
		return fmt.Appendf(b, "PROXY %s %s %s %d %d\r\n", proto, h.Source.Addr(), h.Destination.Addr(), h.Source.Port(), h.Destination.Port())
	}
	b = append(b, v2Signature[:]...)
	b = append(b, 0x20|byte(h.Command))
	fam := map[Transport]byte{TCP4: 0x11, UDP4: 0x12, TCP6: 0x21, UDP6: 0x22, UnixStream: 0x31, UnixDatagram: 0x32}[h.Transport]
	if h.Command == Local {
		fam = 0
	}
	b = append(b, fam)
	switch fam >> 4 {
	case 0:
		return append(b, 0, 0)
	case 1:
		b = binary.BigEndian.AppendUint16(b, 12)
		s, d := as4(h.Source.Addr()), as4(h.Destination.Addr())
		b = append(append(b, s[:]...), d[:]...)
	case 2:
		b = binary.BigEndian.AppendUint16(b, 36)
		s, d := h.Source.Addr().As16(), h.Destination.Addr().As16()
		b = append(append(b, s[:]...), d[:]...)
	case 3:
		b = binary.BigEndian.AppendUint16(b, 2*unixPath)
		var paths [2 * unixPath]byte
		copy(paths[:unixPath], h.SourcePath)
		copy(paths[unixPath:], h.DestinationPath)
		return append(b, paths[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, h.Source.Port())
	return binary.BigEndian.AppendUint16(b, h.Destination.Port())
}

func as4(a netip.Addr) [4]byte {
	if a.Is4() || a.Is4In6() {
		return a.As4()
	}
	return [4]byte{}
}
