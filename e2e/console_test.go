package e2e

import (
	"encoding/base64"
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

// newSession runs a proxy with baseConf in front of a fresh Zun
// database and the Docker engine.
func newSession(t *testing.T) *session {
	t.Helper()
	s := newDeployment(t)
	s.proxy = startProxy(t, baseConf(s.db), "")
	return s
}

// newDeployment is newSession without the proxy: the test runs its own.
func newDeployment(t *testing.T) *session {
	t.Helper()
	return &session{db: testenv.NewZunDB(t, "e2e"), docker: testenv.NewDocker(t)}
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
	conn := attach(t, s.proxy, c)
	if got := conn.Subprotocol(); got != "binary" {
		t.Errorf("subprotocol %q, want binary (as websockify)", got)
	}
	s.proxy.logs.WaitLine(t, `session started.*container=`+c.UUID+`.*kind=attach`, 5*time.Second)
	if err := conn.Write(ctx, websocket.MessageBinary, []byte("now\n")); err != nil {
		t.Fatal(err)
	}
	testenv.ReadUntil(ctx, t, conn, "bye-now")
	// The container exits: Docker closes its attach socket, and the client
	// is told why with a close frame.
	if ce, _ := testenv.ReadToClose(ctx, t, conn); ce.Code != websocket.StatusNormalClosure || ce.Reason != "container exited" {
		t.Fatalf("after exit: %v, want close 1000 \"container exited\"", ce)
	}
	line := s.proxy.sessionEnded(t, `container=`+c.UUID)
	for _, want := range []string{`reason="container exited"`, "bytes_to_container=4", "kind=attach", "client=127.0.0.1:", "duration="} {
		if !strings.Contains(line, want) {
			t.Errorf("session end log lacks %s: %s", want, line)
		}
	}
	s.proxy.waitNoSessions(t)
}

func TestExecEchoAndExit(t *testing.T) {
	s := newSession(t)
	c := s.attachable(t, "sleep 600")
	execID, token := s.db.NewExec(t, s.docker, c, "")

	ctx := ctxTimeout(t, 30*time.Second)
	conn := open(ctx, t, s.proxy.url(token, c.UUID, execID), nil)
	testenv.Echo(t, conn, "hello")
	conn.Write(ctx, websocket.MessageBinary, []byte("exit\n"))
	if ce, _ := testenv.ReadToClose(ctx, t, conn); ce.Code != websocket.StatusNormalClosure || ce.Reason != "exec session ended" {
		t.Fatalf("after exit: %v, want close 1000 \"exec session ended\"", ce)
	}
	line := s.proxy.sessionEnded(t, `kind=exec`)
	if !strings.Contains(line, "exec_id="+execID) || !strings.Contains(line, `reason="exec process ended"`) {
		t.Errorf("session end log: %s", line)
	}
	s.proxy.waitNoSessions(t)
	if !s.docker.Running(c.DockerID) {
		t.Error("the container stopped when its exec ended")
	}
}

// A client that disappears (no close frame) must not leave the Docker
// side open: the proxy closes it as it reads the end of the client's
// connection, not when a timer finds the session dead.
func TestClientDisappears(t *testing.T) {
	s := newSession(t)
	for _, kind := range []string{"attach", "exec"} {
		t.Run(kind, func(t *testing.T) {
			c := s.attachable(t, "sh")
			url := s.proxy.url(c.Token, c.UUID, "")
			if kind == "exec" {
				execID, token := s.db.NewExec(t, s.docker, c, "")
				url = s.proxy.url(token, c.UUID, execID)
			}
			conn := open(ctxTimeout(t, 30*time.Second), t, url, nil)
			testenv.Echo(t, conn, "alive")
			if d, _ := s.proxy.conns(t); d != 1 {
				t.Fatalf("%d connections to Docker during the session, want 1", d)
			}
			conn.CloseNow() // TCP gone, no close frame
			start := time.Now()
			s.proxy.sessionEnded(t, `kind=`+kind+`.*reason="client disconnected: [^"]*(EOF|reset by peer)"`)
			t.Logf("session ended %v after the client vanished", time.Since(start).Round(time.Millisecond))
			if d, _ := s.proxy.conns(t); d != 0 {
				t.Fatalf("%d connections to Docker after the session ended", d)
			}
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
	conn := attach(t, s.proxy, c)
	testenv.Echo(t, conn, "x")
	if err := conn.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
	s.proxy.sessionEnded(t, `reason="client closed \(code 1000\)"`)
	s.proxy.waitNoSessions(t)
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
			conn, _, err := testenv.Open(ctx, s.proxy.url(c.Token, c.UUID, ""), dialOptions(nil))
			if err != nil {
				errs <- err
				return
			}
			defer conn.CloseNow()
			// The shell computes the answer, so an echo of the typed line
			// does not count.
			conn.Write(ctx, websocket.MessageBinary, []byte(fmt.Sprintf("echo n-%d-$((%d*1000+7))\n", i, i)))
			if _, err := testenv.Output(ctx, conn, fmt.Sprintf("n-%d-%d\r\n", i, i*1000+7), nil); err != nil {
				errs <- err
				return
			}
			errs <- conn.Close(websocket.StatusNormalClosure, "")
		}(i, c)
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	s.proxy.waitNoSessions(t)
}

// Old websockify clients offer only "base64": text frames carrying base64
// both ways.
func TestBase64Client(t *testing.T) {
	s := newSession(t)
	c := s.attachable(t, "sh")
	ctx := ctxTimeout(t, 30*time.Second)
	conn, _, err := testenv.Open(ctx, s.proxy.url(c.Token, c.UUID, ""), &websocket.DialOptions{Subprotocols: []string{"base64"}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.CloseNow()
	if got := conn.Subprotocol(); got != "base64" {
		t.Fatalf("subprotocol %q, want base64", got)
	}
	conn.Write(ctx, websocket.MessageText, []byte(base64.StdEncoding.EncodeToString([]byte("echo b64-$((6*7))\n"))))
	if _, err := testenv.Output(ctx, conn, "b64-42\r\n", func(typ websocket.MessageType, data []byte) ([]byte, error) {
		dec, err := base64.StdEncoding.DecodeString(string(data))
		if typ != websocket.MessageText || err != nil {
			return nil, fmt.Errorf("message %v %q is not base64 text: %v", typ, data, err)
		}
		return dec, nil
	}); err != nil {
		t.Fatal(err)
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
			if _, err := testenv.Output(ctx, conn, "x\xffy\xe9z", func(typ websocket.MessageType, data []byte) ([]byte, error) {
				if typ != websocket.MessageBinary {
					return nil, fmt.Errorf("container output %q came in a %v message", data, typ)
				}
				return data, nil
			}); err != nil {
				t.Fatal(err)
			}
			conn.Close(websocket.StatusNormalClosure, "")
		})
	}
}
