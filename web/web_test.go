package web

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	h := Handler()
	cases := []struct {
		method, path string
		status       int
		contains     string
	}{
		{"GET", "/console?token=abc", 200, `src="console/console.js"`},
		{"GET", "/console/console.js", 200, "console.zun-wsproxy.v1"},
		{"GET", "/console/xterm.js", 200, "Terminal"},
		{"GET", "/console/xterm.css", 200, ".xterm"},
		{"GET", "/console/", 404, ""},
		{"GET", "/console/index.html", 404, ""},
		{"GET", "/console/nope.js", 404, ""},
		{"GET", "/console/../../etc/passwd", 404, ""},
		{"POST", "/console", 405, ""},
	}
	for _, c := range cases {
		r := httptest.NewRequest(c.method, c.path, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.status || !strings.Contains(w.Body.String(), c.contains) {
			t.Errorf("%s %s: %d, want %d containing %q", c.method, c.path, w.Code, c.status, c.contains)
		}
		if loc := w.Header().Get("Location"); loc != "" {
			t.Errorf("%s %s redirects to %s", c.method, c.path, loc)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/console?token=abc", nil))
	for name, want := range map[string]string{
		"Content-Security-Policy": "script-src 'self'",
		"Referrer-Policy":         "no-referrer",
		"X-Frame-Options":         "DENY",
		"Cache-Control":           "no-store",
	} {
		if got := w.Header().Get(name); !strings.Contains(got, want) {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	// The page may open WebSockets to its own origin only ('self' covers
	// ws: and wss: on it, CSP Level 3), not to any host.
	directives := map[string]string{}
	for _, d := range strings.Split(w.Header().Get("Content-Security-Policy"), ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	if got := directives["connect-src"]; got != "'self'" {
		t.Errorf("connect-src %q, want 'self'", got)
	}
	if !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
		t.Errorf("content type %q", w.Header().Get("Content-Type"))
	}
}
