package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/zun-wsproxy/zun-wsproxy/internal/auth"
	"github.com/zun-wsproxy/zun-wsproxy/internal/console"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func TestForwardedFor(t *testing.T) {
	trusted := NewTrustedProxies(prefixes("10.0.0.0/8", "fd00::/8"))
	cases := []struct {
		name  string
		lines []string
		want  string // "" when none
	}{
		{"one client", []string{"192.0.2.7"}, "192.0.2.7"},
		{"rightmost untrusted wins over what the client claimed", []string{"203.0.113.9, 192.0.2.7"}, "192.0.2.7"},
		{"trusted proxies skipped", []string{"192.0.2.7, 10.0.0.5, 10.0.0.6"}, "192.0.2.7"},
		{"over several lines, in order", []string{"203.0.113.9", "192.0.2.7, 10.0.0.5", "10.0.0.6"}, "192.0.2.7"},
		{"the last line is the rightmost", []string{"10.0.0.5", "192.0.2.7"}, "192.0.2.7"},
		{"spaces and tabs", []string{" 192.0.2.7\t,\t10.0.0.5 "}, "192.0.2.7"},
		{"every element trusted: the leftmost", []string{"10.0.0.7, 10.0.0.5"}, "10.0.0.7"},
		{"malformed rightmost: none", []string{"192.0.2.7, unknown"}, ""},
		{"malformed behind a trusted proxy: that proxy", []string{"192.0.2.7, garbage, 10.0.0.5"}, "10.0.0.5"},
		{"malformed left of the client: not reached", []string{"garbage, 192.0.2.7"}, "192.0.2.7"},
		{"empty element stops", []string{"192.0.2.7,, 10.0.0.5"}, "10.0.0.5"},
		{"empty line stops", []string{"192.0.2.7", "", "10.0.0.5"}, "10.0.0.5"},
		{"trailing comma: none", []string{"192.0.2.7,"}, ""},
		{"IPv6", []string{"2001:db8::7, fd00::1"}, "2001:db8::7"},
		{"IPv6 bracketed", []string{"[2001:db8::7]"}, "2001:db8::7"},
		{"IPv6 with a port", []string{"[2001:db8::7]:4711"}, "[2001:db8::7]:4711"},
		{"IPv4 with a port", []string{"192.0.2.7:4711"}, "192.0.2.7:4711"},
		{"IPv4-mapped IPv6 is IPv4", []string{"::ffff:192.0.2.7"}, "192.0.2.7"},
		{"IPv4-mapped trusted proxy", []string{"192.0.2.7, ::ffff:10.0.0.5"}, "192.0.2.7"},
		{"zone refused", []string{"192.0.2.7, fe80::1%eth0"}, ""},
		{"host name refused", []string{"client.example.org"}, ""},
		{"CIDR refused", []string{"192.0.2.0/24"}, ""},
		{"octet with a leading zero refused", []string{"192.0.2.07"}, ""},
		{"bracketed IPv4 refused", []string{"[192.0.2.7]"}, ""},
		{"RFC 7239 syntax refused", []string{"for=192.0.2.7"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := forwardedFor(c.lines, trusted.Contains)
			s := ""
			if ok {
				s = got.String()
				if got.Port() == 0 {
					s = got.Addr().String()
				}
			}
			if s != c.want {
				t.Errorf("%q: %q, want %q", c.lines, s, c.want)
			}
		})
	}
}

// forwardedForReference is forwardedFor written the obvious way.
func forwardedForReference(lines []string, trusted func(netip.Addr) bool) (netip.AddrPort, bool) {
	elems := strings.Split(strings.Join(lines, ","), ",")
	var named netip.AddrPort
	ok := false
	for i := len(elems) - 1; i >= 0; i-- {
		a, valid := parseForwarded(elems[i])
		if !valid {
			break
		}
		named, ok = a, true
		if !trusted(a.Addr()) {
			break
		}
	}
	return named, ok
}

// FuzzForwardedFor: the walk agrees with the obvious one; the client it
// names is never zoned nor IPv4-mapped; and when the rightmost element is
// an untrusted address, that is the client, whatever stands left of it
// (what a client sends cannot get past the first proxy's record).
func FuzzForwardedFor(f *testing.F) {
	f.Add("203.0.113.9, 192.0.2.7", "10.0.0.5", "10.0.0.0/8")
	f.Add("[2001:db8::7]:4711,garbage", " 10.1.2.3\t", "10.0.0.0/8")
	f.Add("", "::ffff:10.0.0.5,,", "::/0")
	f.Fuzz(func(t *testing.T, line1, line2, prefix string) {
		p, err := netip.ParsePrefix(prefix)
		if err != nil {
			p = netip.MustParsePrefix("10.0.0.0/8")
		}
		trusted := NewTrustedProxies([]netip.Prefix{p.Masked()}).Contains
		lines := []string{line1, line2}
		got, ok := forwardedFor(lines, trusted)
		want, wantOK := forwardedForReference(lines, trusted)
		if got != want || ok != wantOK {
			t.Fatalf("%q: %v %v, reference %v %v", lines, got, ok, want, wantOK)
		}
		if ok && (got.Addr().Zone() != "" || got.Addr().Is4In6()) {
			t.Fatalf("%q: named %v, zoned or IPv4-mapped", lines, got)
		}
		elems := strings.Split(line2, ",")
		if last, valid := parseForwarded(elems[len(elems)-1]); valid && !trusted(last.Addr()) && got != last {
			t.Fatalf("%q: named %v, not the rightmost untrusted %v", lines, got, last)
		}
	})
}

// The limiter, the logs and the audit record name the client a trusted
// proxy names; a peer that is not trusted is named itself, whatever it
// claims.
func TestClientAddress(t *testing.T) {
	cases := []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no proxy", "192.0.2.7:4711", nil, "192.0.2.7:4711"},
		{"untrusted peer's X-Forwarded-For ignored", "192.0.2.7:4711", []string{"198.51.100.1"}, "192.0.2.7:4711"},
		{"trusted proxy names the client", "10.0.0.5:80", []string{"198.51.100.1"}, "198.51.100.1"},
		{"trusted proxy appends to a forged line", "10.0.0.5:80", []string{"203.0.113.66", "198.51.100.1"}, "198.51.100.1"},
		{"trusted proxy without X-Forwarded-For", "10.0.0.5:80", nil, "10.0.0.5:80"},
		{"trusted proxy with a malformed one", "10.0.0.5:80", []string{"unknown"}, "10.0.0.5:80"},
		{"IPv4-mapped peer", "[::ffff:10.0.0.5]:80", []string{"198.51.100.1:4711"}, "198.51.100.1:4711"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			srv := New(Options{
				Resolver: resolverFunc(func(context.Context, auth.Request) (console.Target, error) {
					return console.Target{}, auth.ErrUnauthorized
				}),
				Logger:           slog.New(slog.NewTextHandler(&logs, nil)),
				AuthFailureLimit: 2,
				TrustedProxies:   NewTrustedProxies(prefixes("10.0.0.0/8")),
			})
			try := func(peer string, xff []string) int {
				r := httptest.NewRequest("GET", "/?token=wrong&uuid=u", nil)
				r.RemoteAddr = peer
				testenv.UpgradeHeaders(r.Header)
				for _, v := range xff {
					r.Header.Add("X-Forwarded-For", v)
				}
				w := httptest.NewRecorder()
				srv.ServeHTTP(w, r)
				return w.Code
			}
			got := []int{try(c.peer, c.xff), try(c.peer, c.xff), try(c.peer, c.xff)}
			if fmt.Sprint(got) != "[401 401 429]" {
				t.Errorf("three wrong tokens: %v, want [401 401 429]", got)
			}
			if n := strings.Count(logs.String(), " client="+c.want+" "); n != 3 {
				t.Errorf("%d log lines name client=%s, want 3:\n%s", n, c.want, logs.String())
			}
			// Another client through the same proxy, or the proxy itself,
			// is not locked out with this one.
			other := "198.51.100.99"
			if c.want == other {
				other = "198.51.100.98"
			}
			if code := try("10.0.0.5:80", []string{other}); code != 401 {
				t.Errorf("another client through the proxy: %d, want 401", code)
			}
			if code := try("192.0.2.200:1", nil); code != 401 {
				t.Errorf("another client: %d, want 401", code)
			}
		})
	}
}

func TestTrustedProxiesSet(t *testing.T) {
	var none *TrustedProxies
	if none.Contains(netip.MustParseAddr("127.0.0.1")) {
		t.Error("a nil set trusts")
	}
	tp := NewTrustedProxies(prefixes("10.0.0.0/8"))
	a := netip.MustParseAddr("10.1.2.3")
	if !tp.Contains(a) || !tp.Contains(netip.MustParseAddr("::ffff:10.1.2.3")) || tp.Contains(netip.MustParseAddr("192.0.2.7")) {
		t.Error("membership")
	}
	tp.Set(prefixes("192.0.2.0/24"))
	if tp.Contains(a) || !tp.Contains(netip.MustParseAddr("192.0.2.7")) {
		t.Error("after Set")
	}
}
