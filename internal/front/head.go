package front

import (
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/zun-wsproxy/zun-wsproxy/internal/httpsyntax"
)

// parseHead makes a request of head (a request line and header lines,
// each ending in CRLF, and the empty line), or reports false for anything
// it does not fully understand: another method or version, a target with
// escapes or outside printable ASCII, a header line that is not a token,
// a colon and printable ASCII, folded lines, no Host or more than one, a
// body, Expect. Those go to net/http, which answers them as it always did;
// takes, given the target's path, says which paths are the front's.
func parseHead(head string, takes func(path string) bool) (*http.Request, bool) {
	line, rest, ok := strings.Cut(head, "\r\n")
	const method, version = "GET ", " HTTP/1.1"
	if !ok || len(line) <= len(method)+len(version) || !strings.HasPrefix(line, method) || !strings.HasSuffix(line, version) {
		return nil, false
	}
	target := line[len(method) : len(line)-len(version)]
	if target == "" || target[0] != '/' || !validTarget(target) {
		return nil, false
	}
	path, query, _ := strings.Cut(target, "?")
	if strings.IndexByte(path, '%') >= 0 || !takes(path) {
		return nil, false
	}
	lines := strings.Count(rest, "\r\n")
	h := make(http.Header, lines)
	// One backing array for the values: a repeated field appends past
	// its one-element window and so gets a slice of its own.
	values := make([]string, lines)
	var host string
	hosts := 0
	for i := 0; ; i++ {
		line, rest, ok = strings.Cut(rest, "\r\n")
		if !ok {
			return nil, false
		}
		if line == "" {
			break
		}
		colon := strings.IndexByte(line, ':')
		if colon <= 0 || !httpsyntax.IsToken(line[:colon]) {
			return nil, false
		}
		value := strings.Trim(line[colon+1:], " \t")
		if !httpsyntax.IsFieldValue(value) {
			return nil, false
		}
		key := textproto.CanonicalMIMEHeaderKey(line[:colon])
		switch key {
		case "Host": // in r.Host alone, as net/http's server has it
			host = value
			hosts++
			continue
		case "Content-Length":
			if value != "0" {
				return nil, false
			}
			if _, seen := h[key]; seen {
				continue // repeated, and equal: one, as net/http keeps it
			}
		case "Transfer-Encoding", "Expect":
			return nil, false
		}
		if vs, seen := h[key]; seen {
			h[key] = append(vs, value)
		} else {
			values[i] = value
			h[key] = values[i : i+1 : i+1]
		}
	}
	if rest != "" || hosts != 1 || !validHost(host) {
		return nil, false
	}
	if p := h["Pragma"]; len(p) > 0 && p[0] == "no-cache" && h["Cache-Control"] == nil {
		h["Cache-Control"] = []string{"no-cache"} // as net/http does
	}
	return &http.Request{
		Method:     http.MethodGet,
		URL:        &url.URL{Path: path, RawQuery: query},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Body:       http.NoBody,
		Host:       host,
		RequestURI: target,
	}, true
}

// validTarget: printable ASCII but space, and no fragment.
func validTarget(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// validHost: a host name, an IPv4 address or a bracketed IPv6 one, and
// an optional port.
func validHost(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']':
		default:
			return false
		}
	}
	return true
}
