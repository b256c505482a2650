package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// TestBrowserConsole opens the web console in Debian's chromium, driven by
// Playwright (e2e/browser/console.mjs), against a real container: typing,
// resizing, the container exiting, and a used token. Screenshots go to
// e2e/artifacts/.
func TestBrowserConsole(t *testing.T) {
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Fatalf("chromium is not installed: run scripts/test-env.sh (make test runs it)")
	}
	if _, err := os.Stat(filepath.Join("browser", "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed in e2e/browser: run scripts/test-env.sh (make test runs it)")
	}
	s := newStandalone(t, false)
	name := "web-" + testenv.NewUUID()[:8]
	s.docker.RunNamed(name, "sh")
	_, _, consoleURL := s.mint(t, "--container", name)
	artifacts, _ := filepath.Abs("artifacts")
	os.RemoveAll(artifacts)

	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("node", append([]string{filepath.Join("browser", "console.mjs"), consoleURL, artifacts}, args...)...)
		out, err := cmd.CombinedOutput()
		t.Logf("browser:\n%s", out)
		if err != nil {
			t.Fatalf("browser test failed: %v (screenshots in %s)", err, artifacts)
		}
	}
	run()
	line := s.proxy.logs.waitLine(t, `session ended.*container=`+name, 5*time.Second)
	if !strings.Contains(line, `reason="container exited"`) {
		t.Errorf("session end: %s", line)
	}
	s.proxy.logs.waitLine(t, `session started.*container=`+name+`.*subprotocol=console.zun-wsproxy.v1`, time.Second)
	// The token was single-use: opening the page again explains why it
	// cannot connect.
	run("--used-token")
}
