package e2e

import (
	"bufio"
	be "encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	wsproxy "github.com/zun-wsproxy/zun-wsproxy/internal/proxy"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
	wire "github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// What the proxy does with the frames a client sends after the upgrade,
// written by hand: close codes no client library sends, bytes that are
// not UTF-8 in text frames, fragments.

// rawConsole opens p's console of c with a handshake written by hand
// (offering binary, plus extra header lines) and returns the connection,
// closed when the test ends, a reader of the proxy's frames and the
// subprotocol the proxy chose.
func rawConsole(t *testing.T, p *proxy, c testenv.Container, extra ...string) (net.Conn, *wire.Reader, string) {
	t.Helper()
	conn, err := net.Dial("tcp", p.addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(settle))
	io.WriteString(conn, testenv.Handshake("/?token="+c.Token+"&uuid="+c.UUID, extra...))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("console not opened: %v %v", resp, err)
	}
	return conn, wire.NewReader(br, wire.ReaderOptions{}), resp.Header.Get("Sec-WebSocket-Protocol")
}

// closePayload is a close frame's payload: code and reason.
func closePayload(code int, reason string) []byte {
	return append(be.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// proxyClose reads the proxy's frames until its close frame and returns
// its code and reason, and the output before it; it fails the test if
// the connection ends without one.
func proxyClose(t *testing.T, r *wire.Reader) (code int, reason, output string) {
	t.Helper()
	var out strings.Builder
	for {
		h, err := r.NextFrame()
		if err != nil {
			t.Fatalf("no close frame from the proxy: %v (after output %q)", err, out.String())
		}
		if h.Op != wire.OpClose {
			io.Copy(&out, r)
			continue
		}
		var ctrl [125]byte
		p, err := r.ReadControl(ctrl[:])
		if err == nil {
			code, reason, err = wire.ParseClosePayload(p)
		}
		if err != nil {
			t.Fatalf("the proxy's close frame %x: %v", p, err)
		}
		return code, reason, out.String()
	}
}

// proxyOutput reads the proxy's frames until their bytes contain want;
// it fails the test if the session ends first.
func proxyOutput(t *testing.T, r *wire.Reader, want string) string {
	t.Helper()
	var out strings.Builder
	for !strings.Contains(out.String(), want) {
		h, err := r.NextFrame()
		if err != nil || h.Op == wire.OpClose {
			var reason string
			if h.Op == wire.OpClose {
				var ctrl [125]byte
				p, _ := r.ReadControl(ctrl[:])
				code, why, _ := wire.ParseClosePayload(p)
				reason = fmt.Sprintf("close %d %q", code, why)
			}
			t.Fatalf("session ended (%v %s) before output %q; got %q", err, reason, want, out.String())
		}
		io.Copy(&out, r)
	}
	return out.String()
}

// The client's close code is echoed (RFC 6455 section 5.5.1), whatever
// it is among the codes a close frame may carry; one it may not carry
// (reserved, or never to be sent) breaks RFC 6455: 1002.
func TestClientCloseCodeEchoed(t *testing.T) {
	t.Parallel()
	s := newSession(t)
	c := s.attachable(t, "sh")
	cases := []struct {
		name    string
		payload []byte
		code    int
		reason  string
	}{
		{"1000", closePayload(1000, "bye"), 1000, ""},
		{"1001 going away", closePayload(1001, "tab closed"), 1001, ""},
		{"1003", closePayload(1003, ""), 1003, ""},
		{"1008", closePayload(1008, ""), 1008, ""},
		{"1011", closePayload(1011, ""), 1011, ""},
		{"1014", closePayload(1014, ""), 1014, ""},
		{"3000 registered", closePayload(3000, ""), 3000, ""},
		{"4001 private", closePayload(4001, "app"), 4001, ""},
		{"4999 private", closePayload(4999, ""), 4999, ""},
		{"no code", nil, 1000, ""},
		{"999", closePayload(999, ""), 1002, "invalid close code 999"},
		{"1004 reserved", closePayload(1004, ""), 1002, "invalid close code 1004"},
		{"1005 never sent", closePayload(1005, ""), 1002, "invalid close code 1005"},
		{"1006 never sent", closePayload(1006, ""), 1002, "invalid close code 1006"},
		{"1015 never sent", closePayload(1015, ""), 1002, "invalid close code 1015"},
		{"2999 reserved", closePayload(2999, ""), 1002, "invalid close code 2999"},
		{"5000", closePayload(5000, ""), 1002, "invalid close code 5000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, r, _ := rawConsole(t, s.proxy, c)
			conn.Write(testenv.Frame(0x88, tc.payload, false))
			if code, reason, _ := proxyClose(t, r); code != tc.code || reason != tc.reason {
				t.Fatalf("the proxy closed with %d %q, want %d %q", code, reason, tc.code, tc.reason)
			}
		})
	}
}

// Text messages are not checked for UTF-8 (binary subprotocol): the
// payload reaches the container unchanged, in one frame or in fragments,
// and the session goes on.
func TestTextNotValidated(t *testing.T) {
	t.Parallel()
	s := newSession(t)
	// Not UTF-8: a lone 0xff and 0xfe, a lead byte before an ASCII one, a
	// truncated three-byte sequence.
	const typed = "a\xffb\xfe\xc3(\xe2\n"
	const hex = "61 ff 62 fe c3 28 e2 0a"
	cases := []struct {
		name   string
		frames []byte
	}{
		{"one frame", testenv.Frame(0x81, []byte(typed), false)},
		{"fragments", append(testenv.Frame(0x01, []byte(typed[:2]), false), testenv.Frame(0x80, []byte(typed[2:]), false)...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The terminal passes bytes as they are; od shows them. Bytes
			// that came before stty would be echoed, so the frames wait
			// for "ready", which comes once stty has run and a first byte
			// (a newline) has gone through the session.
			c := s.attachable(t, `stty raw -echo; head -c 1 >/dev/null; echo ready; head -c 8 | od -An -tx1`)
			conn, r, subprotocol := rawConsole(t, s.proxy, c)
			if subprotocol != "binary" {
				t.Fatalf("subprotocol %q, want binary", subprotocol)
			}
			conn.Write(testenv.Frame(0x82, []byte("\n"), false))
			proxyOutput(t, r, "ready")
			conn.Write(tc.frames)
			code, reason, out := proxyClose(t, r)
			if got := strings.Join(strings.Fields(out), " "); got != hex {
				t.Errorf("the container read %q, want %q", got, hex)
			}
			if code != 1000 || reason != "container exited" {
				t.Errorf("session ended with %d %q, want 1000 \"container exited\"", code, reason)
			}
		})
	}
}

// On the web console's subprotocol a text message is one control object
// in one frame of at most 256 bytes; anything else closes the session
// with 1007, and a valid one lets it go on.
func TestConsoleControlMessages(t *testing.T) {
	t.Parallel()
	s := newSession(t)
	c := s.attachable(t, "sh")
	resize := `{"type":"resize","rows":30,"cols":100}`
	padded := func(n int) string { return resize[:len(resize)-1] + strings.Repeat(" ", n-len(resize)) + "}" }
	text := func(p string) []byte { return testenv.Frame(0x81, []byte(p), false) }
	cases := []struct {
		name   string
		frames []byte
		ok     bool // the session goes on
	}{
		{"resize", text(resize), true},
		{"resize of 256 bytes", text(padded(256)), true},
		{"resize of 257 bytes", text(padded(257)), false},
		{"not JSON", text("ls -la\n"), false},
		{"empty", text(""), false},
		{"JSON array", text(`[1,2]`), false},
		{"unknown type", text(`{"type":"paste","data":"rm -rf /"}`), false},
		{"no type", text(`{"rows":30,"cols":100}`), false},
		{"rows 0", text(`{"type":"resize","rows":0,"cols":100}`), false},
		{"cols 1001", text(`{"type":"resize","rows":30,"cols":1001}`), false},
		{"in two frames", append(testenv.Frame(0x01, []byte(resize[:10]), false), testenv.Frame(0x80, []byte(resize[10:]), false)...), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, r, subprotocol := rawConsole(t, s.proxy, c, "Sec-WebSocket-Protocol: "+wsproxy.ConsoleSubprotocol)
			if subprotocol != wsproxy.ConsoleSubprotocol {
				t.Fatalf("subprotocol %q, want %s", subprotocol, wsproxy.ConsoleSubprotocol)
			}
			conn.Write(tc.frames)
			if tc.ok {
				conn.Write(testenv.Frame(0x82, []byte("echo "+tc.name+"-$((6*7))\n"), false))
				proxyOutput(t, r, tc.name+"-42")
				return
			}
			if code, reason, _ := proxyClose(t, r); code != 1007 {
				t.Fatalf("the proxy closed with %d %q, want 1007", code, reason)
			}
		})
	}
}
