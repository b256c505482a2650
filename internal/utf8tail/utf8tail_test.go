package utf8tail

import (
	"testing"
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
	}
	for _, c := range cases {
		if got := Incomplete(c.in); got != c.want {
			t.Errorf("%s: Incomplete(%x) = %d, want %d", c.name, c.in, got, c.want)
		}
	}
}
