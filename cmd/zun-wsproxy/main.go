// Command zun-wsproxy is a WebSocket proxy that gives clients console
// access to their containers: a drop-in replacement for OpenStack Zun's
// zun-wsproxy that reads the same zun.conf.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/auth"
	"github.com/zun-wsproxy/zun-wsproxy/internal/config"
	"github.com/zun-wsproxy/zun-wsproxy/internal/docker"
	"github.com/zun-wsproxy/zun-wsproxy/internal/proxy"
	"github.com/zun-wsproxy/zun-wsproxy/internal/server"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store/zunsql"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// multiFlag collects a repeatable flag, like oslo's --config-file.
type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "zun-wsproxy:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("zun-wsproxy", flag.ContinueOnError)
	var files, dirs multiFlag
	fs.Var(&files, "config-file", "path to a zun.conf; repeatable, later files win (default: oslo.config's search for zun.conf)")
	fs.Var(&dirs, "config-dir", "directory of *.conf files read after --config-file, in name order; repeatable")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *showVersion {
		fmt.Println("zun-wsproxy", version)
		return nil
	}
	if len(files) == 0 && len(dirs) == 0 {
		files, dirs = config.DefaultFiles(), config.DefaultDirs()
	}
	cfg, err := config.Load(files, dirs)
	if err != nil {
		return err
	}
	log, closeLog, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer closeLog()

	if cfg.Database.Connection == "" {
		return errors.New("[database] connection: not set; zun-wsproxy reads consoles from Zun's database")
	}
	db, err := zunsql.Open(cfg.Database.DSN, zunsql.Options{
		MaxOpen: cfg.Database.MaxOpen, MaxIdle: cfg.Database.MaxIdle, QueryTimeout: cfg.Database.QueryTimeout,
	})
	if err != nil {
		return fmt.Errorf("[database] connection: %w", err)
	}
	defer db.Close()

	var dockerTLS *tls.Config
	d := cfg.Docker
	if d.CAFile != "" || d.CertFile != "" || d.KeyFile != "" || d.APIInsecure {
		if dockerTLS, err = docker.TLSConfig(d.CAFile, d.CertFile, d.KeyFile, d.APIInsecure); err != nil {
			return fmt.Errorf("[docker]: %w", err)
		}
	}
	dialer := docker.NewDialer(docker.Options{
		APIVersion: d.APIVersion, TLS: dockerTLS, ExecTLS: d.TLS(), Timeout: cfg.Proxy.BackendTimeout,
	})

	base, err := url.Parse(cfg.Proxy.BaseURL)
	if err != nil {
		return fmt.Errorf("[websocket_proxy] base_url: %w", err)
	}
	var listenTLS *tls.Config
	if cfg.Proxy.Cert != "" {
		key := cfg.Proxy.Key
		if key == "" {
			key = cfg.Proxy.Cert // the certificate file may hold the key too
		}
		cert, err := tls.LoadX509KeyPair(cfg.Proxy.Cert, key)
		if err != nil {
			return fmt.Errorf("[websocket_proxy] cert: %w", err)
		}
		listenTLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}

	srv := server.New(server.Options{
		Resolver: auth.NewAuthorizer(db),
		Dialer:   dialer,
		Origin:   auth.OriginPolicy{BaseScheme: base.Scheme, Allowed: cfg.Proxy.AllowedOrigins},
		Logger:   log,
		Path:     base.Path,
		Session:  proxy.Options{},
	})
	addr := net.JoinHostPort(cfg.Proxy.Host, strconv.Itoa(cfg.Proxy.Port))
	ln, err := server.Listen(addr, listenTLS, cfg.Proxy.SSLOnly)
	if err != nil {
		return fmt.Errorf("[websocket_proxy] listen on %s: %w", addr, err)
	}
	log.Info("zun-wsproxy listening", "address", ln.Addr().String(), "tls", listenTLS != nil,
		"ssl_only", cfg.Proxy.SSLOnly, "base_url", cfg.Proxy.BaseURL, "version", version)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case sig := <-signals:
		log.Info("shutting down", "signal", sig.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	<-served
	log.Info("stopped")
	return nil
}

// newLogger logs to [DEFAULT] log_file, or stderr, at debug level when
// [DEFAULT] debug is set.
func newLogger(cfg *config.Config) (*slog.Logger, func(), error) {
	var w io.Writer = os.Stderr
	closeFn := func() {}
	if cfg.LogFile != "" {
		f, err := os.OpenFile(cfg.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("[DEFAULT] log_file: %w", err)
		}
		w, closeFn = f, func() { f.Close() }
	}
	level := slog.LevelInfo
	if cfg.Debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), closeFn, nil
}
