// Package web serves the web console: a terminal page (xterm.js) that
// opens a console WebSocket on the same origin. The page's own files are
// in src/; xterm.js comes from npm packages pinned in package-lock.json,
// copied into dist/ by make web. Both are committed and embedded, so go
// build needs no npm.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed src dist
var files embed.FS

// The page runs only its own scripts, talks only to its own origin, sends
// no Referer (the token is in its URL) and cannot be framed. connect-src
// 'self' covers WebSockets to the page's own host and port (CSP Level 3
// matches ws: and wss: against http: and https: origins).
const csp = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// Handler serves /console (the page) and /console/<asset>.
func Handler() http.Handler {
	page, _ := fs.Sub(files, "src")
	vendor, _ := fs.Sub(files, "dist")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		name, _ := strings.CutPrefix(r.URL.Path, "/console")
		name = strings.TrimPrefix(name, "/")
		switch {
		case name == "" && !strings.HasSuffix(r.URL.Path, "/"):
			h.Set("Cache-Control", "no-store")
			http.ServeFileFS(w, r, page, "index.html")
		case name == "" || name == "index.html" || strings.Contains(name, "/"):
			http.Error(w, "404 not found", http.StatusNotFound)
		default:
			fsys := page
			if _, err := fs.Stat(page, name); err != nil {
				fsys = vendor
			}
			if _, err := fs.Stat(fsys, name); err != nil {
				http.Error(w, "404 not found", http.StatusNotFound)
				return
			}
			h.Set("Cache-Control", "public, max-age=3600")
			http.ServeFileFS(w, r, fsys, name)
		}
	})
}
