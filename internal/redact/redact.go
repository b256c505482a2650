// Package redact keeps secrets out of logs: a slog.Handler that masks
// token values in every message and attribute before they are written,
// whatever code produced them.
package redact

import (
	"context"
	"log/slog"
	"regexp"
)

// tokenPattern finds token values in query strings, URLs, headers and
// key=value text: token=…, ?token=…, "token":"…", Authorization: Bearer ….
var tokenPattern = regexp.MustCompile(`(?i)((?:^|[?&;\s"'])(?:token|websocket_token)=)[^&\s"';]+|("(?:token|websocket_token)"\s*:\s*")[^"]*|(Bearer\s+)\S+`)

// String masks token values in s.
func String(s string) string {
	if !containsFold(s) {
		return s
	}
	return tokenPattern.ReplaceAllStringFunc(s, func(m string) string {
		sub := tokenPattern.FindStringSubmatch(m)
		for _, prefix := range sub[1:] {
			if prefix != "" {
				return prefix + "REDACTED"
			}
		}
		return "REDACTED"
	})
}

// containsFold is a cheap pre-check so that ordinary lines skip the regexp.
func containsFold(s string) bool {
	for i := 0; i+5 <= len(s); i++ {
		if (s[i]|0x20) == 't' && (s[i+1]|0x20) == 'o' && (s[i+2]|0x20) == 'k' && (s[i+3]|0x20) == 'e' && (s[i+4]|0x20) == 'n' {
			return true
		}
		if (s[i]|0x20) == 'b' && (s[i+1]|0x20) == 'e' && (s[i+2]|0x20) == 'a' && (s[i+3]|0x20) == 'r' && (s[i+4]|0x20) == 'e' {
			return true
		}
	}
	return false
}

// Handler wraps h so that messages and string attributes are masked.
func Handler(h slog.Handler) slog.Handler { return handler{h} }

type handler struct{ next slog.Handler }

func (h handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	if clean(r) {
		return h.next.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, String(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h handler) WithAttrs(as []slog.Attr) slog.Handler {
	masked := make([]slog.Attr, len(as))
	for i, a := range as {
		masked[i] = attr(a)
	}
	return handler{h.next.WithAttrs(masked)}
}

func (h handler) WithGroup(name string) slog.Handler { return handler{h.next.WithGroup(name)} }

func attr(a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		return slog.String(a.Key, String(a.Value.String()))
	case slog.KindGroup:
		g := a.Value.Group()
		masked := make([]any, len(g))
		for i, x := range g {
			masked[i] = attr(x)
		}
		return slog.Group(a.Key, masked...)
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			return slog.String(a.Key, String(err.Error()))
		}
	}
	return a
}

// clean reports whether r has nothing to mask: no text that may hold a
// token, no error and no group (which attr rewrites). Most lines are, and
// go on as they are, without a copy.
func clean(r slog.Record) bool {
	if containsFold(r.Message) {
		return false
	}
	ok := true
	r.Attrs(func(a slog.Attr) bool {
		switch a.Value.Kind() {
		case slog.KindString:
			ok = !containsFold(a.Value.String())
		case slog.KindGroup, slog.KindAny, slog.KindLogValuer:
			ok = false
		}
		return ok
	})
	return ok
}
