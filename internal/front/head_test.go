package front

import (
	"bufio"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func consoleOnly(path string) bool { return path == "/" || path == "/websockify" }

// zunclient is what python-zunclient's websocket-client sends for attach.
const zunclient = "GET /?token=9c7e5d&uuid=5f0c4a1e-7a5b-4c43-9a3e-0c5d7c1f2b6e HTTP/1.1\r\n" +
	"Upgrade: websocket\r\n" +
	"Host: 127.0.0.1:6784\r\n" +
	"Origin: http://127.0.0.1:6784\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Sec-WebSocket-Version: 13\r\n" +
	"Connection: Upgrade\r\n\r\n"

// chromium is a browser's handshake, as Horizon's console page makes it.
const chromium = "GET /websockify?token=abc HTTP/1.1\r\n" +
	"Host: zun.example.org\r\n" +
	"Connection: Upgrade\r\n" +
	"Pragma: no-cache\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0 Safari/537.36\r\n" +
	"Upgrade: websocket\r\n" +
	"Origin: https://horizon.example.org\r\n" +
	"Sec-WebSocket-Version: 13\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Accept-Language: en-US,en;q=0.9\r\n" +
	"Cookie: sessionid=x1; csrftoken=y2\r\n" +
	"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n" +
	"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" +
	"Sec-WebSocket-Protocol: binary, base64\r\n\r\n"

func TestParseHeadTakes(t *testing.T) {
	for _, tc := range []struct {
		name, head      string
		path, query     string
		host            string
		key, want       string // a header and its values joined by |
		absent          string
		fixedPragmaToCC bool
	}{
		{name: "zunclient", head: zunclient, path: "/", query: "token=9c7e5d&uuid=5f0c4a1e-7a5b-4c43-9a3e-0c5d7c1f2b6e",
			host: "127.0.0.1:6784", key: "Sec-Websocket-Key", want: "dGhlIHNhbXBsZSBub25jZQ==", absent: "Host"},
		{name: "chromium", head: chromium, path: "/websockify", query: "token=abc", host: "zun.example.org",
			key: "Sec-Websocket-Protocol", want: "binary, base64", fixedPragmaToCC: true},
		{name: "repeated field keeps order", head: "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.1\r\nUpgrade: websocket\r\nx-forwarded-for: 10.0.0.1 , 10.0.0.2\r\n\r\n",
			path: "/", host: "h", key: "X-Forwarded-For", want: "192.0.2.1|10.0.0.1 , 10.0.0.2"},
		{name: "spaces and tabs trimmed", head: "GET / HTTP/1.1\r\nHost:\th:80 \r\nUpgrade:  websocket\t\r\n\r\n",
			path: "/", host: "h:80", key: "Upgrade", want: "websocket"},
		{name: "empty value", head: "GET / HTTP/1.1\r\nHost: [::1]:6784\r\nX-Empty:\r\n\r\n", path: "/", host: "[::1]:6784", key: "X-Empty", want: ""},
		{name: "zero length body", head: "GET /? HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", path: "/", host: "h", key: "Content-Length", want: "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := parseHead(tc.head, consoleOnly)
			if !ok {
				t.Fatal("not taken")
			}
			if r.Method != "GET" || r.URL.Path != tc.path || r.URL.RawQuery != tc.query || r.Host != tc.host || r.ProtoMajor != 1 || r.ProtoMinor != 1 {
				t.Errorf("got %s %q ? %q host %q HTTP/%d.%d", r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.ProtoMajor, r.ProtoMinor)
			}
			if got := strings.Join(r.Header.Values(tc.key), "|"); got != tc.want {
				t.Errorf("%s: %q, want %q", tc.key, got, tc.want)
			}
			if tc.absent != "" && r.Header[tc.absent] != nil {
				t.Errorf("%s in the header map", tc.absent)
			}
			if tc.fixedPragmaToCC && r.Header.Get("Cache-Control") != "no-cache" {
				t.Error("Pragma: no-cache without Cache-Control: net/http adds Cache-Control: no-cache")
			}
		})
	}
}

func TestParseHeadLeavesToNetHTTP(t *testing.T) {
	const ok = "Host: h\r\nUpgrade: websocket\r\n\r\n"
	for _, tc := range []struct{ name, head string }{
		{"POST", "POST / HTTP/1.1\r\n" + ok},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n" + ok},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
		{"absolute form", "GET http://h/ HTTP/1.1\r\n" + ok},
		{"path not the console's", "GET /healthz HTTP/1.1\r\n" + ok},
		{"escaped path", "GET /%77ebsockify HTTP/1.1\r\n" + ok},
		{"fragment", "GET /#x HTTP/1.1\r\n" + ok},
		{"non-ASCII target", "GET /?t=\xc3\xa9 HTTP/1.1\r\n" + ok},
		{"two spaces", "GET  / HTTP/1.1\r\n" + ok},
		{"no target", "GET HTTP/1.1\r\n" + ok},
		{"no Host", "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\n" + ok},
		{"empty Host", "GET / HTTP/1.1\r\nHost:\r\nUpgrade: websocket\r\n\r\n"},
		{"odd Host", "GET / HTTP/1.1\r\nHost: a/b\r\nUpgrade: websocket\r\n\r\n"},
		{"body", "GET / HTTP/1.1\r\nContent-Length: 5\r\n" + ok},
		{"chunked", "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n" + ok},
		{"Expect", "GET / HTTP/1.1\r\nExpect: 100-continue\r\n" + ok},
		{"folded line", "GET / HTTP/1.1\r\nX-A: 1\r\n 2\r\n" + ok},
		{"space before colon", "GET / HTTP/1.1\r\nHost : h\r\nUpgrade: websocket\r\n\r\n"},
		{"no colon", "GET / HTTP/1.1\r\nX-A\r\n" + ok},
		{"empty name", "GET / HTTP/1.1\r\n: v\r\n" + ok},
		{"control byte in a value", "GET / HTTP/1.1\r\nX-A: a\x01b\r\n" + ok},
		{"non-ASCII value", "GET / HTTP/1.1\r\nX-A: \xc3\xa9\r\n" + ok},
		{"bare LF", "GET / HTTP/1.1\nHost: h\nUpgrade: websocket\n\n"},
		{"bare LF in a line", "GET / HTTP/1.1\r\nX-A: a\nb\r\n" + ok},
		{"bare CR", "GET / HTTP/1.1\r\nX-A: a\rb\r\n" + ok},
		{"bytes after the empty line", "GET / HTTP/1.1\r\n" + ok + "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, taken := parseHead(tc.head, consoleOnly); taken {
				t.Errorf("taken: %+v", r)
			}
		})
	}
}

// FuzzParseHead: what the front takes, net/http's own reader reads the
// same way, and its server accepts.
func FuzzParseHead(f *testing.F) {
	for _, s := range []string{zunclient, chromium,
		"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\nx: b\r\n\r\n",
		"GET /?a=%zz HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n",
		"GET HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /websockify?x HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 0\r\nUpgrade: websocket\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, head string) {
		r, ok := parseHead(head, consoleOnly)
		if !ok {
			return
		}
		want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			t.Fatalf("taken, but net/http reads %q as: %v", head, err)
		}
		if r.Method != want.Method || r.URL.Path != want.URL.Path || r.URL.RawQuery != want.URL.RawQuery || r.URL.RawPath != want.URL.RawPath ||
			r.Host != want.Host || r.RequestURI != want.RequestURI || r.ContentLength != want.ContentLength || !reflect.DeepEqual(r.Header, want.Header) {
			t.Fatalf("%q:\nfront    %s %q %q %q %q %v\nnet/http %s %q %q %q %q %v", head,
				r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.RequestURI, r.Header,
				want.Method, want.URL.Path, want.URL.RawQuery, want.Host, want.RequestURI, want.Header)
		}
	})
}
