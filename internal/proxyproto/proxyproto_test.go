package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
)

var (
	v4src = netip.MustParseAddrPort("192.0.2.7:45678")
	v4dst = netip.MustParseAddrPort("127.0.0.1:6784")
	v6src = netip.MustParseAddrPort("[2001:db8::7]:45678")
	v6dst = netip.MustParseAddrPort("[::1]:6784")
)

// readAll reads a header from data and returns it with the bytes Read
// left unread.
func readAll(data []byte) (Header, []byte, error) {
	r := bytes.NewReader(data)
	h, err := Read(r)
	return h, data[len(data)-r.Len():], err
}

// withTLVs appends raw TLV bytes to a version 2 header, counted in its
// length.
func withTLVs(header, tlvs []byte) []byte {
	out := append(append([]byte(nil), header...), tlvs...)
	binary.BigEndian.PutUint16(out[14:16], binary.BigEndian.Uint16(header[14:16])+uint16(len(tlvs)))
	return out
}

func v2(cmd, fam byte, block ...byte) []byte {
	b := append(v2Signature[:], 0x20|cmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(block)))
	return append(b, block...)
}

func TestRead(t *testing.T) {
	maxV6 := "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
	worst := "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
	tcp4 := Header{Version: 2, Command: Proxy, Transport: TCP4, Source: v4src, Destination: v4dst}
	cases := []struct {
		name   string
		header []byte
		want   Header
	}{
		{"v1 TCP4", []byte("PROXY TCP4 192.0.2.7 127.0.0.1 45678 6784\r\n"), Header{Version: 1, Command: Proxy, Transport: TCP4, Source: v4src, Destination: v4dst}},
		{"v1 TCP4 shortest", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 0 1\r\n"), Header{Version: 1, Command: Proxy, Transport: TCP4,
			Source: netip.MustParseAddrPort("1.2.3.4:0"), Destination: netip.MustParseAddrPort("5.6.7.8:1")}},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::7 ::1 45678 6784\r\n"), Header{Version: 1, Command: Proxy, Transport: TCP6, Source: v6src, Destination: v6dst}},
		{"v1 TCP6 longest (104 bytes)", []byte(maxV6), Header{Version: 1, Command: Proxy, Transport: TCP6,
			Source:      netip.MustParseAddrPort("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
			Destination: netip.MustParseAddrPort("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")}},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), Header{Version: 1, Command: Proxy}},
		{"v1 UNKNOWN worst case (107 bytes)", []byte(worst), Header{Version: 1, Command: Proxy}},
		{"v2 TCP4", tcp4.Append(nil), tcp4},
		{"v2 TCP6", v2(1, 0x21, append(append(v6src.Addr().AsSlice(), v6dst.Addr().AsSlice()...), 0xb2, 0x6e, 0x1a, 0x80)...),
			Header{Version: 2, Command: Proxy, Transport: TCP6, Source: v6src, Destination: v6dst}},
		{"v2 TCP4 with TLVs", withTLVs(tcp4.Append(nil), []byte{0x01, 0, 2, 'h', '2', 0x04, 0, 3, 0, 0, 0}), tcp4},
		{"v2 TCP4 with 4 KiB of TLVs", withTLVs(tcp4.Append(nil), append([]byte{0x04, 0x0f, 0xf1}, make([]byte, MaxV2Block-12-3)...)), tcp4},
		{"v2 LOCAL (health check)", v2(0, 0), Header{Version: 2, Command: Local}},
		{"v2 LOCAL with a block to skip", v2(0, 0x11, make([]byte, 12)...), Header{Version: 2, Command: Local}},
		{"v2 AF_UNSPEC", v2(1, 0x00, 1, 2, 3), Header{Version: 2, Command: Proxy}},
		{"v2 UDP4", v2(1, 0x12, 192, 0, 2, 7, 127, 0, 0, 1, 0xb2, 0x6e, 0x1a, 0x80), Header{Version: 2, Command: Proxy, Transport: UDP4, Source: v4src, Destination: v4dst}},
		{"v2 Unix stream", Header{Version: 2, Command: Proxy, Transport: UnixStream, SourcePath: "/run/client.sock", DestinationPath: "/run/haproxy.sock"}.Append(nil),
			Header{Version: 2, Command: Proxy, Transport: UnixStream, SourcePath: "/run/client.sock", DestinationPath: "/run/haproxy.sock"}},
	}
	rest := []byte("\x16\x03\x01 the first TLS bytes")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for name, wrap := range map[string]func(io.Reader) io.Reader{"whole": func(r io.Reader) io.Reader { return r }, "one byte at a time": iotest.OneByteReader} {
				r := bytes.NewReader(append(append([]byte(nil), c.header...), rest...))
				got, err := Read(wrap(r))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if got != c.want {
					t.Errorf("%s: %+v, want %+v", name, got, c.want)
				}
				if left, _ := io.ReadAll(r); !bytes.Equal(left, rest) {
					t.Errorf("%s: left %q after the header, want %q", name, left, rest)
				}
			}
		})
	}
}

func TestClient(t *testing.T) {
	cases := []struct {
		h    Header
		want netip.AddrPort
		ok   bool
	}{
		{Header{Version: 1, Command: Proxy, Transport: TCP4, Source: v4src, Destination: v4dst}, v4src, true},
		{Header{Version: 2, Command: Proxy, Transport: TCP6, Source: v6src, Destination: v6dst}, v6src, true},
		{Header{Version: 1, Command: Proxy}, netip.AddrPort{}, false},
		{Header{Version: 2, Command: Local}, netip.AddrPort{}, false},
		{Header{Version: 2, Command: Proxy, Transport: UDP4, Source: v4src}, netip.AddrPort{}, false},
		{Header{Version: 2, Command: Proxy, Transport: UnixStream, SourcePath: "/s"}, netip.AddrPort{}, false},
	}
	for _, c := range cases {
		if got, ok := c.h.Client(); got != c.want || ok != c.ok {
			t.Errorf("%+v: Client() = %v %v, want %v %v", c.h, got, ok, c.want, c.ok)
		}
	}
}

func TestReadRefuses(t *testing.T) {
	tcp4 := Header{Version: 2, Command: Proxy, Transport: TCP4, Source: v4src, Destination: v4dst}.Append(nil)
	set := func(b []byte, i int, v byte) []byte { b = append([]byte(nil), b...); b[i] = v; return b }
	cases := []struct {
		name  string
		input string
		want  error
	}{
		{"HTTP request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", ErrInvalid},
		{"TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdefgh", ErrInvalid},
		{"lower case", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", ErrInvalid},
		{"unknown protocol", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", ErrInvalid},
		{"UNKNOWNX", "PROXY UNKNOWNX\r\n", ErrInvalid},
		{"lone LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET / HTTP/1.1\r\n", ErrInvalid},
		{"lone CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rxx", ErrInvalid},
		{"CR inside", "PROXY UNKNOWN a\rb\r\n", ErrInvalid},
		{"LF inside", "PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n", ErrInvalid},
		{"two spaces", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", ErrInvalid},
		{"five fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", ErrInvalid},
		{"seven fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", ErrInvalid},
		{"trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", ErrInvalid},
		{"octet with a leading zero", "PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", ErrInvalid},
		{"port with a leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", ErrInvalid},
		{"port over 65535", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", ErrInvalid},
		{"signed port", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", ErrInvalid},
		{"IPv6 in TCP4", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", ErrInvalid},
		{"IPv4 in TCP6", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", ErrInvalid},
		{"zone", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", ErrInvalid},
		{"host name", "PROXY TCP4 example.org 5.6.7.8 1 2\r\n", ErrInvalid},
		{"no CRLF in 107 bytes", "PROXY UNKNOWN " + strings.Repeat("f", 100), ErrInvalid},
		{"v1 cut short", "PROXY TCP4 1.2.3.4 5.6.", io.ErrUnexpectedEOF},
		{"shorter than any header", "PROXY UNKN", io.ErrUnexpectedEOF},
		{"nothing", "", io.ErrUnexpectedEOF},
		{"v2 version 1", string(set(tcp4, 12, 0x11)), ErrInvalid},
		{"v2 command 2", string(set(tcp4, 12, 0x22)), ErrInvalid},
		{"v2 family 4", string(set(tcp4, 13, 0x41)), ErrInvalid},
		{"v2 transport 3", string(set(tcp4, 13, 0x13)), ErrInvalid},
		{"v2 block shorter than its addresses", string(v2(1, 0x21, make([]byte, 12)...)), ErrInvalid},
		{"v2 block over the bound", string(v2(1, 0x11, make([]byte, MaxV2Block+1)...)), ErrInvalid},
		{"v2 cut short", string(tcp4[:20]), io.ErrUnexpectedEOF},
		{"v2 signature cut short", string(tcp4[:15]), io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		if h, _, err := readAll([]byte(c.input)); !errors.Is(err, c.want) {
			t.Errorf("%s: %+v, %v; want an error wrapping %v", c.name, h, err, c.want)
		}
	}
}

// countingReader counts the reads made of it.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) { c.reads++; return c.r.Read(p) }

// Reads are few: what the package comment promises.
func TestReadCalls(t *testing.T) {
	for _, c := range []struct {
		header string
		max    int
	}{
		{string(Header{Version: 2, Command: Proxy, Transport: TCP4, Source: v4src, Destination: v4dst}.Append(nil)), 3},
		{"PROXY TCP4 192.0.2.7 127.0.0.1 45678 6784\r\n", 7},
		{"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", 9},
	} {
		r := &countingReader{r: strings.NewReader(c.header + "GET / HTTP/1.1\r\n")}
		if _, err := Read(r); err != nil {
			t.Fatal(err)
		}
		if r.reads > c.max {
			t.Errorf("%q: %d reads, want at most %d", c.header, r.reads, c.max)
		}
		t.Logf("%q: %d reads", c.header, r.reads)
	}
}

func BenchmarkRead(b *testing.B) {
	for _, c := range []struct {
		name   string
		header []byte
	}{
		{"v1", []byte("PROXY TCP4 192.0.2.7 127.0.0.1 45678 6784\r\n")},
		{"v2", Header{Version: 2, Command: Proxy, Transport: TCP4, Source: v4src, Destination: v4dst}.Append(nil)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			r := bytes.NewReader(c.header)
			for b.Loop() {
				r.Reset(c.header)
				if _, err := Read(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzRead: whatever the input, Read either refuses it or returns a
// header that needed no byte beyond what it consumed, reads the same one
// byte at a time, and encodes back to a header that reads the same.
func FuzzRead(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.7 127.0.0.1 45678 6784\r\nGET / HTTP/1.1\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::7 ::1 45678 6784\r\n\x16\x03\x01"))
	f.Add([]byte("PROXY UNKNOWN ffff::1 ::2 1 2\r\n"))
	f.Add(Header{Version: 2, Command: Proxy, Transport: TCP4, Source: v4src, Destination: v4dst}.Append(nil))
	f.Add(withTLVs(Header{Version: 2, Command: Proxy, Transport: TCP6, Source: v6src, Destination: v6dst}.Append(nil), []byte{5, 0, 1, 'x'}))
	f.Add(Header{Version: 2, Command: Local}.Append([]byte(nil)))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, rest, err := readAll(data)
		oneByte, err1 := Read(iotest.OneByteReader(bytes.NewReader(data)))
		if (err == nil) != (err1 == nil) || oneByte != h {
			t.Fatalf("whole: %+v %v; one byte at a time: %+v %v", h, err, oneByte, err1)
		}
		// Where a complete header would end (at the first CRLF for
		// version 1, after the counted block for version 2): if the bytes
		// up to there are a header, Read must stop there whatever follows.
		var ends []int
		if i := bytes.Index(data, []byte("\r\n")); i >= 0 {
			ends = append(ends, i+2)
		}
		if len(data) >= 16 {
			ends = append(ends, 16+int(binary.BigEndian.Uint16(data[14:16])))
		}
		for _, k := range ends {
			if k > len(data) {
				continue
			}
			if alone, left, err := readAll(data[:k]); err == nil && len(left) == 0 && (alone != h || len(data)-len(rest) != k) {
				t.Fatalf("the first %d bytes are header %+v, but with what follows Read returns %+v, %v after %d bytes", k, alone, h, err, len(data)-len(rest))
			}
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error %v wraps neither ErrInvalid nor io.ErrUnexpectedEOF", err)
			}
			return
		}
		n := len(data) - len(rest)
		if n > v1Max && h.Version == 1 || n > 16+MaxV2Block {
			t.Fatalf("a version %d header of %d bytes", h.Version, n)
		}
		if again, left, err := readAll(data[:n]); err != nil || again != h || len(left) != 0 {
			t.Fatalf("the header's %d bytes alone: %+v %v, left %q; with what follows: %+v", n, again, err, left, h)
		}
		if back, left, err := readAll(h.Append(nil)); err != nil || back != h || len(left) != 0 {
			t.Fatalf("%+v encoded reads back as %+v (%v), left %q", h, back, err, left)
		}
	})
}

// FuzzRoundTrip: every header Append encodes reads back the same, with
// any TLVs (version 2) skipped and whatever follows left unread.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint8(1), uint8(1), uint8(1), []byte{192, 0, 2, 7}, []byte{127, 0, 0, 1}, uint16(45678), uint16(6784), "", "", []byte(nil), []byte("GET /"))
	f.Add(uint8(2), uint8(1), uint8(2), v6src.Addr().AsSlice(), v6dst.Addr().AsSlice(), uint16(1), uint16(443), "", "", []byte{1, 0, 2, 'h', '2'}, []byte{0x16, 3, 1})
	f.Add(uint8(2), uint8(1), uint8(5), []byte(nil), []byte(nil), uint16(0), uint16(0), "/run/a.sock", "/run/b.sock", []byte(nil), []byte("x"))
	f.Add(uint8(2), uint8(0), uint8(1), []byte{10, 0, 0, 1}, []byte{10, 0, 0, 2}, uint16(1), uint16(2), "", "", []byte(nil), []byte(nil))
	f.Fuzz(func(t *testing.T, version, cmd, transport uint8, src, dst []byte, sport, dport uint16, spath, dpath string, tlvs, rest []byte) {
		h := canonical(version, cmd, transport, src, dst, sport, dport, spath, dpath)
		enc := h.Append(nil)
		if h.Version == 2 {
			enc = withTLVs(enc, tlvs[:min(len(tlvs), MaxV2Block-(len(enc)-16))])
		}
		got, left, err := readAll(append(append([]byte(nil), enc...), rest...))
		if err != nil || got != h {
			t.Fatalf("%+v encoded as %q reads back as %+v, %v", h, enc, got, err)
		}
		if !bytes.Equal(left, rest) {
			t.Fatalf("%+v: left %q after the header, want %q", h, left, rest)
		}
	})
}

// canonical builds a header as Read returns it from fuzzed parts.
func canonical(version, cmd, transport uint8, src, dst []byte, sport, dport uint16, spath, dpath string) Header {
	addr := func(b []byte, v6 bool) netip.Addr {
		var a [16]byte
		copy(a[:], b)
		if !v6 {
			return netip.AddrFrom4([4]byte(a[:4]))
		}
		return netip.AddrFrom16(a)
	}
	path := func(s string) string {
		if i := strings.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		return s[:min(len(s), unixPath)]
	}
	h := Header{Version: 1 + int(version%2), Command: Proxy, Transport: Transport(transport % 7)}
	if h.Version == 1 {
		h.Transport %= 3 // UNKNOWN, TCP4, TCP6
	} else {
		h.Command = Command(cmd % 2)
	}
	if h.Command == Local {
		h.Transport = Unspec
	}
	switch h.Transport {
	case TCP4, UDP4, TCP6, UDP6:
		v6 := h.Transport == TCP6 || h.Transport == UDP6
		h.Source, h.Destination = netip.AddrPortFrom(addr(src, v6), sport), netip.AddrPortFrom(addr(dst, v6), dport)
	case UnixStream, UnixDatagram:
		h.SourcePath, h.DestinationPath = path(spath), path(dpath)
	}
	return h
}
