package config

import (
	"flag"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

var updateREADME = flag.Bool("update-readme", false, "rewrite README.md's configuration table from the options table")

// The README's table of options, between these lines, is the options
// table's rendering.
const (
	readmeBegin = "<!-- options: generated from internal/config/options.go by `go generate ./internal/config`; edit there -->"
	readmeEnd   = "<!-- end of options -->"
)

// optionsMarkdown renders the options table as the README shows it.
func optionsMarkdown() string {
	var b strings.Builder
	b.WriteString("| option | default | value | meaning |\n|---|---|---|---|\n")
	for _, o := range options {
		def := o.shown
		switch {
		case def != "":
		case o.def == "":
			def = "—"
		default:
			def = "`" + o.def + "`"
		}
		fmt.Fprintf(&b, "| `[%s] %s` | %s | %s | %s |\n", o.section, o.name, def, o.kind, o.doc)
	}
	return b.String()
}

func TestREADMEOptions(t *testing.T) {
	path := filepath.Join(testenv.RepoRoot(), "README.md")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	begin, end := strings.Index(readme, readmeBegin), strings.Index(readme, readmeEnd)
	if begin < 0 || end < begin {
		t.Fatalf("README.md has no %q … %q section", readmeBegin, readmeEnd)
	}
	begin += len(readmeBegin) + 1
	want := optionsMarkdown()
	if readme[begin:end] == want {
		return
	}
	if *updateREADME {
		if err := os.WriteFile(path, []byte(readme[:begin]+want+readme[end:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md's configuration table is not the options table's; run `go generate ./internal/config`. Want:\n%s", want)
}

// Each option is in the table once, its default is a value it accepts,
// and every field of Config is some option's, or named here as computed.
func TestOptionTable(t *testing.T) {
	seen := map[string]bool{}
	fields := map[string]bool{}
	c := &Config{}
	base := reflect.ValueOf(c).Pointer()
	for _, o := range options {
		key := o.section + "." + o.name
		if seen[key] {
			t.Errorf("[%s] %s: twice in the table", o.section, o.name)
		}
		seen[key] = true
		if o.doc == "" {
			t.Errorf("[%s] %s: no doc", o.section, o.name)
		}
		if o.hostDefault == nil && !strings.Contains(o.def, "$") {
			if _, err := o.kind.read(o.def); err != nil {
				t.Errorf("[%s] %s: default %q refused: %v", o.section, o.name, o.def, err)
			}
		}
		if o.dst != nil {
			fields[fmt.Sprint(reflect.ValueOf(o.dst(c)).Pointer()-base)] = true
		}
	}
	computed := map[string]bool{"Files": true, "Mode": true, "LogFile": true, "Warnings": true,
		"Proxy.Cert": true, "Proxy.Key": true, "Database.DSN": true, "Database.TLS": true,
		"Database.MaxOpen": true}
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		for i := 0; i < v.NumField(); i++ {
			f, name := v.Field(i), prefix+v.Type().Field(i).Name
			if f.Kind() == reflect.Struct && f.Type().PkgPath() == v.Type().PkgPath() && !computed[name] {
				walk(f, name+".")
				continue
			}
			if off := fmt.Sprint(f.Addr().Pointer() - base); fields[off] == computed[name] {
				t.Errorf("Config.%s: option destination %v, computed %v", name, fields[off], computed[name])
			}
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
}

// Every option is read through the table: a value its kind refuses is
// refused with the option's name, and one it accepts reaches its field.
func TestOptionKinds(t *testing.T) {
	type sample struct {
		bad, good string
		want      any // the good value read
	}
	samples := func(k kind) (sample, bool) {
		switch k := k.(type) {
		case boolean:
			return sample{"maybe", "yes", true}, true
		case integer:
			return sample{fmt.Sprint(k.hi + 1), fmt.Sprint(k.lo + 1), k.lo + 1}, true
		case size:
			return sample{fmt.Sprint(k.min - 1), fmt.Sprint(k.min), k.min}, true
		case port:
			return sample{"65536", "8080", 8080}, true
		case seconds:
			return sample{"NaN", "1.5", 1500 * time.Millisecond}, true
		case choice:
			return sample{"none of them", k.values[len(k.values)-1], k.values[len(k.values)-1]}, true
		case address:
			return sample{"8080", "127.0.0.1:8080", "127.0.0.1:8080"}, true
		case urlKind:
			u := k.schemes[len(k.schemes)-1] + "://h.example/"
			return sample{"ftp://h.example/", u, u}, true
		case list:
			return sample{"", " a, b ,", []string{"a", "b"}}, true
		case prefixes:
			return sample{"h.example", "10.0.0.0/8", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, true
		case query:
			return sample{"a=%zz", "charset=utf8", url.Values{"charset": {"utf8"}}}, true
		case path:
			if k.readable {
				return sample{"/nonexistent/file", "/dev/null", "/dev/null"}, true
			}
			return sample{"", "/srv/x", "/srv/x"}, true
		case text:
			return sample{"", "x", "x"}, true
		}
		return sample{}, false
	}
	// What some options need besides: cross-checks that are not the
	// option's own.
	dir := t.TempDir()
	certFile, keyFile, _ := testenv.SelfSignedCert(t)
	apiKey := write(t, dir, "api.key", "0123456789abcdef\n")
	needs := map[string]string{
		"metrics.profiling":               "[metrics]\nlisten = 127.0.0.1:1\n",
		"websocket_proxy.proxy_protocol":  "[websocket_proxy]\ntrusted_proxies = 10.0.0.1\n",
		"admin.listen":                    "[admin]\nkey_file = " + apiKey + "\n",
		"websocket_proxy.ssl_only":        "[websocket_proxy]\ncert = " + certFile + "\nkey = " + keyFile + "\n",
		"websocket_proxy.ticket_key_file": "[websocket_proxy]\ncert = " + certFile + "\nkey = " + keyFile + "\n",
	}
	for _, o := range options {
		s, ok := samples(o.kind)
		if !ok {
			t.Errorf("[%s] %s: no sample for kind %T", o.section, o.name, o.kind)
			continue
		}
		key := o.section + "." + o.name
		if s.bad != "" {
			path := write(t, dir, "bad.conf", needs[key]+"["+o.section+"]\n"+o.name+" = "+s.bad+"\n")
			_, err := Load([]string{path}, nil)
			if prefix := path + ": [" + o.section + "] " + o.name + ": "; err == nil || !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("[%s] %s = %s: error %v, want one starting %q", o.section, o.name, s.bad, err, prefix)
			}
		}
		if o.dst == nil || o.name == "connection" {
			continue
		}
		path := write(t, dir, "good.conf", needs[key]+"["+o.section+"]\n"+o.name+" = "+s.good+"\n")
		c, err := Load([]string{path}, nil)
		if err != nil {
			t.Errorf("[%s] %s = %s: %v", o.section, o.name, s.good, err)
			continue
		}
		got := reflect.ValueOf(o.dst(c)).Elem()
		if want := reflect.ValueOf(s.want).Convert(got.Type()); !reflect.DeepEqual(got.Interface(), want.Interface()) {
			t.Errorf("[%s] %s = %s: field %v, want %v", o.section, o.name, s.good, got, want)
		}
	}
}

// Each kind's bounds are inclusive: the values at them are accepted, the
// ones just past them refused. A size is 0 (no bound) or from its minimum.
// IPv4-mapped prefixes are their IPv4 equivalents down to ::ffff:0:0/96.
func TestKindBounds(t *testing.T) {
	cases := []struct {
		kind kind
		in   string
		want any // nil: refused
	}{
		{integer{1, 10}, "0", nil},
		{integer{1, 10}, "1", 1},
		{integer{1, 10}, "10", 10},
		{integer{1, 10}, "11", nil},
		{size{min: 4096, max: 1 << 40}, "0", 0},
		{size{min: 4096, max: 1 << 40}, "1", nil},
		{size{min: 4096, max: 1 << 40}, "4095", nil},
		{size{min: 4096, max: 1 << 40}, "4096", 4096},
		{size{min: 4096, max: 1 << 40}, "1099511627776", 1 << 40},
		{size{min: 4096, max: 1 << 40}, "1099511627777", nil},
		{size{min: 4096, max: 1 << 40}, "-1", nil},
		{port{}, "-1", nil},
		{port{}, "0", 0},
		{port{}, "65535", 65535},
		{port{}, "65536", nil},
		{seconds{}, "0", nil},
		{seconds{optional: true}, "0", time.Duration(0)},
		{seconds{}, "0.001", time.Millisecond},
		{seconds{}, "31536000", 365 * 24 * time.Hour},
		{seconds{}, "31536000.001", nil},
		{prefixes{}, "::ffff:10.0.0.0/104", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{prefixes{}, "::ffff:0:0/96", []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}},
		{prefixes{}, "::ffff:10.0.0.5", []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32")}},
		{prefixes{}, "::/95", []netip.Prefix{netip.MustParsePrefix("::/95")}},
	}
	for _, c := range cases {
		got, err := c.kind.read(c.in)
		switch {
		case c.want == nil && err == nil:
			t.Errorf("%v %q: accepted as %v", c.kind, c.in, got)
		case c.want != nil && (err != nil || !reflect.DeepEqual(got, c.want)):
			t.Errorf("%v %q: %v, %v; want %v", c.kind, c.in, got, err, c.want)
		}
	}
}
