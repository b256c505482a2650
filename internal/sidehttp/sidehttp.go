// Package sidehttp serves the proxy's side listeners, the token API and
// the metrics (with Go's profiles), with the console listener's bounds on
// what a connection may hold: header_timeout to send a request's headers
// and body, and as long to sit idle between requests; max_header_size of
// headers. Without them a connection that sends nothing more after half a
// header, a body, or one request stays open for ever, and each is a file
// descriptor that the console's sessions need.
package sidehttp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Limits bound each connection of a side listener.
type Limits struct {
	// HeaderTimeout bounds reading a request's headers, then its body,
	// and the wait for the next request on a kept-alive connection
	// (default 10s). No write timeout: a CPU profile takes as long as it
	// is asked to, and every answer here is small.
	HeaderTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (default 16 KiB).
	MaxHeaderBytes int
}

// Server is one side listener serving one handler.
type Server struct {
	ln   net.Listener
	http *http.Server
}

// Listen binds addr (host:port) for h.
func Listen(addr string, h http.Handler, l Limits, log *slog.Logger) (*Server, error) {
	if l.HeaderTimeout <= 0 {
		l.HeaderTimeout = 10 * time.Second
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 16 << 10
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Server{ln: ln, http: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.HeaderTimeout,
		ReadTimeout:       l.HeaderTimeout, // headers and body
		IdleTimeout:       l.HeaderTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}}, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Shutdown or Close, then returns nil.
func (s *Server) Serve() error {
	if err := s.http.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting and waits for the requests in progress, until
// ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// Close stops at once.
func (s *Server) Close() error { return s.http.Close() }
