package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// make bench's TLS rows run: the proxy with ssl_only and a ticket key
// file, nginx terminating TLS with the same certificate, the TLS backend,
// for both key types, full and resumed handshakes (-strict fails the run
// on errors or on handshakes that did not resume as asked). Short rounds:
// this checks the path, not the figures. Runs alone (not in parallel).
func TestBenchScriptTLS(t *testing.T) {
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Fatal("nginx is not installed (Debian's nginx): run scripts/test-env.sh")
	}
	cmd := exec.Command("bash", "scripts/bench.sh", "-json", "-rounds", "1", "-duration", "200ms", "-samples", "50")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "BENCH_PLAIN=0", "BENCH_TLS_KEYS=ecdsa rsa")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench.sh: %v\n%s\n%s", err, out, stderr.Bytes())
	}
	type row struct {
		Name         string
		Through, Ref float64
		RefName      string `json:"ref_name"`
		Errors       int64
		Note         string
	}
	var rows []row
	var headers []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "TLS, ") {
			headers = append(headers, line)
		}
		var r row
		if json.Unmarshal([]byte(line), &r) == nil && r.Name != "" {
			rows = append(rows, r)
		}
	}
	if len(headers) != 2 || !strings.HasPrefix(headers[0], "TLS, ECDSA P-256 certificate") || !strings.HasPrefix(headers[1], "TLS, RSA-2048 certificate") {
		t.Fatalf("TLS sections %q, want ECDSA P-256 then RSA-2048:\n%s", headers, out)
	}
	count := map[string]int{}
	for _, r := range rows {
		count[r.Name]++
		// CPU rows count 10 ms clock ticks: short rounds may see none.
		cpu := strings.HasPrefix(r.Name, "  ")
		if r.Errors != 0 || !cpu && (r.Through <= 0 || r.Ref <= 0 || r.RefName != "nginx") {
			t.Errorf("row %+v: want figures through the proxy and nginx, no errors", r)
		}
		// Short rounds on a busy machine open few sessions, and each
		// worker's first of a round may be a full handshake (wsbench
		// -strict fails the run on more): the rest must resume.
		if strings.Contains(r.Name, "TLS resumed") {
			pct := -1
			if m := regexp.MustCompile(`through (\d+)%`).FindStringSubmatch(r.Note); m != nil {
				pct, _ = strconv.Atoi(m[1])
			}
			if pct <= 0 {
				t.Errorf("row %q: %s; want the proxy to resume TLS sessions", r.Name, r.Note)
			}
		}
	}
	for name, want := range map[string]int{
		"keystroke RTT p50, 1 session(s)":                                  1,
		"keystroke RTT p50, 100 session(s)":                                1,
		"  proxy CPU per round trip":                                       2,
		"output throughput, 64 KiB messages, 1 session":                    1,
		"echo throughput, 64 KiB messages, 1 session":                      1,
		"sessions opened per second (8 workers), TLS full":                 2, // both key types
		"sessions opened per second (8 workers), TLS full, X25519 only":    2,
		"sessions opened per second (8 workers), TLS resumed":              1,
		"sessions opened per second (8 workers), TLS resumed, X25519 only": 1,
		"  proxy CPU per session opened":                                   6,
	} {
		if count[name] != want {
			t.Errorf("%d rows %q, want %d:\n%s", count[name], name, want, out)
		}
	}
}
