// Command zun-wsproxy is a WebSocket proxy that gives clients console
// access to their containers: a drop-in replacement for OpenStack Zun's
// zun-wsproxy that reads the same zun.conf, and a standalone console
// gateway for plain Docker hosts with its own tokens.
//
//	zun-wsproxy [--config-file F]... [--config-dir D]... [--data-dir D]
//	zun-wsproxy token create --container NAME [--exec CMD] [--ttl 5m] [--uses 1]
//	zun-wsproxy token list
//	zun-wsproxy token revoke ID
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
	"strings"
	"syscall"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/admin"
	"github.com/zun-wsproxy/zun-wsproxy/internal/audit"
	"github.com/zun-wsproxy/zun-wsproxy/internal/auth"
	"github.com/zun-wsproxy/zun-wsproxy/internal/config"
	"github.com/zun-wsproxy/zun-wsproxy/internal/docker"
	"github.com/zun-wsproxy/zun-wsproxy/internal/gcpace"
	"github.com/zun-wsproxy/zun-wsproxy/internal/metrics"
	"github.com/zun-wsproxy/zun-wsproxy/internal/proxy"
	"github.com/zun-wsproxy/zun-wsproxy/internal/redact"
	"github.com/zun-wsproxy/zun-wsproxy/internal/sdnotify"
	"github.com/zun-wsproxy/zun-wsproxy/internal/server"
	"github.com/zun-wsproxy/zun-wsproxy/internal/sidehttp"
	"github.com/zun-wsproxy/zun-wsproxy/internal/standalone"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store/tokendb"
	"github.com/zun-wsproxy/zun-wsproxy/internal/store/zunsql"
	"github.com/zun-wsproxy/zun-wsproxy/internal/workers"
	"github.com/zun-wsproxy/zun-wsproxy/web"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "token" {
		err = tokenCommand(os.Args[2:], os.Stdout)
	} else if len(os.Args) > 1 && os.Args[1] == "replay" {
		err = replayCommand(os.Args[2:], os.Stdout)
	} else {
		err = serve(os.Args[1:])
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "zun-wsproxy:", err)
		os.Exit(1)
	}
}

// multiFlag collects a repeatable flag, like oslo's --config-file.
type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// common are the flags of every command.
type common struct {
	files, dirs multiFlag
	dataDir     string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.Var(&c.files, "config-file", "path to a zun.conf; repeatable, later files win (default: oslo.config's search for zun.conf)")
	fs.Var(&c.dirs, "config-dir", "directory of *.conf files read after --config-file, in name order; repeatable")
	fs.StringVar(&c.dataDir, "data-dir", "./data", "where standalone mode keeps its embedded store")
}

func (c *common) load() (*config.Config, error) {
	files, dirs := c.files, c.dirs
	if len(files) == 0 && len(dirs) == 0 {
		files, dirs = config.DefaultFiles(), config.DefaultDirs()
	}
	return config.Load(files, dirs)
}

func newDialer(cfg *config.Config) (*docker.Dialer, error) {
	var dockerTLS *tls.Config
	d := cfg.Docker
	if d.CAFile != "" || d.CertFile != "" || d.KeyFile != "" || d.APIInsecure {
		var err error
		if dockerTLS, err = docker.TLSConfig(d.CAFile, d.CertFile, d.KeyFile, d.APIInsecure); err != nil {
			return nil, fmt.Errorf("[docker]: %w", err)
		}
	}
	return docker.NewDialer(docker.Options{
		APIVersion: d.APIVersion, TLS: dockerTLS, ExecTLS: d.TLS(), Timeout: cfg.Proxy.BackendTimeout,
	}), nil
}

// openTokens opens standalone mode's store: the shared database when
// [database] connection is set, else SQLite in the data directory. Its
// migration runs until ctx ends.
func openTokens(ctx context.Context, cfg *config.Config, dataDir string) (*tokendb.DB, error) {
	if cfg.Database.Connection != "" {
		db, err := tokendb.OpenMySQL(ctx, cfg.Database.DSN, cfg.Database.MaxOpen, cfg.Database.QueryTimeout)
		if err != nil {
			return nil, fmt.Errorf("[database] connection: %w", err)
		}
		return db, nil
	}
	db, err := tokendb.OpenSQLite(ctx, dataDir)
	if err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	return db, nil
}

func serve(args []string) error {
	// Signals first, so that none arriving while the proxy starts (a
	// logrotate SIGHUP during a slow migration) kills it. Never stopped: a
	// signal arriving while the process exits must not kill it with a
	// signal status either.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	starting := watchStartUp(signals)
	defer starting.finish()

	fs := flag.NewFlagSet("zun-wsproxy", flag.ContinueOnError)
	var c common
	c.register(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Println("zun-wsproxy", version)
		return nil
	}
	if os.Getenv("GOGC") == "" {
		// The relay allocates nothing per message, so the collector runs
		// only as sessions are set up: collecting at 25% growth instead of
		// 100% keeps the memory the process holds close to what its
		// sessions use, and the 4 MiB floor (Go's default) keeps a small
		// heap from being collected every few sessions. GOGC in the
		// environment wins.
		defer gcpace.Start(25, 4<<20).Stop()
	}
	cfg, err := c.load()
	if err != nil {
		return err
	}
	log, closeLog, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer closeLog()
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	// Under systemd (Type=notify): started once listening, reloading and
	// stopping as they happen.
	notifier, err := sdnotify.FromEnv()
	if err != nil {
		return err
	}
	notify := func(lines ...string) {
		if err := notifier.Notify(lines...); err != nil {
			log.Warn("systemd not told the service's state", "error", err)
		}
	}
	dialer, err := newDialer(cfg)
	if err != nil {
		return err
	}
	dialer.WatchedAttach(cfg.Proxy.Heartbeat > 0)

	// Sessions' set-up and end, and gathered lookups, run on goroutines
	// that keep their grown stacks; closed after everything else.
	pool := workers.New(0)
	defer pool.Close()

	var resolver server.Resolver
	var tokens *standalone.Service
	var storePing func(context.Context) error
	var lookups func() (asked, queries uint64)
	runtimeURL := cfg.Docker.Endpoint
	if cfg.Mode == "zun" {
		db, err := zunsql.Open(cfg.Database.DSN, zunsql.Options{
			MaxOpen: cfg.Database.MaxOpen, QueryTimeout: cfg.Database.QueryTimeout, Logger: log, Workers: pool,
		})
		if err != nil {
			return fmt.Errorf("[database] connection: %w", err)
		}
		defer db.Close()
		resolver = auth.NewAuthorizer(db, auth.Options{TokenTTL: cfg.Proxy.TokenTTL, SingleUse: cfg.Proxy.SingleUseTokens})
		storePing, runtimeURL, lookups = db.Ping, cfg.Docker.APIURL, db.BatchedLookups
	} else {
		db, err := openTokens(starting.ctx, cfg, c.dataDir)
		if err != nil {
			if _, sig := starting.finish(); sig != nil {
				return stoppedStarting(log, sig)
			}
			return err
		}
		defer db.Close()
		tokens = standalone.New(db, dialer, cfg.Docker.Endpoint)
		resolver = tokens
		storePing = db.Ping
	}

	base, err := url.Parse(cfg.Proxy.BaseURL)
	if err != nil {
		return fmt.Errorf("[websocket_proxy] base_url: %w", err)
	}
	var listenTLS *tls.Config
	var cert *server.Certificate
	if cfg.Proxy.Cert != "" {
		key := cfg.Proxy.Key
		if key == "" {
			key = cfg.Proxy.Cert // the certificate file may hold the key too
		}
		if cert, err = server.LoadCertificate(cfg.Proxy.Cert, key); err != nil {
			return fmt.Errorf("[websocket_proxy] cert: %w", err)
		}
		if cfg.Proxy.TicketKeyFile != "" {
			if err := cert.SetTicketKeyFile(cfg.Proxy.TicketKeyFile); err != nil {
				return fmt.Errorf("[websocket_proxy] ticket_key_file: %w", err)
			}
		}
		listenTLS = cert.TLSConfig()
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	if cert != nil {
		go cert.Watch(watchCtx, 10*time.Second, func(err error) { logReload(log, err, "files changed") })
	}

	live := reloadable(cfg, base.Scheme)
	var m *metrics.Metrics
	if cfg.MetricsListen != "" {
		m = metrics.New()
	}
	var auditLog *audit.Log
	if cfg.AuditFile != "" {
		if auditLog, err = audit.Open(cfg.AuditFile); err != nil {
			return fmt.Errorf("[audit] file: %w", err)
		}
		defer auditLog.Close()
	}
	m.CountAuditDrops(auditLog.Dropped)
	m.CountLoopSheds(proxy.SessionsShed)
	if lookups != nil {
		m.CountLookups(lookups)
	}
	// Shared by the server (X-Forwarded-For) and its listener (PROXY
	// headers); SIGHUP changes it for both.
	trusted := server.NewTrustedProxies(cfg.Proxy.TrustedProxies)
	srv := server.New(server.Options{
		Metrics:      m,
		Audit:        auditLog,
		RecordingDir: cfg.RecordingDir,
		RecordInput:  cfg.RecordInput,
		Resolver:     resolver,
		Dialer:       dialer,
		Resizer:      dialer,
		Origin:       live.Origin,
		Logger:       log,
		Path:         base.Path,
		Session:      live.Session,
		Console:      web.Handler(),
		Ready: func(ctx context.Context) error {
			// Generic reasons: the answer may reach beyond the operator.
			if err := storePing(ctx); err != nil {
				log.Debug("not ready", "error", err)
				return errors.New("the store does not answer")
			}
			if err := dialer.Ping(ctx, runtimeURL); err != nil {
				log.Debug("not ready", "error", err)
				return errors.New("the container runtime does not answer")
			}
			return nil
		},

		Engine:                  cfg.Proxy.Engine,
		ReadHeaderTimeout:       cfg.Proxy.HeaderTimeout,
		MaxHeaderBytes:          cfg.Proxy.MaxHeaderBytes,
		MaxSessions:             live.MaxSessions,
		MaxSessionsPerContainer: live.MaxSessionsPerContainer,
		AuthFailureLimit:        live.AuthFailureLimit,
		AuthFailureWindow:       live.AuthFailureWindow,
		RecordingMaxSize:        cfg.RecordingMaxSize,
		TrustedProxies:          trusted,
		Workers:                 pool,
	})
	addr := net.JoinHostPort(cfg.Proxy.Host, strconv.Itoa(cfg.Proxy.Port))
	ln, err := server.Listen(addr, server.ListenOptions{
		TLS: listenTLS, SSLOnly: cfg.Proxy.SSLOnly, FirstByteTimeout: cfg.Proxy.HeaderTimeout,
		ProxyProtocol: cfg.Proxy.ProxyProtocol, Trusted: trusted, Logger: log, Metrics: m, Workers: pool,
	})
	if err != nil {
		return fmt.Errorf("[websocket_proxy] listen on %s: %w", addr, err)
	}
	if _, port, _ := net.SplitHostPort(ln.Addr().String()); base.Port() == "0" {
		// wsproxy_port = 0 took a free port; the default base_url names it.
		base.Host = net.JoinHostPort(base.Hostname(), port)
		cfg.Proxy.BaseURL = base.String()
	}
	started := []any{"address", ln.Addr().String(), "mode", cfg.Mode, "tls", listenTLS != nil,
		"ssl_only", cfg.Proxy.SSLOnly, "proxy_protocol", cfg.Proxy.ProxyProtocol, "base_url", cfg.Proxy.BaseURL, "version", version}
	if cfg.Database.Connection != "" {
		started = append(started, "database_tls", cfg.Database.TLS.String())
	}
	log.Info("zun-wsproxy listening", started...)

	served := make(chan error, 3)
	go func() { served <- srv.Serve(ln) }()
	// The side listeners hold connections as briefly as the console's.
	side := sidehttp.Limits{HeaderTimeout: cfg.Proxy.HeaderTimeout, MaxHeaderBytes: cfg.Proxy.MaxHeaderBytes}
	var adminSrv *sidehttp.Server
	if cfg.Admin.Listen != "" {
		if tokens == nil {
			return errors.New("[admin] listen: the token API exists in standalone mode only")
		}
		key, err := os.ReadFile(cfg.Admin.KeyFile)
		if err != nil {
			return fmt.Errorf("[admin] key_file: %w", err)
		}
		if adminSrv, err = sidehttp.Listen(cfg.Admin.Listen, admin.New(tokens, key, cfg.Proxy.BaseURL, log), side, log); err != nil {
			return fmt.Errorf("[admin] listen on %s: %w", cfg.Admin.Listen, err)
		}
		log.Info("token API listening", "address", adminSrv.Addr().String())
		go func() { served <- adminSrv.Serve() }()
	}

	var metricsSrv *sidehttp.Server
	if m != nil {
		if metricsSrv, err = sidehttp.Listen(cfg.MetricsListen, m.Mux(cfg.Profiling), side, log); err != nil {
			return fmt.Errorf("[metrics] listen on %s: %w", cfg.MetricsListen, err)
		}
		log.Info("metrics listening", "address", metricsSrv.Addr().String())
		go func() { served <- metricsSrv.Serve() }()
	}

	// Origins, limits and session timeouts, from the same files; the
	// certificate; a rotated audit log, reopened at its path.
	reload := func() {
		notify(sdnotify.Reloading())
		if cert != nil {
			logReload(log, cert.Reload(), "SIGHUP")
		}
		if err := auditLog.Reopen(); err != nil {
			log.Error("audit log not reopened; writing on in the old file", "error", err)
		}
		if newCfg, err := c.load(); err != nil {
			log.Error("configuration not reloaded; the running one stays", "error", err)
		} else {
			srv.Reload(reloadable(newCfg, base.Scheme))
			dialer.WatchedAttach(newCfg.Proxy.Heartbeat > 0)
			log.Info("configuration reloaded", "allowed_origins", strings.Join(newCfg.Proxy.AllowedOrigins, ","),
				"trusted_proxies", fmt.Sprint(newCfg.Proxy.TrustedProxies))
			if newCfg.Proxy.ProxyProtocol != cfg.Proxy.ProxyProtocol {
				// It changes what the port expects, as ssl_only does.
				log.Warn("proxy_protocol changed: it takes effect on restart", "running", cfg.Proxy.ProxyProtocol)
			}
			if newCfg.Proxy.Engine != cfg.Proxy.Engine {
				// Running sessions are on the engine's loops or goroutines.
				log.Warn("engine changed: it takes effect on restart", "running", cfg.Proxy.Engine)
			}
		}
		notify(sdnotify.Ready)
	}
	// Every listener is bound (connections queue until accepted) and the
	// store is open (standalone: migrated). From here the loop below reads
	// the signals; a SIGHUP that came while starting is applied now.
	hup, sig := starting.finish()
	if sig != nil {
		return stoppedStarting(log, sig)
	}
	notify(sdnotify.Ready, sdnotify.Status("listening on "+ln.Addr().String()))
	if hup {
		reload()
	}
wait:
	for {
		select {
		case err := <-served:
			return err
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				reload()
				continue
			}
			log.Info("shutting down: no new sessions; running ones may go on for shutdown_timeout",
				"signal", sig.String(), "sessions", srv.Sessions(), "shutdown_timeout", cfg.Proxy.ShutdownTimeout.String())
			notify(sdnotify.Stopping, sdnotify.Status(fmt.Sprintf("stopping, sessions draining: %d", srv.Sessions())))
			break wait
		}
	}
	// Drain: sessions run on until they end or shutdown_timeout passes; a
	// second signal ends them at once.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Proxy.ShutdownTimeout)
	defer cancel()
	go func() {
		for {
			select {
			case sig := <-signals:
				if sig == syscall.SIGHUP {
					continue
				}
				log.Info("second signal: closing every session now", "signal", sig.String())
				cancel()
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	if adminSrv != nil {
		adminSrv.Shutdown(ctx)
	}
	if metricsSrv != nil {
		defer metricsSrv.Close() // scraped until the sessions are gone
	}
	srv.Shutdown(ctx)
	dialer.CloseIdle()
	log.Info("stopped")
	return nil
}

// reloadable is the part of the configuration SIGHUP can change.
func reloadable(cfg *config.Config, baseScheme string) server.Reloadable {
	p := cfg.Proxy
	return server.Reloadable{
		Origin: auth.OriginPolicy{BaseScheme: baseScheme, Allowed: p.AllowedOrigins},
		Session: proxy.Options{
			MaxMessage:   p.MaxMessageBytes,
			Heartbeat:    p.Heartbeat,
			IdleTimeout:  p.IdleTimeout,
			MaxDuration:  p.MaxSessionDuration,
			WriteTimeout: p.WriteTimeout,
			// A frame, once begun, gets the headers' time to progress.
			FrameTimeout: p.HeaderTimeout,
		},
		MaxSessions:             p.MaxSessions,
		MaxSessionsPerContainer: p.MaxSessionsPerContainer,
		AuthFailureLimit:        p.AuthFailureLimit,
		AuthFailureWindow:       p.AuthFailureWindow,
		TrustedProxies:          p.TrustedProxies,
	}
}

func logReload(log *slog.Logger, err error, why string) {
	if err != nil {
		log.Error("TLS certificate not reloaded; the previous one stays in use", "trigger", why, "error", err)
		return
	}
	log.Info("TLS certificate reloaded", "trigger", why)
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
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	// Masks token values in every line, whatever logged them.
	return slog.New(redact.Handler(h)), closeFn, nil
}
