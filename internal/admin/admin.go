// Package admin serves the token API of standalone mode on its own
// listener: POST /v1/tokens mints, GET /v1/tokens lists, DELETE
// /v1/tokens/{id} revokes. Every request needs the API key as a bearer
// token; bodies are JSON both ways.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
	"github.com/zun-wsproxy/zun-wsproxy/internal/standalone"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store/tokendb"
)

// Tokens mints, lists and revokes tokens.
type Tokens interface {
	Mint(ctx context.Context, r standalone.MintRequest) (standalone.Minted, error)
	List(ctx context.Context) ([]tokendb.Token, error)
	Revoke(ctx context.Context, id string) error
}

// Server is the token API, an http.Handler (served by package sidehttp).
type Server struct {
	tokens  Tokens
	key     []byte
	baseURL string
	log     *slog.Logger
	handler http.Handler
}

// New returns the API; key is the contents of [admin] key_file.
func New(tokens Tokens, key []byte, baseURL string, log *slog.Logger) *Server {
	s := &Server{tokens: tokens, key: []byte(strings.TrimSpace(string(key))), baseURL: baseURL, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/tokens", s.create)
	mux.HandleFunc("GET /v1/tokens", s.list)
	mux.HandleFunc("DELETE /v1/tokens/{id}", s.revoke)
	s.handler = s.authenticate(mux)
	return s
}

// ServeHTTP serves one API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(given), s.key) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="zun-wsproxy"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong API key")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// createRequest is POST /v1/tokens's body.
type createRequest struct {
	Container string   `json:"container"`
	Exec      []string `json:"exec,omitempty"` // command, argv form
	TTL       string   `json:"ttl,omitempty"`  // Go duration, e.g. "5m"
	Uses      int      `json:"uses,omitempty"` // default 1
}

// tokenJSON is a token as the API shows it.
type tokenJSON struct {
	ID        string    `json:"id"`
	Container string    `json:"container"`
	Name      string    `json:"name"`
	ExecID    string    `json:"exec_id,omitempty"`
	Command   string    `json:"command,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	UsesLeft  int       `json:"uses_left"`
	Revoked   bool      `json:"revoked"`
	// Set at creation only: the secret exists nowhere else.
	Token        string `json:"token,omitempty"`
	WebsocketURL string `json:"websocket_url,omitempty"`
	ConsoleURL   string `json:"console_url,omitempty"`
}

func toJSON(t tokendb.Token) tokenJSON {
	return tokenJSON{ID: t.ID, Container: t.Container, Name: t.Name, ExecID: t.ExecID, Command: t.Command,
		CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, UsesLeft: t.UsesLeft, Revoked: t.Revoked}
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "body must be a JSON object {container, exec, ttl, uses}: "+err.Error())
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("ttl %q is not a duration like 5m or 90s", req.TTL))
			return
		}
	}
	m, err := s.tokens.Mint(r.Context(), standalone.MintRequest{Container: req.Container, Exec: req.Exec, TTL: ttl, Uses: req.Uses})
	if err != nil {
		status, msg := answer(err)
		s.log.Info("token not created", "status", status, "error", err.Error())
		writeError(w, status, msg)
		return
	}
	out := toJSON(m.Token)
	out.Token = m.Secret
	out.WebsocketURL, out.ConsoleURL = standalone.URLs(s.baseURL, m.Secret, m.Token.Name)
	s.log.Info("token created", "token_id", m.Token.ID, "container", m.Token.Name, "exec_id", m.Token.ExecID,
		"expires_at", m.Token.ExpiresAt, "uses", m.Token.UsesLeft, "client", r.RemoteAddr)
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	ts, err := s.tokens.List(r.Context())
	if err != nil {
		status, msg := answer(err)
		writeError(w, status, msg)
		return
	}
	out := make([]tokenJSON, 0, len(ts))
	for _, t := range ts {
		out = append(out, toJSON(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.tokens.Revoke(r.Context(), id); err != nil {
		status, msg := answer(err)
		writeError(w, status, msg)
		return
	}
	s.log.Info("token revoked", "token_id", id, "client", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}

// answer maps errors to statuses and messages without internals.
func answer(err error) (int, string) {
	switch {
	case errors.Is(err, standalone.ErrInvalid):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, standalone.ErrNoContainer):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, "no such token"
	case errors.Is(err, console.ErrNotRunning):
		return http.StatusConflict, err.Error()
	case errors.Is(err, store.ErrUnavailable):
		return http.StatusServiceUnavailable, "token store unavailable"
	}
	return http.StatusBadGateway, "container runtime error"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
