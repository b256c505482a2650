package redact

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	cases := map[string]string{
		"GET /?token=s3cr3t&uuid=web HTTP/1.1":        "GET /?token=REDACTED&uuid=web HTTP/1.1",
		"ws://h:1/?uuid=x&token=abc-def":              "ws://h:1/?uuid=x&token=REDACTED",
		`{"token":"abc","id":"1"}`:                    `{"token":"REDACTED","id":"1"}`,
		"Authorization: Bearer k3y-k3y":               "Authorization: Bearer REDACTED",
		"websocket_token=abc":                         "websocket_token=REDACTED",
		"container web exited":                        "container web exited",
		"token_id=5ed0d0a9fd77f101 kind=attach":       "token_id=5ed0d0a9fd77f101 kind=attach",
		"dial tcp 127.0.0.1:2375: connection refused": "dial tcp 127.0.0.1:2375: connection refused",
	}
	for in, want := range cases {
		if got := String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(Handler(slog.NewTextHandler(&buf, nil)))
	log.With("url", "ws://x/?token=aaa").Info("GET /?token=bbb", "err", errors.New("bad ?token=ccc"), slog.Group("g", "q", "token=ddd"))
	out := buf.String()
	for _, secret := range []string{"aaa", "bbb", "ccc", "ddd"} {
		if strings.Contains(out, secret) {
			t.Errorf("log line shows %s: %s", secret, out)
		}
	}
}

// Lines with nothing to mask are passed on as they are; one string among
// many that holds a token still makes the line masked.
func TestHandlerCleanLines(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(Handler(slog.NewTextHandler(&buf, nil)))
	log.Info("session ended", "session", "a1", "bytes", 12, "kind", "attach", "client", "192.0.2.1", "close_code", 1000, "duration", "5ms", "reason", "")
	log.Info("session ended", "session", "a2", "bytes", 12, "kind", "attach", "client", "192.0.2.1", "close_code", 1000, "duration", "5ms", "reason", "url ws://x/?token=eee")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `session=a1 bytes=12 kind=attach client=192.0.2.1 close_code=1000 duration=5ms reason=""`) {
		t.Fatalf("clean line changed: %q", lines)
	}
	if strings.Contains(lines[1], "eee") || !strings.Contains(lines[1], "token=REDACTED") {
		t.Errorf("the seventh attribute's token is not masked: %s", lines[1])
	}
}
