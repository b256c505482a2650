// Package testenv connects integration tests to the real components that
// scripts/test-env.sh installs and starts: MariaDB holding Zun's tables, a
// Docker engine on 127.0.0.1:2375 and the offline busybox image. A missing
// component fails the test loudly, naming the script to run.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Defaults match scripts/test-env.sh; the environment may override them.
var (
	MySQLAddr  = getenv("ZUN_WSPROXY_TEST_MYSQL_ADDR", "127.0.0.1:3306")
	MySQLUser  = getenv("ZUN_WSPROXY_TEST_MYSQL_USER", "zuntest")
	MySQLPass  = getenv("ZUN_WSPROXY_TEST_MYSQL_PASSWORD", "zuntest")
	DockerAddr = getenv("ZUN_WSPROXY_TEST_DOCKER_ADDR", "127.0.0.1:2375")
	// Netns is the network namespace the servers listen in (and the tests run in).
	Netns = getenv("ZUN_WSPROXY_TEST_NETNS", "/run/netns/zun-wsproxy-test")
	// DockerSocket is the same engine's unix socket (root only).
	DockerSocket = getenv("ZUN_WSPROXY_TEST_DOCKER_SOCKET", "/run/zun-wsproxy-test/engine.sock")
	// The second engine, dockerd --tlsverify, and its certificates.
	DockerTLSAddr = getenv("ZUN_WSPROXY_TEST_DOCKER_TLS_ADDR", "127.0.0.1:2376")
	DockerTLSDir  = getenv("ZUN_WSPROXY_TEST_DOCKER_TLS_DIR", "/var/lib/zun-wsproxy-test/docker-tls")
	Image         = getenv("ZUN_WSPROXY_TEST_IMAGE", "zun-wsproxy-test/busybox:latest")
)

// APIVersion is the Docker API version Zun uses by default.
const APIVersion = "1.26"

const setupHint = "run scripts/test-env.sh to install and start it, and the tests inside its network namespace: scripts/in-test-env.sh go test ./... (make test does both)"

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// RepoRoot returns the repository's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// ZunDB is a fresh database with Zun's container and exec_instance tables.
type ZunDB struct {
	*sql.DB
	Name string
	srv  server
}

// DSN returns the go-sql-driver DSN of the database.
func (z *ZunDB) DSN() string { return z.srv.dsn(z.Name) }

// URL returns the database as zun.conf writes it: an SQLAlchemy URL.
func (z *ZunDB) URL() string {
	return fmt.Sprintf("mysql+pymysql://%s:%s@%s/%s?charset=utf8", z.srv.user, z.srv.pass, z.srv.addr, z.Name)
}

// server is a MariaDB the tests make databases on, as one of its users.
type server struct {
	addr, user, pass string
	tls              string // the driver's TLS configuration for it; "" = none
	prefix           string // of the names of the databases the user may make
}

// shared is the MariaDB every test uses.
var shared = server{addr: MySQLAddr, user: MySQLUser, pass: MySQLPass, prefix: "zun"}

func (s server) dsn(db string) string {
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = s.user, s.pass, "tcp", s.addr, db
	c.ParseTime, c.MultiStatements = true, true
	c.Timeout = 5 * time.Second
	c.TLSConfig = s.tls
	return c.FormatDSN()
}

// NewZunDB creates a database named after the test, loads Zun's schema
// (testdata/zun-schema.sql) into it and drops it when tb ends.
func NewZunDB(tb testing.TB, prefix string) *ZunDB {
	tb.Helper()
	return newZunDB(tb, shared, prefix)
}

func newZunDB(tb testing.TB, srv server, prefix string) *ZunDB {
	tb.Helper()
	z := newEmptyDB(tb, srv, prefix)
	schema, err := os.ReadFile(filepath.Join(RepoRoot(), "testdata", "zun-schema.sql"))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := z.Exec(string(schema)); err != nil {
		tb.Fatalf("load Zun schema: %v", err)
	}
	return z
}

// NewEmptyDB creates an empty database on the test MariaDB and drops it
// when tb ends.
func NewEmptyDB(tb testing.TB, prefix string) *ZunDB {
	tb.Helper()
	return newEmptyDB(tb, shared, prefix)
}

func newEmptyDB(tb testing.TB, srv server, prefix string) *ZunDB {
	tb.Helper()
	admin, err := sql.Open("mysql", srv.dsn(""))
	if err != nil {
		tb.Fatal(err)
	}
	defer admin.Close()
	if err := admin.Ping(); err != nil {
		tb.Fatalf("MariaDB at %s as %s is not reachable (%v): %s", srv.addr, srv.user, err, setupHint)
	}
	name := fmt.Sprintf("%s_%s_%s", srv.prefix, prefix, randomHex(4))
	if _, err := admin.Exec("CREATE DATABASE " + name + " CHARACTER SET utf8"); err != nil {
		tb.Fatal(err)
	}
	db, err := sql.Open("mysql", srv.dsn(name))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		db.Close()
		if a, err := sql.Open("mysql", srv.dsn("")); err == nil {
			a.Exec("DROP DATABASE IF EXISTS " + name)
			a.Close()
		}
	})
	return &ZunDB{DB: db, Name: name, srv: srv}
}

// Container is a Zun container row.
type Container struct {
	ID           int64
	UUID         string
	Name         string
	DockerID     string
	Token        string // websocket_token
	WebsocketURL string
}

// AttachURL is the websocket_url zun-compute stores for a Docker container.
func AttachURL(dockerID string) string {
	return fmt.Sprintf("ws://%s/v%s/containers/%s/attach/ws?logs=0&stream=1&stdin=1&stdout=1&stderr=1", DockerAddr, APIVersion, dockerID)
}

// InsertContainer stores a container row as zun-compute does after an
// attach call: websocket_url and a fresh websocket_token. Empty fields get
// generated values (Token empty stays empty only if noToken).
func (z *ZunDB) InsertContainer(tb testing.TB, c Container) Container {
	tb.Helper()
	if c.UUID == "" {
		c.UUID = NewUUID()
	}
	if c.Name == "" {
		c.Name = "c-" + randomHex(4)
	}
	if c.WebsocketURL == "" && c.DockerID != "" {
		c.WebsocketURL = AttachURL(c.DockerID)
	}
	res, err := z.Exec(`INSERT INTO container (created_at, updated_at, project_id, user_id, uuid, container_id, name,
		image, status, host, interactive, tty, websocket_url, websocket_token, container_type)
		VALUES (NOW(), NOW(), 'p1', 'u1', ?, ?, ?, 'busybox', 'Running', 'compute-1', 1, 1, ?, NULLIF(?, ''), 0)`,
		c.UUID, c.DockerID, c.Name, c.WebsocketURL, c.Token)
	if err != nil {
		tb.Fatalf("insert container: %v", err)
	}
	c.ID, _ = res.LastInsertId()
	return c
}

// InsertExec stores an exec_instance row as zun-compute does for an
// interactive exec.
func (z *ZunDB) InsertExec(tb testing.TB, containerID int64, execID, token, url string) {
	tb.Helper()
	if _, err := z.Exec(`INSERT INTO exec_instance (created_at, updated_at, container_id, exec_id, token, url)
		VALUES (NOW(), NOW(), ?, ?, ?, ?)`, containerID, execID, token, url); err != nil {
		tb.Fatalf("insert exec_instance: %v", err)
	}
}

// NewExec creates an interactive exec of sh in c's container, as Zun's
// execute?interactive=true does, and stores it in exec_instance with a
// fresh token and url (the engine's tcp:// address when ""); it returns
// the exec's id and token.
func (z *ZunDB) NewExec(tb testing.TB, d *Docker, c Container, url string) (execID, token string) {
	tb.Helper()
	if url == "" {
		url = "tcp://" + DockerAddr
	}
	execID, token = d.Exec(c.DockerID, "sh"), NewUUID()
	z.InsertExec(tb, c.ID, execID, token, url)
	return execID, token
}

// NewUUID returns a random version 4 UUID.
func NewUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Docker is a client of a test Docker engine's API.
type Docker struct {
	tb   testing.TB
	http *http.Client
	base string // http://host:port or https://host:port
}

// NewDocker checks that the engine and the test image are there.
func NewDocker(tb testing.TB) *Docker {
	tb.Helper()
	return newDocker(tb, "http://"+DockerAddr, &http.Transport{DisableKeepAlives: true})
}

// NewDockerTLS is NewDocker for the engine that requires TLS client
// certificates (dockerd --tlsverify).
func NewDockerTLS(tb testing.TB) *Docker {
	tb.Helper()
	ca, cert, key := DockerTLSFiles()
	pem, err := os.ReadFile(ca)
	if err != nil {
		tb.Fatalf("Docker TLS certificates missing (%v): %s", err, setupHint)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		tb.Fatalf("Docker TLS client certificate: %v: %s", err, setupHint)
	}
	return newDocker(tb, "https://"+DockerTLSAddr, &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}})
}

// DockerTLSFiles returns the CA, client certificate and client key for
// the --tlsverify engine, as zun.conf's [docker] ca_file, cert_file and
// key_file.
func DockerTLSFiles() (ca, cert, key string) {
	return filepath.Join(DockerTLSDir, "ca.pem"), filepath.Join(DockerTLSDir, "cert.pem"), filepath.Join(DockerTLSDir, "key.pem")
}

func newDocker(tb testing.TB, base string, tr *http.Transport) *Docker {
	tb.Helper()
	d := &Docker{tb: tb, base: base, http: &http.Client{Timeout: 30 * time.Second, Transport: tr}}
	resp, err := d.http.Get(base + "/_ping")
	if err != nil {
		tb.Fatalf("Docker engine at %s is not reachable (%v): %s", base, err, setupHint)
	}
	resp.Body.Close()
	var img map[string]any
	if code := d.call("GET", "/images/"+Image+"/json", nil, &img); code != 200 {
		tb.Fatalf("test image %s is missing (status %d): %s", Image, code, setupHint)
	}
	return d
}

// call sends a Docker API request and decodes a JSON answer into out.
func (d *Docker) call(method, path string, body, out any) int {
	d.tb.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, d.base+"/v"+APIVersion+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.http.Do(req)
	if err != nil {
		d.tb.Fatalf("docker %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			d.tb.Fatalf("docker %s %s: %v: %s", method, path, err, data)
		}
	}
	return resp.StatusCode
}

// Resize sets a container's terminal size, as the proxy's resize calls do.
func (d *Docker) Resize(containerID string, rows, cols int) {
	d.tb.Helper()
	if code := d.call("POST", fmt.Sprintf("/containers/%s/resize?h=%d&w=%d", containerID, rows, cols), nil, nil); code != http.StatusOK {
		d.tb.Fatalf("docker resize %s: status %d", containerID, code)
	}
}

// Run starts a container with a terminal and open stdin, like Zun's
// interactive containers, running cmd under sh -c; it is removed when the
// test ends.
func (d *Docker) Run(cmd string) string {
	d.tb.Helper()
	return d.RunNamed("", cmd)
}

// RunNamed is Run with a container name.
func (d *Docker) RunNamed(name, cmd string) string {
	d.tb.Helper()
	var created struct{ Id string }
	spec := map[string]any{
		"Image": Image, "Cmd": []string{"sh", "-c", cmd},
		"Tty": true, "OpenStdin": true, "AttachStdin": true, "AttachStdout": true, "AttachStderr": true,
		"HostConfig": map[string]any{"NetworkMode": "none"},
		"Labels":     map[string]string{"zun-wsproxy-test": "1"},
	}
	path := "/containers/create"
	if name != "" {
		path += "?name=" + name
	}
	if code := d.call("POST", path, spec, &created); code != 201 {
		d.tb.Fatalf("create container: status %d", code)
	}
	d.tb.Cleanup(func() { d.call("DELETE", "/containers/"+created.Id+"?force=1", nil, nil) })
	if code := d.call("POST", "/containers/"+created.Id+"/start", nil, nil); code != 204 {
		d.tb.Fatalf("start container: status %d", code)
	}
	return created.Id
}

// Kill kills a container's main process.
func (d *Docker) Kill(containerID string) {
	d.tb.Helper()
	if code := d.call("POST", "/containers/"+containerID+"/kill", nil, nil); code != 204 {
		d.tb.Fatalf("kill container: status %d", code)
	}
}

// Exec creates (without starting) an interactive exec of cmd, as Zun's
// execute?interactive=true does, and returns its id.
func (d *Docker) Exec(containerID string, cmd ...string) string {
	d.tb.Helper()
	var created struct{ Id string }
	spec := map[string]any{"Cmd": cmd, "Tty": true, "AttachStdin": true, "AttachStdout": true, "AttachStderr": true}
	if code := d.call("POST", "/containers/"+containerID+"/exec", spec, &created); code != 201 {
		d.tb.Fatalf("create exec: status %d", code)
	}
	return created.Id
}

// Running reports whether a container is running.
func (d *Docker) Running(containerID string) bool {
	d.tb.Helper()
	var info struct{ State struct{ Running bool } }
	d.call("GET", "/containers/"+containerID+"/json", nil, &info)
	return info.State.Running
}

// Settle bounds a test's wait for what the code under test does at once
// (a session's end after its cause, a close after a close, a log line
// after what it tells of): the bound only has a hang fail the test, on a
// machine whose cores are shared, under -race, where seconds go by. It is
// kept below the intervals that would end a session by themselves in the
// tests that use it.
const Settle = 10 * time.Second

// WaitFor polls cond until it holds or the timeout passes.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// CopyFile copies the file from to the file to (made 0600).
func CopyFile(tb testing.TB, from, to string) {
	tb.Helper()
	b, err := os.ReadFile(from)
	if err == nil {
		err = os.WriteFile(to, b, 0o600)
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// Python is the interpreter that has Debian's python3-zunclient.
const Python = "/usr/bin/python3"

// RequirePythonClient fails unless python3-zunclient is installed.
func RequirePythonClient(tb testing.TB) {
	tb.Helper()
	out, err := exec.Command(Python, "-c", "import zunclient.common.websocketclient.websocketclient, websocket").CombinedOutput()
	if err != nil {
		tb.Fatalf("python3-zunclient is not importable by %s (%v: %s): %s", Python, err, strings.TrimSpace(string(out)), setupHint)
	}
}
