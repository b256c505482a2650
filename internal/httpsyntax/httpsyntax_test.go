package httpsyntax

import "testing"

func TestClasses(t *testing.T) {
	cases := []struct {
		s            string
		token, value bool
	}{
		{"Sec-WebSocket-Accept", true, true},
		{"x!#$%&'*+-.^_`|~9", true, true},
		{"", true, true},
		{"a b", false, true},
		{"a\tb", false, true},
		{"a:b", false, true},
		{`a"b`, false, true},
		{"a(b)", false, true},
		{"a\rb", false, false},
		{"a\x00", false, false},
		{"a\x7f", false, false},
		{"caf\xc3\xa9", false, false},
	}
	for _, c := range cases {
		if IsToken(c.s) != c.token || IsToken([]byte(c.s)) != c.token {
			t.Errorf("IsToken(%q) = %v, want %v", c.s, !c.token, c.token)
		}
		if IsFieldValue(c.s) != c.value || IsFieldValue([]byte(c.s)) != c.value {
			t.Errorf("IsFieldValue(%q) = %v, want %v", c.s, !c.value, c.value)
		}
	}
}
