// Package bench measures console proxies: a Docker-attach-compatible
// backend (echo, sink, source) and a client that measures latency,
// throughput, handshakes and idle memory through any WebSocket URL, direct
// and through a proxy in one interleaved run.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// Mode is what the backend does with a session.
type Mode string

const (
	Echo   Mode = "echo"   // sends every message back
	Sink   Mode = "sink"   // discards what it gets
	Source Mode = "source" // streams 64 KiB messages as fast as it can
)

// Backend serves Docker's attach WebSocket protocol on any path; the mode
// comes from the query parameter "mode", else from the container id in a
// Docker attach path (/v1.xx/containers/{mode}/attach/ws), else echo: so
// one backend serves every measurement, direct or through a proxy whose
// container rows point at it.
type Backend struct {
	srv   *http.Server
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// inspectPath recognizes Docker's GET /v1.xx/containers/{id}/json.
func inspectPath(r *http.Request) (string, bool) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if r.Method != http.MethodGet || len(parts) != 4 || parts[1] != "containers" || parts[3] != "json" {
		return "", false
	}
	return parts[2], true
}

// Serve serves on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener) error {
	b := &Backend{conns: map[net.Conn]struct{}{}}
	b.srv = &http.Server{Handler: b}
	stop := context.AfterFunc(ctx, func() {
		b.srv.Close()
		b.mu.Lock()
		for c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
	})
	defer stop()
	if err := b.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if id, ok := inspectPath(r); ok {
		// Standalone mode inspects a container before each session: the
		// backend is a running container with a terminal, whatever its id.
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"Id": id, "Name": "/" + id, "State": map[string]bool{"Running": true}, "Config": map[string]bool{"Tty": true}})
		return
	}
	key, err := websocket.CheckRequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	conn, buffered, err := websocket.Upgrade(w, key, "")
	if err != nil {
		return
	}
	b.mu.Lock()
	b.conns[conn] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.conns, conn)
		b.mu.Unlock()
		conn.Close()
	}()
	rd := websocket.NewReader(conn, websocket.ReaderOptions{FromClient: true, Buffered: buffered})
	wr := websocket.NewWriter(conn, false)
	mode := Mode(r.URL.Query().Get("mode"))
	if parts := strings.Split(r.URL.Path, "/"); mode == "" && len(parts) > 3 && parts[2] == "containers" {
		mode = Mode(parts[3])
	}
	if mode == Source {
		go stream(wr)
	}
	buf := make([]byte, websocket.MaxHeaderLen+64<<10)
	for {
		h, err := rd.NextFrame()
		if err != nil {
			return
		}
		switch h.Op {
		case websocket.OpClose:
			wr.WriteClose(websocket.CloseNormal, "")
			return
		case websocket.OpPing:
			var ctrl [125]byte
			p, _ := rd.ReadControl(ctrl[:])
			wr.WriteControl(websocket.OpPong, p)
			continue
		case websocket.OpPong:
			continue
		}
		for {
			n, err := rd.Read(buf[websocket.MaxHeaderLen:])
			if n > 0 && mode != Sink && mode != Source {
				if wr.WriteFrame(true, websocket.OpBinary, buf, websocket.MaxHeaderLen, websocket.MaxHeaderLen+n) != nil {
					return
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return
			}
		}
	}
}

// stream writes 64 KiB messages until the connection fails.
func stream(wr *websocket.Writer) {
	buf := make([]byte, websocket.MaxHeaderLen+64<<10)
	for i := websocket.MaxHeaderLen; i < len(buf); i++ {
		buf[i] = 'a' + byte(i%26)
	}
	for wr.WriteFrame(true, websocket.OpBinary, buf, websocket.MaxHeaderLen, len(buf)) == nil {
	}
}
