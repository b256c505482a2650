package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// zunclient runs python-zunclient's own attach/exec code (the CLI's
// do_attach/do_exec) through the proxy, via e2e/testdata/zunclient_driver.py,
// and returns its output and exit code.
func zunclient(t *testing.T, args ...string) (string, int) {
	t.Helper()
	testenv.RequirePythonClient(t)
	cmd := exec.Command(testenv.Python, append([]string{filepath.Join("testdata", "zunclient_driver.py")}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run zunclient driver: %v", err)
	}
	return out.String(), code
}

func TestZunclientAttach(t *testing.T) {
	s := newSession(t)
	c := s.attachable(t, "sh")
	out, code := zunclient(t, "attach", "--url", s.proxy.url(c.Token, c.UUID, ""),
		"--send", `echo hello-$((6*7))\n`, "--expect", "hello-42")
	if code != 0 {
		t.Fatalf("zunclient attach: exit %d\n%s", code, out)
	}
	// The client was ended (its terminal closed): the proxy's session ends
	// and the Docker side is closed.
	line := s.proxy.sessionEnded(t, `container=`+c.UUID)
	if !strings.Contains(line, `reason="client disconnected`) {
		t.Errorf("session end: %s", line)
	}
	s.proxy.waitNoSessions(t)
	if !strings.Contains(s.proxy.logs.String(), "subprotocol=binary") {
		t.Error("the client's binary subprotocol was not selected")
	}
}

func TestZunclientExec(t *testing.T) {
	s := newSession(t)
	c := s.attachable(t, "sleep 600")
	execID, token := s.db.NewExec(t, s.docker, c, "")
	out, code := zunclient(t, "exec", "--url", s.proxy.url(token, c.UUID, execID), "--exec-id", execID,
		"--send", `echo hello-$((6*7))\n`, "--expect", "hello-42")
	if code != 0 {
		t.Fatalf("zunclient exec: exit %d\n%s", code, out)
	}
	s.proxy.sessionEnded(t, `kind=exec.*reason="client disconnected`)
	s.proxy.waitNoSessions(t)
}

// The container prints a megabyte of multi-byte text. Docker splits it
// anywhere, and the CLI decodes every message by itself: through the proxy
// each message is whole characters, and the bytes are exactly the
// container's.
func TestZunclientMultibyteOutput(t *testing.T) {
	s := newSession(t)
	// 999,999 bytes: `head -c` of a whole number of "€€€€\n" lines (13
	// bytes), so the output itself ends on a character. -opost keeps the
	// terminal from turning \n into \r\n; -echo keeps "go" out of it.
	const lines = 76923
	c := s.attachable(t, `stty -opost -echo; read x; yes '€€€€' | head -c 999999`)
	dir := t.TempDir()
	outFile := filepath.Join(dir, "out")
	out, code := zunclient(t, "attach", "--url", s.proxy.url(c.Token, c.UUID, ""),
		"--send", `go\n`, "--collect-out", outFile, "--timeout", "60")
	if code != 0 {
		t.Fatalf("zunclient: exit %d\n%s", code, out)
	}
	got, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("€€€€\n"), lines)
	if !bytes.Equal(got, want) {
		t.Fatalf("the client printed %d bytes, want %d identical to the container's output", len(got), len(want))
	}
	line := s.proxy.sessionEnded(t, `container=`+c.UUID)
	if !strings.Contains(line, `reason="container exited"`) || !strings.Contains(line, "bytes_to_client=999999") {
		t.Errorf("session end: %s", line)
	}
}

// With heartbeats on, the CLI stays usable after idling past several
// intervals (websocket-client would stall in recv() if it were pinged).
func TestZunclientWithHeartbeat(t *testing.T) {
	s := newDeployment(t)
	p := startProxy(t, baseConf(s.db), "[websocket_proxy]\nheartbeat = 1\n")
	c := s.attachable(t, "sh")
	out, code := zunclient(t, "attach", "--url", p.url(c.Token, c.UUID, ""), "--send-delay", "3.5",
		"--send", `echo idle-$((6*7))\n`, "--expect", "idle-42")
	if code != 0 {
		t.Fatalf("zunclient after idling past the heartbeat: exit %d\n%s", code, out)
	}
}

// Behind a load balancer base_url has no port (ws://host/). python-zunclient
// then sends the Origin "http://host:None"; Zun's proxy compares hostnames
// only, and so must this one, or the CLI cannot connect at all. The proxy
// listens on port 80 of its own loopback address, as a proxy behind a
// balancer's default port does.
func TestZunclientBaseURLWithoutPort(t *testing.T) {
	const host = "127.0.0.80"
	db := testenv.NewZunDB(t, "e2e")
	d := testenv.NewDocker(t)
	s := &session{db: db, docker: d}
	s.proxy = startProxyArgs(t, confArgs(t, baseConf(db),
		"[websocket_proxy]\nwsproxy_host = "+host+"\nwsproxy_port = 80\nbase_url = ws://"+host+"/\n")...)
	c := s.attachable(t, "sh")
	base := "ws://" + host + "/"
	out, code := zunclient(t, "attach", "--url", base+"?token="+c.Token+"&uuid="+c.UUID,
		"--send", `echo port-$((6*7))\n`, "--expect", "port-42")
	if code != 0 {
		t.Fatalf("zunclient attach through %s: exit %d\n%s", base, code, out)
	}
	execID, token := db.NewExec(t, d, c, "")
	out, code = zunclient(t, "exec", "--url", base+"?token="+token+"&uuid="+c.UUID+"&exec_id="+execID,
		"--exec-id", execID, "--send", `echo exec-$((6*7))\n`, "--expect", "exec-42")
	if code != 0 {
		t.Fatalf("zunclient exec through %s: exit %d\n%s", base, code, out)
	}
	if strings.Contains(s.proxy.logs.String(), "status=403") {
		t.Errorf("a request was refused for its Origin:\n%s", s.proxy.logs)
	}
}
