package utf8tail

import (
	"testing"
	"unicode/utf8"
)

func TestIncomplete(t *testing.T) {
	euro := []byte("€")  // e2 82 ac
	emoji := []byte("😀") // f0 9f 98 80
	cases := []struct {
		name string
		in   []byte
		want int
	}{
		{"empty", nil, 0},
		{"ascii", []byte("abc"), 0},
		{"complete euro", euro, 0},
		{"euro lead only", euro[:1], 1},
		{"euro two of three", euro[:2], 2},
		{"text then partial euro", append([]byte("ab"), euro[:2]...), 2},
		{"emoji three of four", emoji[:3], 3},
		{"complete emoji", emoji, 0},
		{"stray continuation", []byte{'a', 0x80}, 0},
		{"four continuations", []byte{0x80, 0x80, 0x80, 0x80}, 0},
		{"invalid lead C0", []byte{0xC0}, 0},
		{"invalid lead F5", []byte{0xF5, 0x80}, 0},
		{"overlong E0 80", []byte{0xE0, 0x80}, 0},
		{"surrogate ED A0", []byte{0xED, 0xA0}, 0},
		{"beyond U+10FFFF F4 90", []byte{0xF4, 0x90}, 0},
		{"lead then ascii", []byte{0xE2, 'a'}, 0},
		{"two-byte lead", []byte{'x', 0xC3}, 1},
		// The RFC 3629 second-byte ranges, at both ends of each.
		{"E0 lowest second byte A0", []byte{0xE0, 0xA0}, 2},
		{"E0 overlong 9F", []byte{0xE0, 0x9F}, 0},
		{"ED highest second byte 9F", []byte{0xED, 0x9F}, 2},
		{"F0 lowest second byte 90", []byte{0xF0, 0x90}, 2},
		{"F0 overlong 8F", []byte{0xF0, 0x8F}, 0},
		{"F4 highest second byte 8F", []byte{0xF4, 0x8F, 0x80}, 3},
		{"E2 lowest continuation 80", []byte{0xE2, 0x80}, 2},
		{"E2 highest continuation BF", []byte{0xE2, 0xBF}, 2},
		{"E2 above continuations C0", []byte{0xE2, 0xC0}, 0},
		{"F1 third byte not a continuation", []byte{0xF1, 0x80, 'a'}, 0},
	}
	for _, c := range cases {
		if got := Incomplete(c.in); got != c.want {
			t.Errorf("%s: Incomplete(%x) = %d, want %d", c.name, c.in, got, c.want)
		}
	}
}

// TestIncompleteMatchesFullRune holds Incomplete against the standard
// library on every 1- and 2-byte input and on every 3-byte input whose last
// byte is at an edge of the continuation range: the bytes held back are the
// shortest tail starting at a lead byte that utf8.FullRune says the next
// bytes could still complete.
func TestIncompleteMatchesFullRune(t *testing.T) {
	want := func(p []byte) int {
		for back := 1; back <= 3 && back <= len(p); back++ {
			if utf8.RuneStart(p[len(p)-back]) {
				if utf8.FullRune(p[len(p)-back:]) {
					return 0
				}
				return back
			}
		}
		return 0
	}
	check := func(p []byte) {
		t.Helper()
		if got, w := Incomplete(p), want(p); got != w {
			t.Fatalf("Incomplete(%x) = %d, want %d", p, got, w)
		}
	}
	edges := []byte{0x00, 0x7F, 0x80, 0xBF, 0xC0, 0xFF}
	for a := range 256 {
		check([]byte{byte(a)})
		for b := range 256 {
			check([]byte{byte(a), byte(b)})
			for _, c := range edges {
				check([]byte{byte(a), byte(b), c})
				check([]byte{'x', byte(a), byte(b), c})
			}
		}
	}
}
