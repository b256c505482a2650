package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// horizonHost is the loopback address Horizon's pages come from in the
// test: another origin than the proxy's 127.0.0.1.
const horizonHost = "127.0.0.2"

// TestHorizonConsole opens the console page Horizon and zun-ui serve
// (Horizon's serial_console.html with its serialConsole directive and
// term.js, all from Debian's packages) in chromium against the proxy in Zun
// mode, attached to a shell in a container whose websocket_url uses Docker
// API 1.26, Zun's default. e2e/browser/horizon.mjs checks what the page
// shows. Screenshot: e2e/artifacts/horizon-console.png.
func TestHorizonConsole(t *testing.T) {
	requireBrowser(t)
	db := testenv.NewZunDB(t, "e2e")
	s := &session{db: db, docker: testenv.NewDocker(t),
		proxy: startProxy(t, baseConf(db), "[websocket_proxy]\nallowed_origins = "+horizonHost+"\n")}
	c := s.attachable(t, `PS1='zun-prompt# ' exec sh`)
	if !strings.Contains(c.WebsocketURL, "/v1.26/") {
		t.Fatalf("websocket_url %s: want Zun's default Docker API version 1.26", c.WebsocketURL)
	}
	page := serveHorizon(t, s.proxy.url(c.Token, c.UUID, ""), c.UUID)
	artifacts := artifactDir(t)
	for _, f := range []string{"horizon-console.png", "horizon-console-failure.png"} {
		os.Remove(filepath.Join(artifacts, f))
	}

	runBrowser(t, "horizon.mjs", page, artifacts)
	// Horizon offers binary and base64: binary is chosen, as websockify does.
	s.proxy.logs.WaitLine(t, `session started.*container=`+c.UUID+`.*subprotocol=binary`, settle)
}

// serveHorizon renders the console page for consoleURL as Horizon does
// (e2e/horizon/render_console.py, with Debian's python3-django-horizon) and
// serves it and everything it loads from http://127.0.0.2:<port>/, until
// the test ends. It returns the page's URL.
func serveHorizon(t *testing.T, consoleURL, containerID string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command(testenv.Python, filepath.Join("horizon", "render_console.py"), consoleURL, containerID, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("rendering Horizon's console page failed (%v); python3-django-horizon, python3-xstatic-term.js, "+
			"python3-xstatic-angular and python3-xstatic-jquery come from scripts/test-env.sh (make test runs it):\n%s", err, out)
	}
	var manifest struct {
		Page      string
		Resources map[string]struct{ File, Type string }
	}
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err == nil {
		err = json.Unmarshal(data, &manifest)
	}
	if err != nil {
		t.Fatalf("the renderer's manifest: %v", err)
	}

	// The page's scripts are Horizon's, term.js, jQuery and AngularJS as
	// Debian installed them: every file outside the render's own output
	// must belong to an installed package.
	var installed []string
	for _, r := range manifest.Resources {
		if !strings.HasPrefix(r.File, dir) {
			installed = append(installed, r.File)
		}
	}
	for _, want := range []string{"/serialConsole.js", "/term.js", "/jquery.js", "/angular.js"} {
		if !slices.ContainsFunc(installed, func(f string) bool { return strings.HasSuffix(f, want) }) {
			t.Fatalf("the page loads no %s; it loads %v", want[1:], installed)
		}
	}
	if out, err := exec.Command("dpkg", append([]string{"-S"}, installed...)...).CombinedOutput(); err != nil {
		t.Fatalf("the console page loads files no Debian package installed (%v):\n%s", err, out)
	} else {
		t.Logf("Horizon's page loads:\n%s", out)
	}

	mux := http.NewServeMux()
	for path, r := range manifest.Resources {
		mux.HandleFunc(path, func(w http.ResponseWriter, req *http.Request) {
			if req.URL.Path != path {
				http.NotFound(w, req)
				return
			}
			w.Header().Set("Content-Type", r.Type)
			http.ServeFile(w, req, r.File)
		})
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(horizonHost, "0"))
	if err != nil {
		t.Fatalf("listen on %s (Horizon's host): %v", horizonHost, err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL + manifest.Page
}
