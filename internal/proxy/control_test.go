package proxy

import "testing"

func TestParseControl(t *testing.T) {
	cases := []struct {
		in   string
		want Control
		ok   bool
	}{
		{`{"type":"resize","rows":24,"cols":80}`, Control{Type: "resize", Rows: 24, Cols: 80}, true},
		{`{"type":"resize","rows":0,"cols":80}`, Control{}, false},
		{`{"type":"resize","rows":24,"cols":5000}`, Control{}, false},
		{`{"type":"paste","data":"rm -rf /"}`, Control{}, false},
		{`ls -la`, Control{}, false},
		{``, Control{}, false},
	}
	for _, c := range cases {
		got, err := ParseControl([]byte(c.in))
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseControl(%q) = %+v, %v", c.in, got, err)
		}
	}
}
