// Package httpsyntax holds the character classes of HTTP/1.1 heads
// (RFC 9110 section 5) that the project's own head readers accept: the
// console port's request reader (internal/front) and the reader of
// Docker's upgrade answers (internal/websocket). Anything outside them
// goes to net/http, which answers as it always did.
package httpsyntax

import "strings"

// IsToken reports whether s, if not empty, is an RFC 9110 token: a field
// name, a method.
func IsToken[T ~string | ~[]byte](s T) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// IsFieldValue reports whether s is printable ASCII and tabs (RFC 9110
// takes more, obs-text, which is left to net/http).
func IsFieldValue[T ~string | ~[]byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}
