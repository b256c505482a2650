package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// requireBrowser fails unless chromium and playwright-core are installed.
func requireBrowser(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Fatalf("chromium is not installed: run scripts/test-env.sh (make test runs it)")
	}
	if _, err := os.Stat(filepath.Join("browser", "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed in e2e/browser: run scripts/test-env.sh (make test runs it)")
	}
}

// runBrowser runs the Playwright script e2e/browser/<script> with args and
// fails the test if it does not exit 0.
func runBrowser(t *testing.T, script string, args ...string) {
	t.Helper()
	cmd := exec.Command("node", append([]string{filepath.Join("browser", script)}, args...)...)
	out, err := cmd.CombinedOutput()
	t.Logf("browser:\n%s", out)
	if err != nil {
		t.Fatalf("browser test %s failed: %v (screenshots in e2e/artifacts)", script, err)
	}
}

// artifactDir is e2e/artifacts, where the browser tests put screenshots.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("artifacts")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestBrowserConsole opens the web console in Debian's chromium, driven by
// Playwright (e2e/browser/console.mjs), against a real container: typing,
// resizing, the container exiting, and a used token. Screenshots go to
// e2e/artifacts/.
func TestBrowserConsole(t *testing.T) {
	requireBrowser(t)
	s := newStandalone(t, false)
	name := "web-" + testenv.NewUUID()[:8]
	s.docker.RunNamed(name, "sh")
	_, _, consoleURL := s.mint(t, "--container", name)
	artifacts := artifactDir(t)
	for _, f := range []string{"console.png", "console-ended.png", "console-used-token.png", "console-failure.png"} {
		os.Remove(filepath.Join(artifacts, f))
	}

	runBrowser(t, "console.mjs", consoleURL, artifacts)
	line := s.proxy.sessionEnded(t, `container=`+name)
	if !strings.Contains(line, `reason="container exited"`) {
		t.Errorf("session end: %s", line)
	}
	s.proxy.logs.WaitLine(t, `session started.*container=`+name+`.*subprotocol=console.zun-wsproxy.v1`, settle)
	// The token was single-use: opening the page again explains why it
	// cannot connect.
	runBrowser(t, "console.mjs", consoleURL, artifacts, "--used-token")
}
