package e2e

import (
	"strconv"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// Past max_sessions_per_container for one container, or max_sessions in
// all, a console is refused with 503 and a Retry-After; a session that
// ends gives its place back.
func TestTooManySessions(t *testing.T) {
	t.Parallel()
	s := newDeployment(t)
	s.proxy = startProxy(t, baseConf(s.db), "[websocket_proxy]\nmax_sessions = 2\nmax_sessions_per_container = 1\n")
	a, b, c := s.attachable(t, "sh"), s.attachable(t, "sh"), s.attachable(t, "sh")
	refused := func(why string, ct testenv.Container) {
		t.Helper()
		status, body, header := handshake(t, s.proxy.addr(), "/?token="+ct.Token+"&uuid="+ct.UUID, nil)
		retry, err := strconv.Atoi(header.Get("Retry-After"))
		if status != 503 || !strings.Contains(body, "too many console sessions") || err != nil || retry < 1 {
			t.Fatalf("%s: %d %q with Retry-After %q, want 503 too many console sessions with a Retry-After in seconds",
				why, status, body, header.Get("Retry-After"))
		}
	}
	first := attach(t, s.proxy, a)
	refused("a second session of one container", a)
	second := attach(t, s.proxy, b)
	refused("a third session in all", c)
	s.proxy.logs.WaitLines(t, `request refused.*status=503.*error="too many sessions"`, 2, settle)
	testenv.Echo(t, first, "first")
	testenv.Echo(t, second, "second")

	first.Close(websocket.StatusNormalClosure, "")
	s.proxy.sessionEnded(t, "container="+a.UUID)
	// The place is given back as the session ends, a moment after its
	// log line.
	var third *websocket.Conn
	var status int
	if !testenv.WaitFor(settle, func() bool {
		third, status, _ = testenv.Open(ctxTimeout(t, settle), s.proxy.url(c.Token, c.UUID, ""), dialOptions(nil))
		return third != nil
	}) {
		t.Fatalf("after a session ended: %d, want a session", status)
	}
	testenv.Echo(t, third, "third")
	third.Close(websocket.StatusNormalClosure, "")
	second.Close(websocket.StatusNormalClosure, "")
	s.proxy.waitNoSessions(t)
}
