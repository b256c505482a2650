package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"text/template"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// The proxy started with zun.conf as Kolla writes it: every section of
// Kolla's template, debug in Python's spelling, log_dir without log_file,
// base_url without a trailing slash, [database] max_retries = -1 and
// Docker's API at 1.24 (text frames on attach). It logs where oslo.log
// would (Kolla's log collection reads log_dir/zun-wsproxy.log), and the real
// CLI works through the URL Zun's API builds from that base_url.
func TestKollaZunConf(t *testing.T) {
	db := testenv.NewZunDB(t, "e2e")
	d := testenv.NewDocker(t)
	logDir := t.TempDir()
	dockerHost, dockerPort, _ := net.SplitHostPort(testenv.DockerAddr)
	tmpl := template.Must(template.ParseFiles(filepath.Join("testdata", "kolla-zun.conf")))
	var conf strings.Builder
	if err := tmpl.Execute(&conf, map[string]any{
		"LogDir": logDir, "Connection": db.URL(), "Port": 0,
		"DockerAddr": testenv.DockerAddr, "DockerHost": dockerHost, "DockerPort": dockerPort,
	}); err != nil {
		t.Fatal(err)
	}
	// The log goes to log_dir: the harness reads where it listens there.
	logFile := filepath.Join(logDir, "zun-wsproxy.log")
	readLog := func() string { b, _ := os.ReadFile(logFile); return string(b) }
	p := launchProxyCmd(t, exec.Command(binary, confArgs(t, conf.String(), "")...))
	p.waitListening(t, readLog)

	id := d.Run("sh")
	c := db.InsertContainer(t, testenv.Container{DockerID: id, Token: testenv.NewUUID(),
		WebsocketURL: fmt.Sprintf("ws://%s/v1.24/containers/%s/attach/ws?logs=0&stream=1&stdin=1&stdout=1&stderr=1", testenv.DockerAddr, id)})
	// Zun's API: base_url + "?token=…&uuid=…".
	url := fmt.Sprintf("ws://%s?token=%s&uuid=%s", p.addr(), c.Token, c.UUID)
	out, code := zunclient(t, "attach", "--url", url, "--send", `echo kolla-$((6*7))\n`, "--expect", "kolla-42")
	if code != 0 {
		t.Fatalf("zunclient attach through %s: exit %d\n%s", url, code, out)
	}

	var logs string
	if !testenv.WaitFor(settle, func() bool {
		logs = readLog()
		return strings.Contains(logs, "session ended") && strings.Contains(logs, "container="+c.UUID)
	}) {
		t.Fatalf("%s has no line for the session; it holds:\n%s\nstandard error:\n%s", logFile, logs, p.logs)
	}
	if strings.Contains(logs, "level=DEBUG") {
		t.Errorf("debug = False, yet debug lines were logged:\n%s", logs)
	}
	if s := p.logs.String(); strings.Contains(s, "session started") {
		t.Errorf("log lines went to standard error with log_dir set:\n%s", s)
	}
}
