// Command wsbench measures a console proxy against its own ceiling:
//
//	wsbench backend -listen 127.0.0.1:7000
//	wsbench run -direct ws://127.0.0.1:7000/x -through 'ws://127.0.0.1:6784/?token=T&uuid=U' -pid PID
//	wsbench cert -key-type ecdsa -cert cert.pem -key key.pem
//
// The backend speaks Docker's attach WebSocket protocol (echo, sink or
// source, chosen per session), over TLS with -cert and -key. cert makes a
// self-signed certificate for loopback names, for wss:// rounds (run -ca). run measures each figure directly against
// the backend and through the proxy, alternating rounds so that noise on a
// shared machine falls on both, and prints both, their ratio and, with
// -json, one JSON line per result.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/bench"
)

func main() {
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "backend":
		err = backend(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "run":
		err = run(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "cert":
		err = makeCert(os.Args[2:])
	default:
		err = errors.New("usage: wsbench backend|run|cert [flags] (wsbench run -h)")
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "wsbench:", err)
		os.Exit(1)
	}
}

func backend(args []string) error {
	fs := flag.NewFlagSet("wsbench backend", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:7000", "addresses to serve on, comma-separated (loopback)")
	certFile := fs.String("cert", "", "serve TLS (wss://) with this certificate (PEM)")
	keyFile := fs.String("key", "", "the certificate's key (PEM; default: in -cert)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var tlsConfig *tls.Config
	if *certFile != "" {
		if *keyFile == "" {
			*keyFile = *certFile
		}
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return err
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var lns []net.Listener
	for _, a := range strings.Split(*listen, ",") {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return err
		}
		fmt.Println("wsbench backend on", ln.Addr())
		if tlsConfig != nil {
			ln = tls.NewListener(ln, tlsConfig)
		}
		lns = append(lns, ln)
	}
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errs <- bench.Serve(ctx, ln) }()
	}
	var first error
	for range lns {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func makeCert(args []string) error {
	fs := flag.NewFlagSet("wsbench cert", flag.ContinueOnError)
	keyType := fs.String("key-type", "ecdsa", "the key: ecdsa (P-256), rsa (2048 bits) or ed25519")
	certOut := fs.String("cert", "cert.pem", "where the certificate goes (PEM)")
	keyOut := fs.String("key", "key.pem", "where its key goes (PEM, mode 0600)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	certPEM, keyPEM, err := bench.MakeCertificate(*keyType)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*keyOut, keyPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(*certOut, certPEM, 0o644)
}

// row is one figure, direct and through (and through the reference proxy).
type row struct {
	Name    string  `json:"name"`
	Unit    string  `json:"unit"`
	Direct  float64 `json:"direct"`
	Through float64 `json:"through"`
	Ratio   float64 `json:"ratio"` // through / direct
	Added   float64 `json:"added,omitempty"`
	Ref     float64 `json:"ref,omitempty"`      // through the reference proxy
	RefName string  `json:"ref_name,omitempty"` // e.g. nginx
	// VsRef is through / ref for rates, ref / through for times: above 1,
	// the proxy does better than the reference.
	VsRef  float64 `json:"vs_ref,omitempty"`
	Errors int64   `json:"errors"`
	Note   string  `json:"note,omitempty"`
}

func run(args []string) error {
	fs := flag.NewFlagSet("wsbench run", flag.ContinueOnError)
	direct := fs.String("direct", "", "WebSocket URL of the backend itself (the ceiling)")
	through := fs.String("through", "", "WebSocket URL of the same backend through the proxy")
	ref := fs.String("ref", "", "WebSocket URL of the same backend through a reference proxy (e.g. nginx), measured in the same rounds")
	refName := fs.String("ref-name", "reference", "name of the reference proxy")
	tokensFile := fs.String("through-urls", "", "file of proxy URLs, one per line, for handshakes (single-use tokens)")
	pid := fs.Int("pid", 0, "the proxy's process id, for memory per idle session")
	refPIDs := fs.String("ref-pids", "", "process ids of the reference proxy, comma-separated (nginx: its workers), for its memory per idle session")
	rounds := fs.Int("rounds", 3, "alternating rounds per figure (the median is kept)")
	samples := fs.Int("samples", 5000, "round trips for the 1-session latency row; each of 100 sessions makes a twentieth of it (the tail needs rounds long enough that one stall is not the p99)")
	dur := fs.Duration("duration", 3*time.Second, "length of each throughput and handshake round")
	idle := fs.Int("idle", 2000, "idle sessions for the memory figure (0: skip)")
	asJSON := fs.Bool("json", false, "print one JSON line per result")
	only := fs.String("only", "latency,throughput,handshakes,idle", "figures to measure, comma-separated (latency is latency1 and latency100, throughput is output and echo, each of which may be named alone)")
	idleURLs := fs.String("idle-urls", "", "proxy URLs for idle sessions, comma-separated, used in turn (default: -through)")
	sources := fs.String("source-ips", "", "client source addresses for idle sessions, comma-separated, used in turn (more ephemeral ports)")
	settle := fs.Duration("idle-settle", 6*time.Second, "wait after opening idle sessions before reading the RSS")
	caFile := fs.String("ca", "", "PEM certificates to trust for wss:// URLs (e.g. from wsbench cert)")
	uuidList := fs.String("uuids", "", "container uuid of each backend mode, for {uuid} in proxy URLs: mode=uuid, comma-separated (e.g. echo=…,sink=…,source=…)")
	tlsHandshakes := fs.String("tls-handshakes", "full,resumed", "with -ca, the kinds of TLS handshake the sessions-opened figure is measured for: full (no session cache), resumed (session tickets kept, as browsers do); with -x25519 (full-x25519), the client offers X25519 only instead of Go's default key exchanges (X25519MLKEM768 first)")
	verbose := fs.Bool("v", false, "print every round's figures of every target to standard error, before the medians")
	strict := fs.Bool("strict", false, "fail (exit status 1, after printing) when a row counted errors or resumed handshakes did not resume")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var failures []string
	// TLS client configurations by kind of handshake; "" is plain.
	handshakeKinds := []string{""}
	tlsConfigs := map[string]*tls.Config{}
	if *uuidList != "" {
		m := map[bench.Mode]string{}
		for _, kv := range strings.Split(*uuidList, ",") {
			mode, id, ok := strings.Cut(kv, "=")
			mode, id = strings.TrimSpace(mode), strings.TrimSpace(id)
			switch md := bench.Mode(mode); {
			case !ok || id == "":
				return fmt.Errorf("-uuids: %q is not mode=uuid", kv)
			case md != bench.Echo && md != bench.Sink && md != bench.Source:
				return fmt.Errorf("-uuids: %q: the modes are %s, %s and %s", kv, bench.Echo, bench.Sink, bench.Source)
			}
			m[bench.Mode(mode)] = id
		}
		bench.UseUUIDs(m)
	}
	if *caFile != "" {
		caPEM, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		handshakeKinds = nil
		for _, k := range strings.Split(*tlsHandshakes, ",") {
			k = strings.TrimSpace(k)
			base, curve, _ := strings.Cut(k, "-")
			var curves []tls.CurveID
			switch curve {
			case "":
			case "x25519":
				curves = []tls.CurveID{tls.X25519}
			default:
				return fmt.Errorf("-tls-handshakes: %q: the only key exchange to name is x25519", k)
			}
			if base != "full" && base != "resumed" {
				return fmt.Errorf("-tls-handshakes: %q is neither full nor resumed", k)
			}
			if tlsConfigs[k], err = bench.ClientTLS(caPEM, base == "resumed", curves); err != nil {
				return fmt.Errorf("-ca %s: %w", *caFile, err)
			}
			handshakeKinds = append(handshakeKinds, k)
		}
		// Sessions that relay are opened as a browser would: resumed
		// when it can be.
		relay, err := bench.ClientTLS(caPEM, true, nil)
		if err != nil {
			return fmt.Errorf("-ca %s: %w", *caFile, err)
		}
		bench.UseTLS(relay)
	}
	if *direct == "" || *through == "" {
		return errors.New("-direct and -through are required")
	}
	throughURLs := []string{*through}
	if *tokensFile != "" {
		f, err := os.Open(*tokensFile)
		if err != nil {
			return err
		}
		throughURLs = nil
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" {
				throughURLs = append(throughURLs, l)
			}
		}
		f.Close()
	}
	ctx := context.Background()
	var rows []row
	// targets are measured in turn in every round: noise falls on all.
	type target struct {
		url  string
		urls []string // for handshakes
		pids []int    // the proxy's processes, for the CPU they use
	}
	refPIDList, err := parsePIDs(*refPIDs)
	if err != nil {
		return fmt.Errorf("-ref-pids: %w", err)
	}
	var throughPIDs []int
	if *pid > 0 {
		throughPIDs = []int{*pid}
	}
	targets := []target{{*direct, []string{*direct}, nil}, {*through, throughURLs, throughPIDs}}
	if *ref != "" {
		targets = append(targets, target{*ref, []string{*ref}, refPIDList})
	}
	// cpu runs f and returns the CPU time t's processes used meanwhile.
	cpu := func(t target, f func()) time.Duration {
		before := bench.CPUTime(t.pids)
		f()
		return bench.CPUTime(t.pids) - before
	}
	// alternate runs f on every target, rounds times, and keeps medians
	// (direct, through, ref). Each round starts one target later than
	// the round before, so that over a multiple of len(targets) rounds
	// each takes each place in the order: in a fixed order the last read
	// less CPU per round trip at one session, the same build 0.81-0.92x
	// of itself (docs/PERFORMANCE.md).
	alternate := func(f func(t target) []float64) (med [][]float64) {
		vals := make([][][]float64, len(targets))
		for i := 0; i < *rounds; i++ {
			for n := range targets {
				k := (i + n) % len(targets)
				t := targets[k]
				got := f(t)
				if *verbose {
					fmt.Fprintf(os.Stderr, "round %d %s: %v\n", i+1, t.url, got)
				}
				for j, v := range got {
					for len(vals[k]) <= j {
						vals[k] = append(vals[k], nil)
					}
					vals[k][j] = append(vals[k][j], v)
				}
			}
		}
		med = make([][]float64, len(targets))
		for k := range vals {
			for _, v := range vals[k] {
				med[k] = append(med[k], median(v))
			}
		}
		return med
	}
	// figure makes a row from medians; lowerIsBetter for times.
	figure := func(name, unit string, med [][]float64, j int, errs int64, lowerIsBetter bool) row {
		r := row{Name: name, Unit: unit, Direct: med[0][j], Through: med[1][j], Errors: errs}
		r.Ratio = r.Through / r.Direct
		if lowerIsBetter {
			r.Added = r.Through - r.Direct
		}
		if len(med) > 2 {
			r.Ref, r.RefName = med[2][j], *refName
			r.VsRef = r.Through / r.Ref
			if lowerIsBetter {
				r.VsRef = r.Ref / r.Through
			}
		}
		return r
	}
	want := map[string]bool{}
	for _, f := range strings.Split(*only, ",") {
		want[strings.TrimSpace(f)] = true
	}
	for _, n := range []int{1, 100} {
		if !want["latency"] && !want[fmt.Sprintf("latency%d", n)] {
			continue
		}
		var errs int64
		med := alternate(func(t target) []float64 {
			l := bench.MeasureLatency(ctx, t.url, n, max(*samples/n, *samples/20, 20), t.pids)
			errs += l.Errors
			return []float64{us(l.P50), us(l.P99), us(l.P999), us(l.CPU) / float64(max(l.RoundTrips, 1))}
		})
		for j, p := range []string{"p50", "p99", "p99.9"} {
			rows = append(rows, figure(fmt.Sprintf("keystroke RTT %s, %d session(s)", p, n), "µs", med, j, errs, true))
		}
		if len(throughPIDs) > 0 {
			rows = append(rows, cpuRow(figure("  proxy CPU per round trip", "µs", med, 3, errs, true)))
		}
	}
	for _, c := range []struct {
		mode     bench.Mode
		figure   string
		sessions int
		name     string
	}{{bench.Source, "output", 1, "output throughput, 64 KiB messages, 1 session"}, {bench.Source, "output", 10, "output throughput, 64 KiB messages, 10 sessions"}, {bench.Echo, "echo", 1, "echo throughput, 64 KiB messages, 1 session"}} {
		if !want["throughput"] && !want[c.figure] {
			continue
		}
		var errs int64
		med := alternate(func(t target) []float64 {
			var r bench.Throughput
			used := cpu(t, func() { r = bench.MeasureThroughput(ctx, t.url, c.mode, c.sessions, *dur) })
			errs += r.Errors
			mib := r.BytesPerSec * dur.Seconds() / (1 << 20)
			return []float64{r.BytesPerSec / (1 << 20), us(used) / mib}
		})
		rows = append(rows, figure(c.name, "MiB/s", med, 0, errs, false))
		if len(throughPIDs) > 0 {
			rows = append(rows, cpuRow(figure("  proxy CPU per MiB relayed", "µs", med, 1, errs, true)))
		}
	}
	for _, kind := range handshakeKinds {
		if !want["handshakes"] {
			break
		}
		if kind != "" {
			bench.UseTLS(tlsConfigs[kind])
		}
		var errs int64
		opened, resumed := map[string]int64{}, map[string]int64{}
		med := alternate(func(t target) []float64 {
			var r bench.Handshakes
			switches := bench.ContextSwitches(t.pids)
			used := cpu(t, func() { r = bench.MeasureHandshakes(ctx, t.urls, handshakeWorkers, *dur) })
			switches = bench.ContextSwitches(t.pids) - switches
			errs += r.Errors
			opened[t.url] += r.Opened
			resumed[t.url] += r.Resumed
			n := r.PerSec * dur.Seconds()
			return []float64{r.PerSec, us(used) / n, float64(switches) / n}
		})
		name, note := "sessions opened per second (8 workers)", "through: WebSocket handshake + token check in the store + backend dial"
		if kind != "" {
			base, curve, _ := strings.Cut(kind, "-")
			name += ", TLS " + base
			if curve != "" {
				name += ", " + strings.ToUpper(curve[:1]) + curve[1:] + " only"
			}
			note = "TLS sessions resumed:"
			for i, t := range targets {
				label := []string{"direct", "through", *refName}[i]
				share := float64(resumed[t.url]) / float64(max(opened[t.url], 1))
				note += fmt.Sprintf(" %s %.0f%%", label, 100*share)
				// A resumed round resumes all but at most the first
				// session of each worker (its cached ticket may be the
				// target's measured before it: the same server name); a full one
				// resumes none.
				full := opened[t.url] - resumed[t.url]
				if strings.HasPrefix(kind, "resumed") && (full > int64(handshakeWorkers**rounds) || opened[t.url] == 0) || strings.HasPrefix(kind, "full") && share > 0 {
					failures = append(failures, fmt.Sprintf("%s: %s resumed %.0f%% of its TLS sessions", name, label, 100*share))
				}
			}
		}
		r := figure(name, "1/s", med, 0, errs, false)
		r.Note = note
		rows = append(rows, r)
		if len(throughPIDs) > 0 {
			rows = append(rows, cpuRow(figure("  proxy CPU per session opened", "µs", med, 1, errs, true)))
			sw := cpuRow(figure("  proxy context switches per session", "", med, 2, errs, true))
			sw.Note = "threads of the proxy's processes switched out (voluntary and not, from /proc), per session opened"
			rows = append(rows, sw)
		}
	}
	if want["idle"] && *idle > 0 && *pid > 0 {
		o := bench.IdleOptions{URLs: []string{*through}, Parallel: 16, Settle: *settle}
		if *idleURLs != "" {
			o.URLs = strings.Split(*idleURLs, ",")
		}
		if *sources != "" {
			o.Sources = strings.Split(*sources, ",")
		}
		res, closeAll := bench.MeasureIdle(ctx, *idle, []int{*pid}, o)
		closeAll()
		r := row{Name: fmt.Sprintf("proxy memory per idle session (%d sessions)", res.Sessions), Unit: "KiB",
			Through: res.PerSessionBytes / 1024, Errors: res.Errors,
			Note: fmt.Sprintf("RSS %d -> %d -> %d KiB; opened in %.1fs", res.RSSBefore, res.RSSMid, res.RSSAfter, res.OpenSeconds)}
		m := row{Name: "proxy memory per added idle session (2nd half)", Unit: "KiB", Through: res.MarginalBytes / 1024, Errors: res.Errors}
		if *ref != "" && len(refPIDList) > 0 && len(o.Sources) == 0 {
			time.Sleep(time.Second)
			o.URLs = []string{*ref}
			rr, closeRef := bench.MeasureIdle(ctx, *idle, refPIDList, o)
			closeRef()
			r.Ref, r.RefName, m.Ref, m.RefName = rr.PerSessionBytes/1024, *refName, rr.MarginalBytes/1024, *refName
			r.VsRef, m.VsRef = r.Ref/r.Through, m.Ref/m.Through
			r.Errors += rr.Errors
		}
		rows = append(rows, r, m)
	}

	for _, r := range rows {
		if r.Errors > 0 && !strings.HasPrefix(r.Name, " ") {
			failures = append(failures, fmt.Sprintf("%s: %d errors", r.Name, r.Errors))
		}
	}
	var failed error
	if *strict && len(failures) > 0 {
		failed = fmt.Errorf("-strict: %s", strings.Join(failures, "; "))
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		for _, r := range rows {
			enc.Encode(r)
		}
		return failed
	}
	refCols := *ref != ""
	fmt.Printf("%-50s %10s %10s %6s %9s", "measurement", "direct", "through", "ratio", "added")
	if refCols {
		fmt.Printf(" %10s %7s", *refName, "vs "+*refName)
	}
	fmt.Printf(" %6s\n", "errors")
	for _, r := range rows {
		added := ""
		if r.Added != 0 {
			added = fmt.Sprintf("%+.1f", r.Added)
		}
		direct, ratio := fmt.Sprintf("%.1f", r.Direct), fmt.Sprintf("%.2f", r.Ratio)
		if r.Direct == 0 {
			direct, ratio = "-", "-"
		}
		fmt.Printf("%-50s %10s %10.1f %6s %9s", r.Name, direct, r.Through, ratio, added)
		if refCols {
			refv, vs := "-", "-"
			if r.Ref != 0 {
				refv, vs = fmt.Sprintf("%.1f", r.Ref), fmt.Sprintf("%.2fx", r.VsRef)
			}
			fmt.Printf(" %10s %7s", refv, vs)
		}
		fmt.Printf(" %6d  %s %s\n", r.Errors, r.Unit, r.Note)
	}
	if refCols {
		fmt.Printf("vs %s: above 1.00x the proxy does better (higher rate, lower time or memory)\n", *refName)
	}
	return failed
}

// handshakeWorkers open sessions in parallel for the sessions-opened rows.
const handshakeWorkers = 8

func us(d time.Duration) float64 { return float64(d) / 1e3 }

// cpuRow is a row of the CPU a proxy used: there is no direct figure (the
// direct path has no proxy), and a reference without -ref-pids has none.
func cpuRow(r row) row {
	r.Direct, r.Ratio, r.Added = 0, 0, 0
	if r.Ref == 0 || r.Through == 0 {
		r.Ref, r.VsRef = 0, 0
	}
	r.Note = "CPU time (user+system) of the proxy's processes, from their CPU clocks, per unit of work"
	return r
}

func parsePIDs(list string) ([]int, error) {
	var pids []int
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		pids = append(pids, p)
	}
	return pids, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
