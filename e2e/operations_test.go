package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/recording"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// TestOperations runs sessions to real containers with metrics, JSON logs,
// the audit log and session recording on, and checks what an operator
// reads: the /metrics page, the audit record, the log lines and a
// recording that replays the bytes the client got.
func TestOperations(t *testing.T) {
	t.Parallel()
	s := newDeployment(t)
	dir := t.TempDir()
	auditFile, recDir := filepath.Join(dir, "audit.log"), filepath.Join(dir, "recordings")
	s.proxy = startProxy(t, baseConf(s.db), fmt.Sprintf(`[DEFAULT]
log_format = json
[metrics]
listen = 127.0.0.1:0
profiling = true
[audit]
file = %s
[recording]
dir = %s
input = true
`, auditFile, recDir))
	metricsAddr := s.proxy.sideAddr(t, "metrics")

	// The container prints multi-byte text after reading a line.
	c := s.attachable(t, `read x; printf 'h\303\251llo \342\202\254 %s\n' "$x"; sleep 0.2; exit 0`)
	ctx := ctxTimeout(t, 30*time.Second)
	conn := attach(t, s.proxy, c)
	if err := conn.Write(ctx, websocket.MessageBinary, []byte("now\n")); err != nil {
		t.Fatal(err)
	}
	ce, received := testenv.ReadToClose(ctx, t, conn)
	if ce.Code != websocket.StatusNormalClosure {
		t.Fatalf("session ended with %v, want close 1000", ce)
	}
	if !strings.Contains(received, "héllo € now") {
		t.Fatalf("client got %q", received)
	}

	// Refused requests: a wrong token, a foreign Origin.
	for _, h := range []http.Header{nil, {"Origin": {"http://evil.example"}}} {
		token := c.Token
		if h == nil {
			token = "wrong-token"
		}
		if _, resp, err := websocket.Dial(ctx, s.proxy.url(token, c.UUID, ""), dialOptions(h)); err == nil {
			t.Fatal("a bad request got a session")
		} else if resp == nil || resp.Header.Get("X-Session-Id") == "" {
			t.Errorf("refusal %v without an X-Session-Id header", resp)
		}
	}

	// The audit record, written as the session ended; refusals have none.
	rec := auditOf(t, auditFile, 1)
	data, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n != 1 {
		t.Fatalf("audit log has %d records, want 1:\n%s", n, data)
	}
	want := map[string]any{
		"type": "session", "kind": "attach", "container": c.UUID, "container_name": c.Name, "container_id": c.DockerID,
		"host": "compute-1", "project_id": "p1", "user_id": "u1", "subprotocol": "binary",
		"bytes_to_container": float64(4), "bytes_to_client": float64(len(received)),
		"close_code": float64(1000), "end_reason": "container_exited",
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("audit %s = %v, want %v", k, rec[k], v)
		}
	}
	if !strings.HasPrefix(fmt.Sprint(rec["client"]), "127.0.0.1:") {
		t.Errorf("audit client %v", rec["client"])
	}
	for _, k := range []string{"start", "end"} {
		if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(rec[k])); err != nil {
			t.Errorf("audit %s %v: %v", k, rec[k], err)
		}
	}
	id := fmt.Sprint(rec["session"])

	// Every log line is JSON; the session's lines carry its id; no token.
	var started, ended bool
	for _, l := range strings.Split(s.proxy.logs.String(), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("log line is not JSON: %q", l)
			continue
		}
		switch m["msg"] {
		case "session started":
			started = m["session"] == id
		case "session ended":
			ended = m["session"] == id
		}
	}
	if !started || !ended {
		t.Errorf("session %s: start logged with its id %v, end %v", id, started, ended)
	}
	for _, secret := range []string{c.Token, "wrong-token"} {
		if strings.Contains(s.proxy.logs.String(), secret) || strings.Contains(string(data), secret) {
			t.Errorf("a token is in the logs or the audit record")
		}
	}

	// The recording replays what the client got.
	path := fmt.Sprint(rec["recording"])
	if filepath.Dir(path) != recDir {
		t.Fatalf("recording %q not in %s", path, recDir)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("recording %s: %v %v", path, fi, err)
	}
	header, events, err := recording.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var typed string
	for _, e := range events {
		if e.Kind == "i" {
			typed += e.Data
		}
	}
	if header.Width != 80 || header.Height != 24 || typed != "now\n" {
		t.Errorf("recording header %+v, input %q", header, typed)
	}
	for _, args := range [][]string{{"--raw"}, {"--speed", "100"}} {
		out, err := exec.Command(binary, append(append([]string{"replay"}, args...), path)...).Output()
		if err != nil {
			t.Fatalf("replay %v: %v", args, err)
		}
		if string(out) != string(received) {
			t.Errorf("replay %v printed %q, the client got %q", args, out, received)
		}
	}

	// The metrics page.
	values := metrics(t, metricsAddr)
	for name, want := range map[string]string{
		`zun_wsproxy_sessions_started_total{kind="attach"}`:                         "1",
		`zun_wsproxy_sessions_ended_total{kind="attach",reason="container_exited"}`: "1",
		`zun_wsproxy_sessions_active{kind="attach"}`:                                "0",
		`zun_wsproxy_handshakes_refused_total{reason="unauthorized"}`:               "1",
		`zun_wsproxy_handshakes_refused_total{reason="forbidden_origin"}`:           "1",
		`zun_wsproxy_bytes_total{direction="to_container"}`:                         "4",
		`zun_wsproxy_bytes_total{direction="to_client"}`:                            fmt.Sprint(len(received)),
		`zun_wsproxy_session_duration_seconds_count{kind="attach"}`:                 "1",
		`zun_wsproxy_session_setup_seconds_count`:                                   "1",
		`zun_wsproxy_time_to_first_byte_seconds_count`:                              "1",
		`zun_wsproxy_backend_dial_seconds_count{kind="attach"}`:                     "1",
		`zun_wsproxy_store_lookup_seconds_count`:                                    "2",
	} {
		if values[name] != want {
			t.Errorf("%s = %q, want %s", name, values[name], want)
		}
	}

	// Profiling, on the metrics listener only.
	for addr, want := range map[string]int{metricsAddr: http.StatusOK, s.proxy.addr(): http.StatusNotFound} {
		resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: /debug/pprof/goroutine: %d, want %d", addr, resp.StatusCode, want)
		}
		if want == http.StatusOK && !strings.Contains(string(body), "goroutine profile:") {
			t.Errorf("/debug/pprof/goroutine is not a profile: %.100q", body)
		}
	}
}
