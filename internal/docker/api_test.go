package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
)

// engine is an Engine API stand-in: it records each request and answers
// with answer.
type engine struct {
	srv      *httptest.Server
	requests chan *http.Request
	bodies   chan string
}

func newEngine(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) *engine {
	t.Helper()
	e := &engine{requests: make(chan *http.Request, 16), bodies: make(chan string, 16)}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e.requests <- r
		e.bodies <- string(body)
		answer(w, r)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

// endpoint is the engine's address as a tcp:// Docker URL.
func (e *engine) endpoint() string { return "tcp://" + e.srv.Listener.Addr().String() }

func (e *engine) next(t *testing.T) (*http.Request, string) {
	t.Helper()
	select {
	case r := <-e.requests:
		return r, <-e.bodies
	case <-time.After(5 * time.Second):
		t.Fatal("no request reached the engine")
		return nil, ""
	}
}

func answerJSON(code int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

// Inspect reads the id, name (without Docker's leading slash), state and
// terminal of a container, asks for it by the API version's path with the
// reference escaped, and maps Docker's answers to errors.
func TestInspect(t *testing.T) {
	cases := []struct {
		name     string
		ref      string
		code     int
		body     string
		want     ContainerInfo
		wantErr  string // "" for none
		notFound bool
	}{
		{name: "running", ref: "web", code: 200,
			body: `{"Id":"abc123","Name":"/web","State":{"Running":true,"Status":"running"},"Config":{"Tty":true,"Image":"busybox"}}`,
			want: ContainerInfo{ID: "abc123", Name: "web", Running: true, Tty: true}},
		{name: "stopped, no tty", ref: "abc123", code: 200,
			body: `{"Id":"abc123","Name":"/web","State":{"Running":false},"Config":{"Tty":false}}`,
			want: ContainerInfo{ID: "abc123", Name: "web"}},
		{name: "name with a slash inside kept", ref: "a/b", code: 200,
			body: `{"Id":"x","Name":"/a/b","State":{"Running":true}}`,
			want: ContainerInfo{ID: "x", Name: "a/b", Running: true}},
		{name: "unknown", ref: "nope", code: 404, body: `{"message":"No such container: nope"}`,
			wantErr: `container "nope": no such container`, notFound: true},
		{name: "daemon error carries Docker's message", ref: "web", code: 500, body: `{"message":"driver failed"}`,
			wantErr: "500 Internal Server Error: driver failed"},
		{name: "not JSON", ref: "web", code: 200, body: `<html>`, wantErr: "invalid character"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, answerJSON(tc.code, tc.body))
			d := NewDialer(Options{APIVersion: "1.41"})
			info, err := d.Inspect(context.Background(), e.endpoint(), tc.ref)
			r, _ := e.next(t)
			if want := "/v1.41/containers/" + strings.ReplaceAll(tc.ref, "/", "%2F") + "/json"; r.Method != "GET" || r.URL.EscapedPath() != want {
				t.Errorf("request %s %s, want GET %s", r.Method, r.URL.EscapedPath(), want)
			}
			if errors.Is(err, ErrNoSuchContainer) != tc.notFound {
				t.Errorf("errors.Is(%v, ErrNoSuchContainer) = %v, want %v", err, !tc.notFound, tc.notFound)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Inspect: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Inspect: %v, want an error with %q", err, tc.wantErr)
			case info != tc.want:
				t.Errorf("Inspect: %+v, want %+v", info, tc.want)
			}
		})
	}
}

// The API version prefixes every Engine API path; 1.26 (Zun's default)
// when none is given.
func TestAPIVersionInPaths(t *testing.T) {
	for _, tc := range []struct{ version, want string }{
		{"", "/v1.26/_ping"},
		{"1.24", "/v1.24/_ping"},
		{"1.41", "/v1.41/_ping"},
	} {
		e := newEngine(t, answerJSON(200, "OK"))
		if err := NewDialer(Options{APIVersion: tc.version}).Ping(context.Background(), e.endpoint()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		if r, _ := e.next(t); r.URL.Path != tc.want {
			t.Errorf("version %q: path %s, want %s", tc.version, r.URL.Path, tc.want)
		}
	}
}

// CreateExec asks for an interactive exec with a terminal, as Zun does,
// and returns Docker's id; Resize calls the container's or the exec's
// endpoint with h and w, on the API of the target's host.
func TestCreateExecAndResize(t *testing.T) {
	e := newEngine(t, answerJSON(201, `{"Id":"exec1"}`))
	d := NewDialer(Options{APIVersion: "1.41"})
	id, err := d.CreateExec(context.Background(), e.endpoint(), "c1", []string{"sh", "-c", "echo hi"})
	if err != nil || id != "exec1" {
		t.Fatalf("CreateExec: %q %v", id, err)
	}
	r, body := e.next(t)
	if r.Method != "POST" || r.URL.Path != "/v1.41/containers/c1/exec" || r.Header.Get("Content-Type") != "application/json" ||
		body != `{"AttachStderr":true,"AttachStdin":true,"AttachStdout":true,"Cmd":["sh","-c","echo hi"],"Tty":true}` {
		t.Errorf("exec create: %s %s %q %s", r.Method, r.URL.Path, r.Header.Get("Content-Type"), body)
	}

	host := e.srv.Listener.Addr().String()
	for _, tc := range []struct {
		name   string
		target console.Target
		want   string
	}{
		{"attach on a ws:// URL", console.Target{Kind: console.Attach, ContainerID: "c1", URL: "ws://" + host + "/v1.41/containers/c1/attach/ws"}, "/v1.41/containers/c1/resize?h=24&w=80"},
		{"attach on an API URL", console.Target{Kind: console.Attach, ContainerID: "c1", URL: "tcp://" + host}, "/v1.41/containers/c1/resize?h=24&w=80"},
		{"exec", console.Target{Kind: console.Exec, ContainerID: "c1", ExecID: "e/1", URL: "http://" + host}, "/v1.41/exec/e%2F1/resize?h=24&w=80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.Resize(context.Background(), tc.target, 24, 80); err != nil {
				t.Fatalf("Resize: %v", err)
			}
			if r, _ := e.next(t); r.Method != "POST" || r.URL.RequestURI() != tc.want {
				t.Errorf("resize: %s %s, want POST %s", r.Method, r.URL.RequestURI(), tc.want)
			}
		})
	}
}

// apiURL: the Engine API beside a Zun attach URL is on the same host, in
// plain HTTP for ws:// and TLS for wss://; API URLs are kept.
func TestAPIURL(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"ws://10.0.0.5:2375/v1.26/containers/x/attach/ws?stream=1", "tcp://10.0.0.5:2375"},
		{"wss://docker.example:2376/v1.26/containers/x/attach/ws", "https://docker.example:2376"},
		{"ws://[::1]:2375/x", "tcp://[::1]:2375"},
		{"tcp://10.0.0.5:2375", "tcp://10.0.0.5:2375"},
		{"unix:///var/run/docker.sock", "unix:///var/run/docker.sock"},
		{"%zz", "%zz"},
	} {
		if got := apiURL(console.Target{URL: tc.url}); got != tc.want {
			t.Errorf("apiURL(%q) = %q, want %q", tc.url, got, tc.want)
		}
	}
}

// The Engine API over a unix socket: the request reaches the socket.
func TestAPIOverUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"Id":"u1","Name":"/%s","State":{"Running":true}}`, r.Host)
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	info, err := NewDialer(Options{}).Inspect(context.Background(), "unix://"+sock, "u1")
	if err != nil || info.ID != "u1" || info.Name != "docker" || !info.Running {
		t.Fatalf("Inspect over unix://: %+v %v", info, err)
	}
}

// A daemon that does not answer: the call ends at Options.Timeout with
// a deadline error, and an unreachable one with a dial error.
func TestCallTimeoutAndUnreachable(t *testing.T) {
	stall := make(chan struct{})
	e := newEngine(t, func(http.ResponseWriter, *http.Request) { <-stall })
	defer close(stall)
	d := NewDialer(Options{Timeout: 100 * time.Millisecond})
	start := time.Now()
	err := d.Ping(context.Background(), e.endpoint())
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("a silent daemon: %v after %v, want a deadline after 100ms", err, time.Since(start))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if err := d.Ping(context.Background(), "tcp://"+closed); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("a closed port: %v, want connection refused", err)
	}
}
