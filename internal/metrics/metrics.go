// Package metrics exposes the proxy's Prometheus metrics: sessions by kind
// and end, refused handshakes by reason, bytes relayed, and how long
// sessions, their setup, backend dials and store lookups take. A nil
// *Metrics records nothing, so callers need no checks when metrics are off.
package metrics

import (
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the proxy's metrics in a registry of its own.
type Metrics struct {
	reg      *prometheus.Registry
	active   *prometheus.GaugeVec
	started  *prometheus.CounterVec
	ended    *prometheus.CounterVec
	refused  *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	setup    prometheus.Histogram
	firstOut prometheus.Histogram
	dial     *prometheus.HistogramVec
	store    prometheus.Histogram
}

// New returns Metrics with the Go runtime's and the process's collectors.
func New() *Metrics {
	const ns = "zun_wsproxy"
	fast := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "sessions_active",
			Help: "Console sessions open now, by kind (attach, exec)."}, []string{"kind"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sessions_started_total",
			Help: "Console sessions started, by kind."}, []string{"kind"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sessions_ended_total",
			Help: "Console sessions ended, by kind and why (see the README)."}, []string{"kind", "reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "handshakes_refused_total",
			Help: "Console requests refused before the WebSocket upgrade, by reason."}, []string{"reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "bytes_total",
			Help: "Payload bytes relayed by ended sessions, by direction (to_client, to_container)."}, []string{"direction"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "session_duration_seconds",
			Help:    "How long console sessions lasted, by kind.",
			Buckets: []float64{1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600}}, []string{"kind"}),
		setup: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "session_setup_seconds",
			Help: "From a console request's arrival to its session running (authorization, backend dial, upgrade).", Buckets: fast}),
		firstOut: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "time_to_first_byte_seconds",
			Help: "From a console request's arrival to the first container output sent to the client.", Buckets: fast}),
		dial: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "backend_dial_seconds",
			Help: "Opening the container's console stream (Docker attach or exec), by kind.", Buckets: fast}, []string{"kind"}),
		store: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "store_lookup_seconds",
			Help: "Authorizing a request against the store (token and container lookup).", Buckets: fast}),
	}
	m.reg.MustRegister(m.active, m.started, m.ended, m.refused, m.bytes, m.duration, m.setup, m.firstOut, m.dial, m.store,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Mux serves the metrics listener: /metrics, and with profiling Go's
// profiles under /debug/pprof/ (for go tool pprof).
func (m *Metrics) Mux(profiling bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	if profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// SessionStarted counts a session that began setupTime after its request.
func (m *Metrics) SessionStarted(kind string, setup time.Duration) {
	if m == nil {
		return
	}
	m.active.WithLabelValues(kind).Inc()
	m.started.WithLabelValues(kind).Inc()
	m.setup.Observe(setup.Seconds())
}

// FirstOutput records the time from request to first container output.
func (m *Metrics) FirstOutput(d time.Duration) {
	if m == nil {
		return
	}
	m.firstOut.Observe(d.Seconds())
}

// SessionEnded counts a session's end; reason is one of a fixed set.
func (m *Metrics) SessionEnded(kind, reason string, lasted time.Duration, toClient, toContainer int64) {
	if m == nil {
		return
	}
	m.active.WithLabelValues(kind).Dec()
	m.ended.WithLabelValues(kind, reason).Inc()
	m.duration.WithLabelValues(kind).Observe(lasted.Seconds())
	m.bytes.WithLabelValues("to_client").Add(float64(toClient))
	m.bytes.WithLabelValues("to_container").Add(float64(toContainer))
}

// CountAuditDrops exports dropped, the number of audit records that could
// not be written, as zun_wsproxy_audit_records_dropped_total. Call it once.
func (m *Metrics) CountAuditDrops(dropped func() uint64) {
	if m == nil {
		return
	}
	m.countFunc("audit_records_dropped_total", "Audit records that could not be written (a full disk, say) and were dropped.", dropped)
}

// countFunc registers a counter that reads its value from count.
func (m *Metrics) countFunc(name, help string, count func() uint64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "zun_wsproxy", Name: name, Help: help},
		func() float64 { return float64(count()) }))
}

// CountLoopSheds exports shed, the number of sessions that left an event
// loop that was behind, as zun_wsproxy_loop_sessions_shed_total. Call it
// once.
func (m *Metrics) CountLoopSheds(shed func() uint64) {
	if m == nil {
		return
	}
	m.countFunc("loop_sessions_shed_total", "Sessions moved from an event loop to goroutines of their own because the loop was behind (busy, or given too little processor time).", shed)
}

// CountLookups exports the lookups of containers by uuid in Zun's
// database and the queries that answered them (lookups arriving together
// share one) as zun_wsproxy_database_lookups_total and
// zun_wsproxy_database_lookup_queries_total. Call it once.
func (m *Metrics) CountLookups(counts func() (asked, queries uint64)) {
	if m == nil {
		return
	}
	m.countFunc("database_lookups_total", "Containers looked up by uuid in Zun's database.", func() uint64 { n, _ := counts(); return n })
	m.countFunc("database_lookup_queries_total", "Queries that answered the lookups of containers by uuid: lookups arriving while one is answered share the next.", func() uint64 { _, n := counts(); return n })
}

// Refused counts a request refused before the upgrade.
func (m *Metrics) Refused(reason string) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(reason).Inc()
}

// BackendDial records how long opening a console stream took.
func (m *Metrics) BackendDial(kind string, d time.Duration) {
	if m == nil {
		return
	}
	m.dial.WithLabelValues(kind).Observe(d.Seconds())
}

// StoreLookup records how long authorizing a request took.
func (m *Metrics) StoreLookup(d time.Duration) {
	if m == nil {
		return
	}
	m.store.Observe(d.Seconds())
}
