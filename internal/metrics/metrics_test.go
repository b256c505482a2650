package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/audit"
)

// Audit records that a full disk refused are counted on the metrics page.
func TestAuditDropsCounted(t *testing.T) {
	l, err := audit.Open("/dev/full") // every write fails with ENOSPC
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	m := New()
	m.CountAuditDrops(l.Dropped)
	for i := 0; i < 2; i++ {
		if err := l.Write(audit.Record{Session: "s", Start: time.Now(), End: time.Now()}); err == nil {
			t.Fatal("a record was written to /dev/full")
		}
	}
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(w.Body)
	if !strings.Contains(string(body), "\nzun_wsproxy_audit_records_dropped_total 2\n") {
		t.Fatalf("metrics page lacks zun_wsproxy_audit_records_dropped_total 2:\n%s", body)
	}
}

// Sessions shed from loops are counted on the metrics page, as the
// counter it is given reads.
func TestLoopShedsCounted(t *testing.T) {
	m := New()
	var n uint64 = 3
	m.CountLoopSheds(func() uint64 { return n })
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(w.Body)
	if !strings.Contains(string(body), "\nzun_wsproxy_loop_sessions_shed_total 3\n") {
		t.Fatalf("metrics page lacks zun_wsproxy_loop_sessions_shed_total 3:\n%s", body)
	}
}

// Lookups and the queries that answered them are counted on the metrics
// page, as the function it is given reads.
func TestLookupsCounted(t *testing.T) {
	m := New()
	m.CountLookups(func() (uint64, uint64) { return 12, 5 })
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(w.Body)
	for _, want := range []string{"\nzun_wsproxy_database_lookups_total 12\n", "\nzun_wsproxy_database_lookup_queries_total 5\n"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics page lacks %q:\n%s", want[1:len(want)-1], body)
		}
	}
}
