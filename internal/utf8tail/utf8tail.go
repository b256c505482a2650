// Package utf8tail finds where a byte stream cut at any point ends inside a
// UTF-8 character, so that what is sent (a console message) or written (a
// recording's JSON text) ends on a whole character, and the rest waits for
// the next bytes.
package utf8tail

// Incomplete returns how many bytes at the end of p form the beginning
// of a UTF-8 character that the next bytes could still complete (0 to 3).
// Those bytes are held back so that no message ends inside a character.
// Bytes that can never form a character are not held: they are sent as
// they are, since bytes are regrouped, never changed.
func Incomplete(p []byte) int {
	// Look back at most 3 bytes for the lead byte of the last character.
	for back := 1; back <= 3 && back <= len(p); back++ {
		b := p[len(p)-back]
		if b&0xC0 == 0x80 { // continuation byte: keep looking
			continue
		}
		need := seqLen(b)
		if need <= back {
			// ASCII, an invalid lead, or a sequence already complete.
			return 0
		}
		if !validPrefix(p[len(p)-back:]) {
			return 0
		}
		return back
	}
	return 0
}

// seqLen is the length of the sequence lead byte b starts, or 0 when b
// cannot start one.
func seqLen(b byte) int {
	switch {
	case b < 0x80:
		return 1
	case b >= 0xC2 && b <= 0xDF:
		return 2
	case b >= 0xE0 && b <= 0xEF:
		return 3
	case b >= 0xF0 && b <= 0xF4:
		return 4
	}
	return 0
}

// validPrefix reports whether p (a lead byte and 0-2 continuation bytes) is
// a prefix of some valid UTF-8 sequence (RFC 3629 table: no overlongs, no
// surrogates, nothing above U+10FFFF).
func validPrefix(p []byte) bool {
	if len(p) < 2 {
		return true
	}
	lo, hi := byte(0x80), byte(0xBF)
	switch p[0] {
	case 0xE0:
		lo = 0xA0
	case 0xED:
		hi = 0x9F
	case 0xF0:
		lo = 0x90
	case 0xF4:
		hi = 0x8F
	}
	if p[1] < lo || p[1] > hi {
		return false
	}
	for _, c := range p[2:] {
		if c&0xC0 != 0x80 {
			return false
		}
	}
	return true
}
