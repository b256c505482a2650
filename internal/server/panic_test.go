package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/auth"
	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// A panic while serving a request is logged without the request (its
// query holds a token), and it ends only that request: a session running
// beside it goes on, and new sessions open. No input the proxy reads is
// known to panic, so the store's lookup panics for one token (a runtime
// error, as a bug would raise).
func TestPanicLoggedWithoutRequest(t *testing.T) {
	z := testenv.NewZunDB(t, "panic")
	d := testenv.NewDocker(t)
	logs := &testenv.LogBuffer{}
	panicToken := "panic-" + testenv.NewUUID()
	_, addr := newServer(t, z, func(o *Options, _ *ListenOptions) {
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
		lookup := o.Resolver
		o.Resolver = resolverFunc(func(ctx context.Context, r auth.Request) (console.Target, error) {
			if r.Token == panicToken {
				var none []console.Target
				return none[len(r.Token)], nil
			}
			return lookup.Resolve(ctx, r)
		})
	})
	c := z.InsertContainer(t, testenv.Container{DockerID: d.Run("sh"), Token: testenv.NewUUID()})
	url := func(token string) string { return fmt.Sprintf("ws://%s/?token=%s&uuid=%s", addr, token, c.UUID) }
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open := func() *websocket.Conn {
		t.Helper()
		conn, _, err := websocket.Dial(ctx, url(c.Token), &websocket.DialOptions{Subprotocols: []string{"binary"}})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		return conn
	}
	running := open()
	defer running.CloseNow()
	testenv.Echo(t, running, "before")

	status := testenv.Refused(ctx, url(panicToken), &websocket.DialOptions{Subprotocols: []string{"binary"}})
	if status != http.StatusInternalServerError {
		t.Errorf("the request that panicked got %d, want 500", status)
	}
	line := logs.WaitLine(t, `panic serving a request`, testenv.Settle)
	if !strings.Contains(line, "index out of range") || !strings.Contains(line, "goroutine ") {
		t.Errorf("the panic's line names neither the panic nor its stack: %s", line)
	}
	// Neither the token nor the query nor the container it asked for.
	for _, secret := range []string{panicToken, "token=", c.UUID} {
		if strings.Contains(line, secret) {
			t.Errorf("the panic's line holds %q: %s", secret, line)
		}
	}
	if strings.Contains(logs.String(), panicToken) {
		t.Errorf("the log holds the token:\n%s", logs)
	}

	testenv.Echo(t, running, "after")
	next := open()
	testenv.Echo(t, next, "next")
	next.Close(websocket.StatusNormalClosure, "")
	running.Close(websocket.StatusNormalClosure, "")
}
