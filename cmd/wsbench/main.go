// Command wsbench measures a console proxy against its own ceiling:
//
//	wsbench backend -listen 127.0.0.1:7000
//	wsbench run -direct ws://127.0.0.1:7000/x -through 'ws://127.0.0.1:6784/?token=T&uuid=U' -pid PID
//
// The backend speaks Docker's attach WebSocket protocol (echo, sink or
// source, chosen per session). run measures each figure directly against
// the backend and through the proxy, alternating rounds so that noise on a
// shared machine falls on both, and prints both, their ratio and, with
// -json, one JSON line per result.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
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
	default:
		err = errors.New("usage: wsbench backend|run [flags] (wsbench run -h)")
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "wsbench:", err)
		os.Exit(1)
	}
}

func backend(args []string) error {
	fs := flag.NewFlagSet("wsbench backend", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:7000", "addresses to serve on, comma-separated (loopback)")
	if err := fs.Parse(args); err != nil {
		return err
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

// row is one figure, direct and through.
type row struct {
	Name    string  `json:"name"`
	Unit    string  `json:"unit"`
	Direct  float64 `json:"direct"`
	Through float64 `json:"through"`
	Ratio   float64 `json:"ratio"` // through / direct
	Added   float64 `json:"added,omitempty"`
	Errors  int64   `json:"errors"`
	Note    string  `json:"note,omitempty"`
}

func run(args []string) error {
	fs := flag.NewFlagSet("wsbench run", flag.ContinueOnError)
	direct := fs.String("direct", "", "WebSocket URL of the backend itself (the ceiling)")
	through := fs.String("through", "", "WebSocket URL of the same backend through the proxy")
	tokensFile := fs.String("through-urls", "", "file of proxy URLs, one per line, for handshakes (single-use tokens)")
	pid := fs.Int("pid", 0, "the proxy's process id, for memory per idle session")
	rounds := fs.Int("rounds", 3, "alternating rounds per figure (the median is kept)")
	samples := fs.Int("samples", 2000, "round trips per session for latency")
	dur := fs.Duration("duration", 3*time.Second, "length of each throughput and handshake round")
	idle := fs.Int("idle", 2000, "idle sessions for the memory figure (0: skip)")
	asJSON := fs.Bool("json", false, "print one JSON line per result")
	only := fs.String("only", "latency,throughput,handshakes,idle", "figures to measure, comma-separated")
	idleURLs := fs.String("idle-urls", "", "proxy URLs for idle sessions, comma-separated, used in turn (default: -through)")
	sources := fs.String("source-ips", "", "client source addresses for idle sessions, comma-separated, used in turn (more ephemeral ports)")
	settle := fs.Duration("idle-settle", 6*time.Second, "wait after opening idle sessions before reading the RSS")
	if err := fs.Parse(args); err != nil {
		return err
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
	// alternate runs f on both URLs, rounds times each, and keeps medians.
	alternate := func(f func(url string, urls []string) (float64, int64)) (float64, float64, int64) {
		var d, t []float64
		var errs int64
		for i := 0; i < *rounds; i++ {
			v, e := f(*direct, []string{*direct})
			d, errs = append(d, v), errs+e
			v, e = f(*through, throughURLs)
			t, errs = append(t, v), errs+e
		}
		return median(d), median(t), errs
	}
	want := map[string]bool{}
	for _, f := range strings.Split(*only, ",") {
		want[strings.TrimSpace(f)] = true
	}
	for _, n := range []int{1, 100} {
		if !want["latency"] {
			break
		}
		var d50, t50, d99, t99, d999, t999 []float64
		var errs int64
		for i := 0; i < *rounds; i++ {
			l := bench.MeasureLatency(ctx, *direct, n, *samples/n+100)
			d50, d99, d999 = append(d50, us(l.P50)), append(d99, us(l.P99)), append(d999, us(l.P999))
			errs += l.Errors
			l = bench.MeasureLatency(ctx, *through, n, *samples/n+100)
			t50, t99, t999 = append(t50, us(l.P50)), append(t99, us(l.P99)), append(t999, us(l.P999))
			errs += l.Errors
		}
		for _, r := range []struct {
			name string
			d, t []float64
		}{{"p50", d50, t50}, {"p99", d99, t99}, {"p99.9", d999, t999}} {
			dm, tm := median(r.d), median(r.t)
			rows = append(rows, row{Name: fmt.Sprintf("keystroke RTT %s, %d session(s)", r.name, n), Unit: "µs",
				Direct: dm, Through: tm, Ratio: tm / dm, Added: tm - dm, Errors: errs})
		}
	}
	for _, c := range []struct {
		mode     bench.Mode
		sessions int
		name     string
	}{{bench.Source, 1, "output throughput, 64 KiB messages, 1 session"}, {bench.Source, 10, "output throughput, 64 KiB messages, 10 sessions"}, {bench.Echo, 1, "echo throughput, 64 KiB messages, 1 session"}} {
		if !want["throughput"] {
			break
		}
		d, t, errs := alternate(func(u string, _ []string) (float64, int64) {
			r := bench.MeasureThroughput(ctx, u, c.mode, c.sessions, *dur)
			return r.BytesPerSec / (1 << 20), r.Errors
		})
		rows = append(rows, row{Name: c.name, Unit: "MiB/s", Direct: d, Through: t, Ratio: t / d, Errors: errs})
	}
	if want["handshakes"] {
		d, t, errs := alternate(func(_ string, urls []string) (float64, int64) {
			r := bench.MeasureHandshakes(ctx, urls, 8, *dur)
			return r.PerSec, r.Errors
		})
		rows = append(rows, row{Name: "sessions opened per second (8 workers)", Unit: "1/s", Direct: d, Through: t, Ratio: t / d, Errors: errs,
			Note: "through: WebSocket handshake + token check in the store + backend dial"})
	}
	if want["idle"] && *idle > 0 && *pid > 0 {
		o := bench.IdleOptions{URLs: []string{*through}, Parallel: 16, Settle: *settle}
		if *idleURLs != "" {
			o.URLs = strings.Split(*idleURLs, ",")
		}
		if *sources != "" {
			o.Sources = strings.Split(*sources, ",")
		}
		res, closeAll := bench.MeasureIdle(ctx, *idle, *pid, o)
		closeAll()
		rows = append(rows, row{Name: fmt.Sprintf("proxy memory per idle session (%d sessions)", res.Sessions), Unit: "KiB",
			Through: res.PerSessionBytes / 1024, Errors: res.Errors,
			Note: fmt.Sprintf("RSS %d -> %d -> %d KiB; opened in %.1fs", res.RSSBefore, res.RSSMid, res.RSSAfter, res.OpenSeconds)},
			row{Name: "proxy memory per added idle session (2nd half)", Unit: "KiB", Through: res.MarginalBytes / 1024, Errors: res.Errors})
	}

	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		for _, r := range rows {
			enc.Encode(r)
		}
		return nil
	}
	fmt.Printf("%-52s %12s %12s %8s %10s %6s\n", "measurement", "direct", "through", "ratio", "added", "errors")
	for _, r := range rows {
		added := ""
		if r.Added != 0 {
			added = fmt.Sprintf("%+.1f", r.Added)
		}
		direct := fmt.Sprintf("%.1f", r.Direct)
		ratio := fmt.Sprintf("%.2f", r.Ratio)
		if r.Direct == 0 {
			direct, ratio = "-", "-"
		}
		fmt.Printf("%-52s %12s %12.1f %8s %10s %6d  %s %s\n", r.Name, direct, r.Through, ratio, added, r.Errors, r.Unit, r.Note)
	}
	return nil
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
