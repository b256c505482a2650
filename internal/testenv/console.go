package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// What a console client does, with github.com/coder/websocket as the
// client.

// Output reads messages until their bytes, concatenated, contain want,
// and returns them. each, when not nil, checks each message and gives its
// bytes (a base64 client decodes them, say). Safe off the test's
// goroutine: it fails nothing itself.
func Output(ctx context.Context, c *websocket.Conn, want string, each func(websocket.MessageType, []byte) ([]byte, error)) (string, error) {
	var got strings.Builder
	for !strings.Contains(got.String(), want) {
		typ, data, err := c.Read(ctx)
		if err == nil && each != nil {
			data, err = each(typ, data)
		}
		if err != nil {
			return got.String(), fmt.Errorf("waiting for %q: %w; got so far %q", want, err, got.String())
		}
		got.Write(data)
	}
	return got.String(), nil
}

// ReadUntil is Output without a check, failing the test on an error.
func ReadUntil(ctx context.Context, tb testing.TB, c *websocket.Conn, want string) string {
	tb.Helper()
	got, err := Output(ctx, c, want, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return got
}

// Echo has the console's shell compute word-42 (so the terminal's echo of
// the typed line does not count) and waits for it.
func Echo(tb testing.TB, c *websocket.Conn, word string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageBinary, []byte("echo "+word+"-$((6*7))\n")); err != nil {
		tb.Fatalf("typing for %s: %v", word, err)
	}
	ReadUntil(ctx, tb, c, word+"-42")
}

// ReadToClose reads until the session ends and returns the close frame
// it ended with and the output before it; it fails the test if the
// connection ends without a close frame.
func ReadToClose(ctx context.Context, tb testing.TB, c *websocket.Conn) (websocket.CloseError, string) {
	tb.Helper()
	var got strings.Builder
	for {
		_, data, err := c.Read(ctx)
		if err == nil {
			got.Write(data)
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			tb.Fatalf("session ended without a close frame: %v (after %d bytes)", err, got.Len())
		}
		return ce, got.String()
	}
}

// Open dials a console and returns the connection (nil unless it opened)
// and the answer's status: 101 for an open console, the refusal's status,
// or 0 when no HTTP answer came (err says why).
func Open(ctx context.Context, url string, opts *websocket.DialOptions) (*websocket.Conn, int, error) {
	c, resp, err := websocket.Dial(ctx, url, opts)
	switch {
	case err == nil:
		c.SetReadLimit(4 << 20)
		return c, http.StatusSwitchingProtocols, nil
	case resp != nil:
		return nil, resp.StatusCode, err
	}
	return nil, 0, err
}

// Refused dials a console that must be refused and returns the status
// of the refusal; a console that opens is closed, and reported as 101.
func Refused(ctx context.Context, url string, opts *websocket.DialOptions) int {
	c, status, _ := Open(ctx, url, opts)
	if c != nil {
		c.CloseNow()
	}
	return status
}
