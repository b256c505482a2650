package config

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// write puts a config file in dir and returns its path.
func write(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, body string) (*Config, error) {
	t.Helper()
	return Load([]string{write(t, t.TempDir(), "zun.conf", body)}, nil)
}

func TestParse(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want map[string]map[string]string
	}{
		{"equals and colon", "[a]\nx = 1\ny: 2\nz = a:b\nw: a=b\n", map[string]map[string]string{"a": {"x": "1", "y": "2", "z": "a:b", "w": "a=b"}}},
		{"comments and blanks", "# c\n; c\n[a]\n\n# x = 9\nx = 1\n", map[string]map[string]string{"a": {"x": "1"}}},
		{"quotes stripped", "[a]\nx = \"q v\"\ny = 'q'\nz = \"half\n", map[string]map[string]string{"a": {"x": "q v", "y": "q", "z": "\"half"}}},
		{"empty quotes", "[a]\nx = \"\"\ny = ''\nz = \"\nw = \"'\n", map[string]map[string]string{"a": {"x": "", "y": "", "z": "\"", "w": "\"'"}}},
		{"continuation", "[a]\nx = one\n  two\n\tthree\ny = 2\n", map[string]map[string]string{"a": {"x": "one\ntwo\nthree", "y": "2"}}},
		{"section case", "[WebSocket_Proxy]\nx = 1\n[DEFAULT]\ny = 2\n", map[string]map[string]string{"websocket_proxy": {"x": "1"}, "DEFAULT": {"y": "2"}}},
		{"dashes", "[a]\nwsproxy-port = 1\n", map[string]map[string]string{"a": {"wsproxy_port": "1"}}},
		{"last wins", "[a]\nx = 1\nx = 2\n[a]\nx = 3\n", map[string]map[string]string{"a": {"x": "3"}}},
		{"crlf", "[a]\r\nx = 1\r\n", map[string]map[string]string{"a": {"x": "1"}}},
		{"empty value", "[a]\nx =\n", map[string]map[string]string{"a": {"x": ""}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ini{}
			if err := got.parse(c.in, "f"); err != nil {
				t.Fatal(err)
			}
			flat := map[string]map[string]string{}
			for s, opts := range got {
				flat[s] = map[string]string{}
				for k, e := range opts {
					flat[s][k] = e.value
				}
			}
			if !reflect.DeepEqual(flat, c.want) {
				t.Fatalf("got %v, want %v", flat, c.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	cases := map[string]string{
		"x = 1\n":           "f:1: option \"x\" before any [section]",
		"[a]\n  cont\n":     "f:2: continuation line without an option before it",
		"[a\n":              "f:1: invalid section header \"[a\"",
		"[a]\njust words\n": "f:2: expected \"option = value\", got \"just words\"",
		"[a]\n= novalue\n":  "f:2: empty option name",
		"[]\n":              "f:1: invalid section header \"[]\"",
		"[a]\nx=1\n\n  y\n": "f:4: continuation line without an option before it",
	}
	for in, want := range cases {
		err := ini{}.parse(in, "f")
		if err == nil || err.Error() != want {
			t.Errorf("parse(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestDefaults(t *testing.T) {
	c, err := load(t, "[DEFAULT]\nmy_ip = 192.0.2.7\n")
	if err != nil {
		t.Fatal(err)
	}
	want := Proxy{Host: "192.0.2.7", Port: 6784, BaseURL: "ws://192.0.2.7:6784/", Engine: "loop", BackendTimeout: 10 * time.Second,
		HeaderTimeout: 10 * time.Second, MaxHeaderBytes: 16384, MaxMessageBytes: 1 << 20, MaxSessions: 100000,
		MaxSessionsPerContainer: 100, AuthFailureLimit: 20, AuthFailureWindow: time.Minute,
		Heartbeat: 30 * time.Second, WriteTimeout: 30 * time.Second, ShutdownTimeout: 30 * time.Second}
	if !reflect.DeepEqual(c.Proxy, want) {
		t.Errorf("proxy %+v, want %+v", c.Proxy, want)
	}
	wantDocker := Docker{APIVersion: "1.26", APIHost: "192.0.2.7", APIPort: 2375, APIURL: "tcp://192.0.2.7:2375", Endpoint: "unix:///var/run/docker.sock"}
	if c.Docker != wantDocker {
		t.Errorf("docker %+v, want %+v", c.Docker, wantDocker)
	}
	if c.Database.MaxOpen != 55 || c.Database.QueryTimeout != 5*time.Second || c.Database.Connection != "" {
		t.Errorf("database %+v", c.Database)
	}
	if c.Mode != "standalone" || c.Admin.Listen != "" {
		t.Errorf("mode %q admin %+v", c.Mode, c.Admin)
	}
	if c.Debug || c.LogFile != "" {
		t.Errorf("debug %v log_file %q", c.Debug, c.LogFile)
	}
	if c.RecordingDir != "" || c.RecordingMaxSize != 100<<20 {
		t.Errorf("recording dir %q max_size %d", c.RecordingDir, c.RecordingMaxSize)
	}
	// Without my_ip, the host's own address; never empty.
	c, err = load(t, "")
	if err != nil || c.MyIP == "" || c.Proxy.Host != c.MyIP {
		t.Errorf("default my_ip %q host %q err %v", c.MyIP, c.Proxy.Host, err)
	}
}

// my_ip's default is the first IPv4 address of the host's interfaces that
// is not a loopback one. The test runs again in network and user namespaces
// of its own (so it needs no privilege), where it gives its loopback
// interface 2001:db8::9 and 192.0.2.9 besides 127.0.0.1 and ::1.
func TestDefaultMyIP(t *testing.T) {
	const env = "ZUN_WSPROXY_CONFIG_TEST_NETNS"
	if os.Getenv(env) == "1" {
		c, err := load(t, "")
		if err != nil || c.MyIP != "127.0.0.1" {
			t.Fatalf("with loopback addresses only: my_ip %q (%v), want 127.0.0.1", c.MyIP, err)
		}
		for _, args := range [][]string{{"link", "set", "lo", "up"}, {"addr", "add", "2001:db8::9/128", "dev", "lo"}, {"addr", "add", "192.0.2.9/32", "dev", "lo"}} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		if c, err = load(t, ""); err != nil || c.MyIP != "192.0.2.9" {
			t.Fatalf("my_ip %q (%v), want 192.0.2.9", c.MyIP, err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDefaultMyIP$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		GidMappingsEnableSetgroups: false,
	}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestDefaultMyIP ") {
		t.Fatalf("in a network namespace of its own: %v\n%s", err, out)
	}
}

// Without --config-file, the files and directories are found as
// oslo.config finds them: each name from the first of ~/.zun, ~, /etc/zun
// and /etc that has it as a file (a directory, for the .d names).
func TestDefaultFilesAndDirs(t *testing.T) {
	home := t.TempDir()
	mkdir := func(p string) {
		if err := os.MkdirAll(filepath.Join(home, p), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	mkdir(".zun/zun.conf") // a directory: passed over
	mkdir(".zun/zun-wsproxy.conf.d")
	mkdir("zun-wsproxy.conf.d") // behind ~/.zun's
	mkdir("zun.conf.d")
	write(t, home, "zun.conf", "")
	write(t, home, ".zun/zun-wsproxy.conf", "")
	write(t, home, "zun-wsproxy.conf", "") // behind ~/.zun's
	write(t, home, ".zun/zun.conf.d", "")  // a file: passed over
	underHome := func(paths []string) []string {
		var out []string
		for _, p := range paths {
			if strings.HasPrefix(p, home+"/") {
				out = append(out, strings.TrimPrefix(p, home+"/"))
			}
		}
		return out
	}
	t.Setenv("HOME", home)
	if got, want := underHome(DefaultFiles()), []string{"zun.conf", ".zun/zun-wsproxy.conf"}; !reflect.DeepEqual(got, want) {
		t.Errorf("DefaultFiles in ~: %q, want %q", got, want)
	}
	if got, want := underHome(DefaultDirs()), []string{"zun.conf.d", ".zun/zun-wsproxy.conf.d"}; !reflect.DeepEqual(got, want) {
		t.Errorf("DefaultDirs in ~: %q, want %q", got, want)
	}
	t.Setenv("HOME", "")
	if got := underHome(append(DefaultFiles(), DefaultDirs()...)); got != nil {
		t.Errorf("without a home directory: %q found there", got)
	}
}

// Docker's API is TLS for exec only when api_insecure is false and the
// three files are all set.
func TestDockerTLS(t *testing.T) {
	for i := range 16 {
		d := Docker{APIInsecure: i&1 != 0}
		if i&2 != 0 {
			d.CAFile = "ca.pem"
		}
		if i&4 != 0 {
			d.CertFile = "cert.pem"
		}
		if i&8 != 0 {
			d.KeyFile = "key.pem"
		}
		if got, want := d.TLS(), i == 14; got != want {
			t.Errorf("%+v: TLS() = %v, want %v", d, got, want)
		}
	}
}

// oslo.log's choice of file: log_dir alone (as Kolla writes zun.conf) means
// log_dir/<program>.log.
func TestLogFilePath(t *testing.T) {
	cases := []struct{ conf, want string }{
		{"", ""},
		{"log_file = /var/log/wsproxy.log\n", "/var/log/wsproxy.log"},
		{"log_file = wsproxy.log\n", "wsproxy.log"},
		{"log_dir = /var/log/kolla/zun\n", "/var/log/kolla/zun/zun-wsproxy.log"},
		{"log_dir = /var/log/zun\nlog_file = wsproxy.log\n", "/var/log/zun/wsproxy.log"},
		{"log_dir = /var/log/zun\nlog_file = /srv/wsproxy.log\n", "/srv/wsproxy.log"},
	}
	for _, c := range cases {
		cfg, err := load(t, "[DEFAULT]\n"+c.conf)
		if err != nil {
			t.Fatalf("%q: %v", c.conf, err)
		}
		if cfg.LogFile != c.want {
			t.Errorf("%q: log file %q, want %q", c.conf, cfg.LogFile, c.want)
		}
	}
}

func TestZunConf(t *testing.T) {
	c, err := load(t, `[DEFAULT]
debug = True
my_ip = 10.0.0.5
log_dir = /var/log/zun
log_file = wsproxy.log

[websocket_proxy]
wsproxy_host = 0.0.0.0
wsproxy_port = 6785
base_url = ws://${my_ip}:$wsproxy_port/
allowed_origins = horizon.example.org, 10.0.0.9 ,
backend_timeout = 0.5

[docker]
docker_remote_api_host = 10.0.0.6
api_insecure = yes

[database]
connection = mysql+pymysql://zun:s3cr%40t@db.example.org/zun?charset=utf8
max_pool_size = 10
max_overflow = 20
query_timeout = 2.5

[unknown_section]
anything = goes
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != "zun" {
		t.Errorf("mode %q with a database connection", c.Mode)
	}
	if !c.Debug || c.LogFile != "/var/log/zun/wsproxy.log" {
		t.Errorf("debug %v log_file %q", c.Debug, c.LogFile)
	}
	p := c.Proxy
	if p.Host != "0.0.0.0" || p.Port != 6785 || p.BaseURL != "ws://10.0.0.5:6785/" || p.BackendTimeout != 500*time.Millisecond {
		t.Errorf("proxy %+v", p)
	}
	if !reflect.DeepEqual(p.AllowedOrigins, []string{"horizon.example.org", "10.0.0.9"}) {
		t.Errorf("allowed_origins %q", p.AllowedOrigins)
	}
	if c.Docker.APIURL != "tcp://10.0.0.6:2375" || !c.Docker.APIInsecure || c.Docker.TLS() {
		t.Errorf("docker %+v", c.Docker)
	}
	d := c.Database
	if d.DSN != "zun:s3cr@t@tcp(db.example.org:3306)/zun?interpolateParams=true&parseTime=true&charset=utf8" || d.MaxOpen != 30 || d.QueryTimeout != 2500*time.Millisecond {
		t.Errorf("database %+v", d)
	}
}

func TestInterpolation(t *testing.T) {
	cases := []struct {
		in, want, err string
	}{
		{"ws://$my_ip:1/", "ws://192.0.2.1:1/", ""},
		{"ws://${my_ip}x/", "ws://192.0.2.1x/", ""},
		{"cost $$5", "cost $5", ""},
		{"$nosuch", "", "unknown option $nosuch"},
		{"a $ b", "", "'$' not followed by an option name"},
		{"${open", "", "unterminated ${"},
		{"${my_ip}", "192.0.2.1", ""},
		{"$$$my_ip$$", "$192.0.2.1$", ""},
		{"ends with $", "", "'$' not followed by an option name"},
		{"${}", "", "unknown option $ in"},
	}
	for _, c := range cases {
		cfg, err := loadWithin(t, write(t, t.TempDir(), "zun.conf", "[DEFAULT]\nmy_ip = 192.0.2.1\n[websocket_proxy]\nallowed_origins = "+c.in+"\n"))
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.in, err, c.err)
			}
		case err != nil:
			t.Errorf("%q: %v", c.in, err)
		case strings.Join(cfg.Proxy.AllowedOrigins, ",") != c.want:
			t.Errorf("%q -> %q, want %q", c.in, cfg.Proxy.AllowedOrigins, c.want)
		}
	}
	_, err := load(t, "[websocket_proxy]\nwsproxy_host = $base_url\n")
	if err == nil || !strings.Contains(err.Error(), "interpolation loop") {
		t.Errorf("loop: %v", err)
	}
}

// A $name reference is the longest run of letters, digits and '_' after
// the '$'; any other byte ends it.
func TestInterpolationNames(t *testing.T) {
	dir := t.TempDir()
	for c := byte(0x21); c < 0x7f; c++ {
		in := "$zz" + string(c) + "|"
		cfg, err := loadWithin(t, write(t, dir, "zun.conf", "[websocket_proxy]\nzz = v\nallowed_origins = "+in+"\n"))
		switch {
		case c == '$':
			if err == nil || !strings.Contains(err.Error(), "'$' not followed by an option name") {
				t.Errorf("%q: %v, want an error for the lone '$'", in, err)
			}
		case c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
			if want := "unknown option $zz" + string(c) + " "; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%q: %v, want %q", in, err, want)
			}
		case err != nil:
			t.Errorf("%q: %v", in, err)
		case strings.Join(cfg.Proxy.AllowedOrigins, ",") != "v"+string(c)+"|":
			t.Errorf("%q -> %q, want %q", in, cfg.Proxy.AllowedOrigins, "v"+string(c)+"|")
		}
	}
}

// loadWithin loads the config file at path, failing the test if that
// takes more than 2 seconds.
func loadWithin(t *testing.T, path string) (*Config, error) {
	t.Helper()
	type result struct {
		c   *Config
		err error
	}
	done := make(chan result, 1)
	go func() { c, err := Load([]string{path}, nil); done <- result{c, err} }()
	select {
	case r := <-done:
		return r.c, r.err
	case <-time.After(2 * time.Second):
		t.Fatal("Load did not return within 2s")
		return nil, nil
	}
}

func TestFilesAndDirs(t *testing.T) {
	dir := t.TempDir()
	a := write(t, dir, "a.conf", "[websocket_proxy]\nwsproxy_port = 1000\nwsproxy_host = 127.0.0.1\n")
	b := write(t, dir, "b.conf", "[websocket_proxy]\nwsproxy_port = 2000\n")
	confd := filepath.Join(dir, "zun.conf.d")
	os.Mkdir(confd, 0o755)
	write(t, confd, "20-late.conf", "[websocket_proxy]\nwsproxy_port = 4000\n")
	write(t, confd, "10-early.conf", "[websocket_proxy]\nwsproxy_port = 3000\nssl_only = false\n")
	write(t, confd, "ignored.txt", "[websocket_proxy]\nwsproxy_port = 9\n")

	c, err := Load([]string{a, b}, nil)
	if err != nil || c.Proxy.Port != 2000 || c.Proxy.Host != "127.0.0.1" {
		t.Fatalf("files: %+v %v", c, err)
	}
	c, err = Load([]string{a, b}, []string{confd})
	if err != nil || c.Proxy.Port != 4000 {
		t.Fatalf("dir: port %d %v", c.Proxy.Port, err)
	}
	if len(c.Files) != 4 || c.Files[2] != filepath.Join(confd, "10-early.conf") {
		t.Errorf("files read: %q", c.Files)
	}
	if _, err := Load([]string{filepath.Join(dir, "missing.conf")}, nil); err == nil {
		t.Error("missing file accepted")
	}
}

func TestErrorMessages(t *testing.T) {
	dir := t.TempDir()
	f := func(body string) string { return write(t, dir, "zun.conf", body) }
	cases := []struct {
		body string
		want string
	}{
		{"[websocket_proxy]\nwsproxy_port = abc\n", `[websocket_proxy] wsproxy_port: invalid port "abc" (want 0-65535)`},
		{"[websocket_proxy]\nwsproxy_port = 70000\n", `[websocket_proxy] wsproxy_port: invalid port "70000" (want 0-65535)`},
		{"[websocket_proxy]\nssl_only = maybe\n", `[websocket_proxy] ssl_only: invalid boolean "maybe" (want true or false)`},
		{"[websocket_proxy]\nengine = threads\n", `[websocket_proxy] engine: invalid engine "threads" (want loop or goroutines)`},
		{"[websocket_proxy]\nssl_only = true\n", `[websocket_proxy] ssl_only: true, but no certificate is configured (cert)`},
		{"[websocket_proxy]\ncert = /nonexistent/cert.pem\n", `[websocket_proxy] cert: unreadable: /nonexistent/cert.pem: no such file or directory`},
		{"[websocket_proxy]\nbase_url = ftp://x/\n", `[websocket_proxy] base_url: invalid URL "ftp://x/" (want ws://, wss://, http:// or https://host/)`},
		{"[websocket_proxy]\nbackend_timeout = -1\n", `[websocket_proxy] backend_timeout: invalid number of seconds "-1" (want a positive number)`},
		{"[websocket_proxy]\nheartbeat = NaN\n", `[websocket_proxy] heartbeat: invalid number of seconds "NaN" (want a positive number, or 0 for off)`},
		{"[docker]\nca_file = /nonexistent/ca.pem\n", `[docker] ca_file: unreadable: /nonexistent/ca.pem: no such file or directory`},
		{"[docker]\ndocker_remote_api_port = x\n", `[docker] docker_remote_api_port: invalid port "x" (want 0-65535)`},
		{"[database]\nconnection = sqlite:///zun.db\n", `[database] connection: unsupported database "sqlite" (supported: mysql://, mysql+pymysql://, mysql+mysqldb://, mysql+mysqlconnector://, mariadb://)`},
		{"[DEFAULT]\ndebug = 2\n", `[DEFAULT] debug: invalid boolean "2" (want true or false)`},
		{"[database]\nmax_retries = -2\n", `[database] max_retries: invalid integer "-2" (want -1-2147483647)`},
		{"[websocket_proxy]\ntoken_ttl = -5\n", `[websocket_proxy] token_ttl: invalid number of seconds "-5" (want a positive number, or 0 for off)`},
		{"[websocket_proxy]\nmax_header_size = 10\n", `[websocket_proxy] max_header_size: invalid integer "10" (want 1024-1048576)`},
		{"[websocket_proxy]\nmode = both\n", `[websocket_proxy] mode: invalid mode "both" (want zun or standalone)`},
		{"[websocket_proxy]\nmode = zun\n", `[websocket_proxy] mode: zun needs [database] connection`},
		{"[docker]\napi_url = ftp://x\n", `[docker] api_url: invalid Docker URL "ftp://x" (want unix://, tcp://, http:// or https://)`},
		{"[admin]\nlisten = 127.0.0.1:6785\n", `[admin] key_file: required when [admin] listen is set`},
		{"[admin]\nlisten = 6785\nkey_file = /k\n", `[admin] listen: invalid address "6785" (want host:port)`},
		{"[metrics]\nprofiling = true\n", `[metrics] profiling: needs [metrics] listen`},
		{"[recording]\nmax_size = 100\n", `[recording] max_size: invalid size 100 (want 0 for no bound, or at least 4096 bytes)`},
		{"[recording]\nmax_size = 1e6\n", `[recording] max_size: invalid integer "1e6" (want 0-1099511627776)`},
		{"[websocket_proxy]\ntrusted_proxies = 10.0.0.5, haproxy.internal\n", `[websocket_proxy] trusted_proxies: invalid address or CIDR "haproxy.internal" (want e.g. 10.0.0.5, 10.0.0.0/24 or fd00::/64)`},
		{"[websocket_proxy]\ntrusted_proxies = 10.0.0.0/33\n", `[websocket_proxy] trusted_proxies: invalid address or CIDR "10.0.0.0/33" (want e.g. 10.0.0.5, 10.0.0.0/24 or fd00::/64)`},
		{"[websocket_proxy]\ntrusted_proxies = fe80::1%eth0\n", `[websocket_proxy] trusted_proxies: invalid address or CIDR "fe80::1%eth0" (want e.g. 10.0.0.5, 10.0.0.0/24 or fd00::/64)`},
		{"[websocket_proxy]\ntrusted_proxies = 10.0.0.5/24\n", `[websocket_proxy] trusted_proxies: invalid CIDR "10.0.0.5/24": bits set past the prefix length (did you mean 10.0.0.0/24?)`},
		{"[websocket_proxy]\nproxy_protocol = true\n", `[websocket_proxy] proxy_protocol: true, but trusted_proxies is empty: no peer may send a PROXY header`},
		{"[websocket_proxy]\nproxy_protocol = v2\ntrusted_proxies = 10.0.0.5\n", `[websocket_proxy] proxy_protocol: invalid boolean "v2" (want true or false)`},
	}
	for _, c := range cases {
		path := f(c.body)
		_, err := Load([]string{path}, nil)
		want := path + ": " + c.want
		if err == nil || err.Error() != want {
			t.Errorf("got  %v\nwant %s", err, want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error spans lines: %q", err)
		}
	}
	// A parse error names the file and line.
	_, err := Load([]string{f("[a]\nbroken line\n")}, nil)
	if err == nil || !strings.Contains(err.Error(), "zun.conf:2:") {
		t.Errorf("parse error: %v", err)
	}
}

func TestTrustedProxies(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"10.0.0.5", []string{"10.0.0.5/32"}},
		{" 10.0.0.0/8 , 192.0.2.7,fd00::/64, ::1 ,", []string{"10.0.0.0/8", "192.0.2.7/32", "fd00::/64", "::1/128"}},
		{"::ffff:10.0.0.5, ::ffff:10.0.0.0/104", []string{"10.0.0.5/32", "10.0.0.0/8"}},
		{"0.0.0.0/0", []string{"0.0.0.0/0"}},
	}
	for _, c := range cases {
		cfg, err := load(t, "[websocket_proxy]\ntrusted_proxies = "+c.in+"\nproxy_protocol = "+map[bool]string{true: "true", false: "false"}[c.want != nil]+"\n")
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		var got []string
		for _, p := range cfg.Proxy.TrustedProxies {
			got = append(got, p.String())
		}
		if !reflect.DeepEqual(got, c.want) || cfg.Proxy.ProxyProtocol != (c.want != nil) {
			t.Errorf("%q -> %q proxy_protocol %v, want %q", c.in, got, cfg.Proxy.ProxyProtocol, c.want)
		}
	}
}

func TestListenerTLS(t *testing.T) {
	certFile, keyFile, _ := testenv.SelfSignedCert(t)
	c, err := load(t, "[websocket_proxy]\ncert = "+certFile+"\nkey = "+keyFile+"\nssl_only = true\n")
	if err != nil || c.Proxy.Cert != certFile || c.Proxy.Key != keyFile || !c.Proxy.SSLOnly {
		t.Fatalf("%+v %v", c.Proxy, err)
	}
	// The key in the certificate file, as websockify allows.
	dir := t.TempDir()
	both := filepath.Join(dir, "both.pem")
	cb, _ := os.ReadFile(certFile)
	kb, _ := os.ReadFile(keyFile)
	os.WriteFile(both, append(cb, kb...), 0o600)
	if c, err := load(t, "[websocket_proxy]\ncert = "+both+"\n"); err != nil || c.Proxy.Cert != both {
		t.Fatalf("combined pem: %v", err)
	}
	// A key that does not match is refused at start.
	_, otherKey, _ := testenv.SelfSignedCert(t)
	if _, err := load(t, "[websocket_proxy]\ncert = "+certFile+"\nkey = "+otherKey+"\n"); err == nil || !strings.Contains(err.Error(), "[websocket_proxy] cert: cannot load certificate and key") {
		t.Fatalf("mismatched key: %v", err)
	}
	// The default self.pem is optional.
	if c, err := load(t, ""); err != nil || c.Proxy.Cert != "" {
		t.Fatalf("default cert: %q %v", c.Proxy.Cert, err)
	}
	// Ticket keys go with a certificate, from a readable file.
	tickets := filepath.Join(dir, "tickets")
	os.WriteFile(tickets, []byte("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"), 0o600)
	if c, err := load(t, "[websocket_proxy]\ncert = "+both+"\nticket_key_file = "+tickets+"\n"); err != nil || c.Proxy.TicketKeyFile != tickets {
		t.Fatalf("ticket_key_file: %+v %v", c.Proxy, err)
	}
	if _, err := load(t, "[websocket_proxy]\nticket_key_file = "+tickets+"\n"); err == nil || !strings.Contains(err.Error(), "[websocket_proxy] ticket_key_file: set, but no certificate is configured (cert)") {
		t.Fatalf("ticket_key_file without cert: %v", err)
	}
	if _, err := load(t, "[websocket_proxy]\ncert = "+both+"\nticket_key_file = "+filepath.Join(dir, "missing")+"\n"); err == nil || !strings.Contains(err.Error(), "[websocket_proxy] ticket_key_file") {
		t.Fatalf("missing ticket_key_file: %v", err)
	}
}

// FuzzParse: any file is parsed and read without a panic; interpolation
// stays within its bounds; a refusal is one line naming an option; and
// what is accepted is within its option's bounds.
func FuzzParse(f *testing.F) {
	f.Add("[DEFAULT]\nmy_ip = 1.2.3.4\n[websocket_proxy]\nbase_url = ws://$my_ip:1/\n  more\n")
	f.Add("[a]\nx: 'y'\n; c\n")
	f.Add("[websocket_proxy]\na = xxxxxxxx\nb = $a$a$a$a$a$a$a$a\nc = $b$b$b$b$b$b$b$b\nd = $c$c$c$c$c$c$c$c\nallowed_origins = $d$d$d$d\n")
	f.Add("[DEFAULT]\na = $b\nb = ${a}\n[websocket_proxy]\nheartbeat = $a\ntoken_ttl = 1e-3\n")
	f.Fuzz(func(t *testing.T, data string) {
		into := ini{}
		if err := into.parse(data, "f"); err != nil {
			return
		}
		r := newReader()
		r.ini = into
		c, err := r.config() // must not panic, however odd the values
		for section, opts := range into {
			for name, e := range opts {
				v, _, _ := r.get(section, name)
				if len(v) > max(maxExpanded, len(e.value)) {
					t.Fatalf("[%s] %s expanded to %d bytes", section, name, len(v))
				}
			}
		}
		if err != nil {
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "f: [") && !strings.HasPrefix(msg, "[") {
				t.Fatalf("error %q: not one line naming an option", msg)
			}
			return
		}
		for _, o := range options {
			if o.dst == nil {
				continue
			}
			switch v := reflect.ValueOf(o.dst(c)).Elem().Interface().(type) {
			case time.Duration:
				if v < 0 || v > maxSeconds*time.Second {
					t.Fatalf("[%s] %s = %v", o.section, o.name, v)
				}
			case int:
				if k, ok := o.kind.(integer); ok && (v < k.lo || v > k.hi) {
					t.Fatalf("[%s] %s = %d", o.section, o.name, v)
				}
			}
		}
	})
}

// token_ttl is seconds like every other duration: fractions too.
func TestTokenTTLSeconds(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"0", 0},
		{"90", 90 * time.Second},
		{"1.5", 1500 * time.Millisecond},
		{"0.25", 250 * time.Millisecond},
	}
	for _, c := range cases {
		cfg, err := load(t, "[websocket_proxy]\ntoken_ttl = "+c.in+"\n")
		if err != nil {
			t.Errorf("token_ttl = %s: %v", c.in, err)
			continue
		}
		if cfg.Proxy.TokenTTL != c.want {
			t.Errorf("token_ttl = %s: %v, want %v", c.in, cfg.Proxy.TokenTTL, c.want)
		}
	}
}

// Interpolation is bounded in size, depth and work: a few hundred bytes of
// file cannot grow into gigabytes or hours, and the error names the option.
func TestInterpolationBounded(t *testing.T) {
	chain := func(prefix string, n int, first, next string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "%s0 = %s\n", prefix, first)
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&b, "%s%d = %s\n", prefix, i, strings.ReplaceAll(next, "@", fmt.Sprintf("$%s%d", prefix, i-1)))
		}
		return b.String()
	}
	cases := []struct {
		name, body, err string
	}{
		// 16 bytes, each option naming the one before four times: 256 KiB
		// at $a7 (at $a9, 4 MiB; had nesting no bound, 16 GiB at $a13).
		{"growing", chain("a", 7, "xxxxxxxxxxxxxxxx", "@@@@") + "allowed_origins = $a7\n",
			"allowed_origins: $a7 expands to more than 65536 bytes"},
		{"growing far", chain("a", 9, "xxxxxxxxxxxxxxxx", "@@@@") + "allowed_origins = $a9\n",
			"allowed_origins: $a7 expands to more than 65536 bytes"},
		{"growing at the top", chain("a", 6, "xxxxxxxxxxxxxxxx", "@@@@") + "allowed_origins = $a6,$a6\n",
			"allowed_origins: expands to more than 65536 bytes"},
		{"deep", chain("d", 10, "x", "@") + "allowed_origins = $d10\n",
			"allowed_origins: interpolation nested deeper than 10 levels (at $d0)"},
		// 10 references to 10 references... of an empty value: 10^12
		// expansions unless each option is expanded once.
		{"wide", chain("w", 9, "", "@@@@@@@@@@") + "allowed_origins = $w9\n", ""},
		{"ten deep", chain("d", 9, "x", "@") + "allowed_origins = $d9\n", ""},
		// $d5 is expanded first near the top, then again eight levels
		// down: the kept expansion still counts its five levels.
		{"deep the second time", chain("d", 5, "x", "@") + chain("e", 6, "$d5", "@") + "allowed_origins = $d5 $e6\n",
			"allowed_origins: interpolation nested deeper than 10 levels (at $d5)"},
		{"ten deep the second time", chain("d", 5, "x", "@") + chain("e", 3, "$d5", "@") + "allowed_origins = $d5 $e3\n", ""},
		{"64 KiB", chain("a", 6, "xxxxxxxxxxxxxxxx", "@@@@") + "allowed_origins = $a6\n", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := write(t, t.TempDir(), "zun.conf", "[websocket_proxy]\n"+c.body)
			_, err := loadWithin(t, path)
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.err != "" && (err == nil || err.Error() != path+": [websocket_proxy] "+c.err):
				t.Fatalf("error %v\nwant  %s: [websocket_proxy] %s", err, path, c.err)
			}
		})
	}
}

// --config-dir skips names starting with '.', as oslo.config's glob does:
// an editor's lock link (.#name.conf, dangling) or a hidden file.
func TestConfigDirSkipsDotFiles(t *testing.T) {
	confd := t.TempDir()
	write(t, confd, "10-port.conf", "[websocket_proxy]\nwsproxy_port = 3000\n")
	write(t, confd, ".hidden.conf", "[websocket_proxy]\nwsproxy_port = 9\n")
	if err := os.Symlink("user@host.1234:1700000000", filepath.Join(confd, ".#10-port.conf")); err != nil {
		t.Fatal(err)
	}
	c, err := Load(nil, []string{confd})
	if err != nil {
		t.Fatal(err)
	}
	if c.Proxy.Port != 3000 || len(c.Files) != 1 {
		t.Errorf("port %d from %q, want 3000 from 10-port.conf alone", c.Proxy.Port, c.Files)
	}
}
