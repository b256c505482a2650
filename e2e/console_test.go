package e2e

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// session is one Zun deployment in miniature: a Zun database, a Docker
// engine and the proxy configured like zun.conf does.
type session struct {
	db     *testenv.ZunDB
	docker *testenv.Docker
	proxy  *proxy
}

func newSession(t *testing.T) *session {
	t.Helper()
	db := testenv.NewZunDB(t, "e2e")
	d := testenv.NewDocker(t)
	port := freePort(t)
	return &session{db: db, docker: d, proxy: startProxy(t, port, baseConf(db, port), "")}
}

// attachable runs cmd in a container and stores it in Zun's table as
// zun-compute does after an attach call.
func (s *session) attachable(t *testing.T, cmd string) testenv.Container {
	id := s.docker.Run(cmd)
	return s.db.InsertContainer(t, testenv.Container{DockerID: id, Token: testenv.NewUUID()})
}

func TestAttachEchoAndContainerExit(t *testing.T) {
	s := newSession(t)
	c := s.attachable(t, `read x; echo "bye-$x"; exit 3`)
	ctx := ctxTimeout(t, 30*time.Second)
	conn, resp, err := dial(ctx, s.proxy.url(c.Token, c.UUID, ""), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.CloseNow()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "binary" {
		t.Errorf("subprotocol %q, want binary (as websockify)", got)
	}
	s.proxy.logs.waitLine(t, `session started.*container=`+c.UUID+`.*kind=attach`, 5*time.Second)
	if err := conn.Write(ctx, websocket.MessageBinary, []byte("now\n")); err != nil {
		t.Fatal(err)
	}
	readUntil(ctx, t, conn, "bye-now")
	// The container exits: Docker closes its attach socket, and the client
	// is told why with a close frame.
	var err2 error
	for err2 == nil {
		_, _, err2 = conn.Read(ctx)
	}
	var ce websocket.CloseError
	if !errors.As(err2, &ce) || ce.Code != websocket.StatusNormalClosure || ce.Reason != "container exited" {
		t.Fatalf("after exit: %v, want close 1000 \"container exited\"", err2)
	}
	line := s.proxy.logs.waitLine(t, `session ended.*container=`+c.UUID, 5*time.Second)
	for _, want := range []string{`reason="container exited"`, "bytes_to_container=4", "kind=attach", "client=127.0.0.1:", "duration="} {
		if !strings.Contains(line, want) {
			t.Errorf("session end log lacks %s: %s", want, line)
		}
	}
	s.proxy.waitNoSessions(t, 2*time.Second)
}

func TestExecEchoAndExit(t *testing.T) {
	s := newSession(t)
	c := s.attachable(t, "sleep 600")
	execID := s.docker.Exec(c.DockerID, "sh")
	token := testenv.NewUUID()
	s.db.InsertExec(t, c.ID, execID, token, "tcp://"+testenv.DockerAddr)

	ctx := ctxTimeout(t, 30*time.Second)
	conn, _, err := dial(ctx, s.proxy.url(token, c.UUID, execID), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.CloseNow()
	conn.Write(ctx, websocket.MessageBinary, []byte("echo hello-$((6*7))\n"))
	readUntil(ctx, t, conn, "hello-42")
	conn.Write(ctx, websocket.MessageBinary, []byte("exit\n"))
	var err2 error
	for err2 == nil {
		_, _, err2 = conn.Read(ctx)
	}
	var ce websocket.CloseError
	if !errors.As(err2, &ce) || ce.Code != websocket.StatusNormalClosure || ce.Reason != "exec session ended" {
		t.Fatalf("after exit: %v, want close 1000 \"exec session ended\"", err2)
	}
	line := s.proxy.logs.waitLine(t, `session ended.*kind=exec`, 5*time.Second)
	if !strings.Contains(line, "exec_id="+execID) || !strings.Contains(line, `reason="exec process ended"`) {
		t.Errorf("session end log: %s", line)
	}
	s.proxy.waitNoSessions(t, 2*time.Second)
	if !s.docker.Running(c.DockerID) {
		t.Error("the container stopped when its exec ended")
	}
}

// A client that disappears (no close frame) must not leave the Docker
// side open: the proxy closes it within a second.
func TestClientDisappears(t *testing.T) {
	s := newSession(t)
	for _, kind := range []string{"attach", "exec"} {
		t.Run(kind, func(t *testing.T) {
			c := s.attachable(t, "sh")
			url := s.proxy.url(c.Token, c.UUID, "")
			if kind == "exec" {
				execID := s.docker.Exec(c.DockerID, "sh")
				token := testenv.NewUUID()
				s.db.InsertExec(t, c.ID, execID, token, "tcp://"+testenv.DockerAddr)
				url = s.proxy.url(token, c.UUID, execID)
			}
			ctx := ctxTimeout(t, 30*time.Second)
			conn, _, err := dial(ctx, url, nil)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			conn.Write(ctx, websocket.MessageBinary, []byte("echo alive-$((1+1))\n"))
			readUntil(ctx, t, conn, "alive-2")
			if d, _ := s.proxy.conns(t); d != 1 {
				t.Fatalf("%d connections to Docker during the session, want 1", d)
			}
			conn.CloseNow() // TCP gone, no close frame
			start := time.Now()
			s.proxy.waitNoSessions(t, time.Second)
			t.Logf("Docker side closed %v after the client vanished", time.Since(start).Round(time.Millisecond))
			s.proxy.logs.waitLine(t, `session ended.*kind=`+kind+`.*reason="client disconnected`, 2*time.Second)
			// Docker keeps an exec's process running when its stream
			// closes (as with the Python proxy); what the proxy owns, the
			// connection, is gone.
			if !s.docker.Running(c.DockerID) {
				t.Error("the container stopped when its console client left")
			}
		})
	}
}

// A client that closes cleanly gets its close answered, and the Docker side
// is closed.
func TestClientClosesCleanly(t *testing.T) {
	s := newSession(t)
	c := s.attachable(t, "sh")
	ctx := ctxTimeout(t, 30*time.Second)
	conn, _, err := dial(ctx, s.proxy.url(c.Token, c.UUID, ""), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	conn.Write(ctx, websocket.MessageBinary, []byte("echo x-$((2+3))\n"))
	readUntil(ctx, t, conn, "x-5")
	if err := conn.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
	s.proxy.waitNoSessions(t, time.Second)
	s.proxy.logs.waitLine(t, `session ended.*reason="client closed \(code 1000\)"`, 2*time.Second)
}

// Several sessions at once, on one container and on several, stay apart.
func TestConcurrentSessions(t *testing.T) {
	s := newSession(t)
	ctx := ctxTimeout(t, 60*time.Second)
	const n = 8
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		c := s.attachable(t, "sh")
		go func(i int, c testenv.Container) {
			conn, _, err := dial(ctx, s.proxy.url(c.Token, c.UUID, ""), nil)
			if err != nil {
				errs <- err
				return
			}
			defer conn.CloseNow()
			// The shell computes the answer, so an echo of the typed line
			// does not count.
			want := fmt.Sprintf("n-%d-%d", i, i*1000+7)
			conn.Write(ctx, websocket.MessageBinary, []byte(fmt.Sprintf("echo n-%d-$((%d*1000+7))\n", i, i)))
			var got strings.Builder
			for !strings.Contains(got.String(), want+"\r\n") {
				_, data, err := conn.Read(ctx)
				if err != nil {
					errs <- err
					return
				}
				got.Write(data)
			}
			errs <- conn.Close(websocket.StatusNormalClosure, "")
		}(i, c)
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	s.proxy.waitNoSessions(t, 2*time.Second)
}

// Old websockify clients offer only "base64": text frames carrying base64
// both ways.
func TestBase64Client(t *testing.T) {
	s := newSession(t)
	c := s.attachable(t, "sh")
	ctx := ctxTimeout(t, 30*time.Second)
	conn, resp, err := websocket.Dial(ctx, s.proxy.url(c.Token, c.UUID, ""), &websocket.DialOptions{Subprotocols: []string{"base64"}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.CloseNow()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "base64" {
		t.Fatalf("subprotocol %q, want base64", got)
	}
	conn.Write(ctx, websocket.MessageText, []byte(base64.StdEncoding.EncodeToString([]byte("echo b64-$((6*7))\n"))))
	var got strings.Builder
	for !strings.Contains(got.String(), "b64-42\r\n") {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v (so far %q)", err, got.String())
		}
		dec, err := base64.StdEncoding.DecodeString(string(data))
		if typ != websocket.MessageText || err != nil {
			t.Fatalf("message %v %q is not base64 text: %v", typ, data, err)
		}
		got.Write(dec)
	}
	conn.Close(websocket.StatusNormalClosure, "")
}

// At Zun's default API version (1.26) Docker sends attach output in text
// messages, with any bytes the process printed. Clients of the binary
// subprotocol, or of none, get binary messages with the bytes unchanged: a
// browser would fail the connection on a text message that is not UTF-8.
func TestAttachOutputBinaryAtDefaultAPIVersion(t *testing.T) {
	if testenv.APIVersion != "1.26" {
		t.Fatalf("the test environment's API version is %s; this test is about Zun's default, 1.26", testenv.APIVersion)
	}
	s := newSession(t)
	for _, protocols := range [][]string{{"binary", "base64"}, nil} {
		t.Run(fmt.Sprintf("subprotocols %q", protocols), func(t *testing.T) {
			c := s.attachable(t, `stty -echo; read x; printf 'x\377y\351z\n'; sleep 600`)
			ctx := ctxTimeout(t, 30*time.Second)
			conn, _, err := websocket.Dial(ctx, s.proxy.url(c.Token, c.UUID, ""), &websocket.DialOptions{Subprotocols: protocols})
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer conn.CloseNow()
			if err := conn.Write(ctx, websocket.MessageBinary, []byte("go\n")); err != nil {
				t.Fatal(err)
			}
			var got strings.Builder
			for !strings.Contains(got.String(), "x\xffy\xe9z") {
				typ, data, err := conn.Read(ctx)
				if err != nil {
					t.Fatalf("read: %v (so far %q)", err, got.String())
				}
				if typ != websocket.MessageBinary {
					t.Fatalf("container output %q came in a %v message", data, typ)
				}
				got.Write(data)
			}
			conn.Close(websocket.StatusNormalClosure, "")
		})
	}
}
