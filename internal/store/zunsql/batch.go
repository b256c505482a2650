package zunsql

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/store"
)

// Lookups by uuid that arrive while one is being answered are gathered and
// answered together by one query, sent as soon as that one is answered
// (uuid IN (...)). Under a burst of sessions (a load balancer failing
// over, every console of a page reconnecting) each query then serves
// several: MariaDB parses, plans and answers one statement for them, on
// cores it often shares with the proxy, and the proxy writes and reads one.
// With one lookup at a time nothing waits: a lookup that finds none in
// flight is sent at once.
//
// Every answer comes from a query sent after its lookup arrived: a lookup
// joins only a batch not yet sent, never one in flight, so a token rotated
// or a container deleted before a lookup began is never missed, as with a
// query of its own.
type uuidBatcher struct {
	mu sync.Mutex
	// inFlight: a batch has been sent and not answered. When it is
	// answered, the gathered batch (if any) is sent next.
	inFlight bool
	gathered *uuidBatch // lookups waiting for the one in flight; nil if none

	lookups, queries atomic.Uint64 // for metrics: lookups asked, queries asked
}

// uuidBatch is one query's lookups: their uuids, and the answer once done
// is closed.
type uuidBatch struct {
	uuids []string
	sent  chan struct{} // closed when the batch is handed the turn
	done  chan struct{} // closed when rows and err are set
	rows  []store.Container
	err   error
}

const (
	// maxBatch bounds a query's uuids; lookups beyond them go alone.
	maxBatch = 64
	// maxGatherWait bounds how long a gathered batch waits for the query
	// in flight before it is sent anyway, so that one slow query (a
	// locked row, a lost packet) delays the lookups behind it by this
	// much, not by its own length. On loopback a lookup is answered in
	// 0.1-0.3 ms.
	maxGatherWait = 20 * time.Millisecond
)

// byUUIDQueries[n] selects the containers of n uuids.
var byUUIDQueries = func() (q [maxBatch + 1]string) {
	for n := 1; n <= maxBatch; n++ {
		q[n] = containerColumns + `WHERE uuid IN (` + strings.Repeat(",?", n)[1:] + `) AND container_type = 0`
	}
	return q
}()

// containerByUUID answers one lookup by uuid, batched with those arriving
// with it.
func (d *DB) containerByUUID(ctx context.Context, uuid string) (store.Container, error) {
	b := &d.byUUID
	b.lookups.Add(1)
	b.mu.Lock()
	if !b.inFlight {
		b.inFlight = true
		b.mu.Unlock()
		one := uuidBatch{uuids: []string{uuid}, done: make(chan struct{})}
		d.sendBatch(ctx, &one)
		return one.result(uuid)
	}
	g := b.gathered
	switch {
	case g == nil:
		// The first to wait has the batch sent: when the query in flight
		// is answered (which hands it the turn), after maxGatherWait, or
		// when this lookup gives up, whichever comes first.
		g = &uuidBatch{uuids: make([]string, 1, 8), sent: make(chan struct{}), done: make(chan struct{})}
		g.uuids[0] = uuid
		b.gathered = g
		b.mu.Unlock()
		t := time.NewTimer(maxGatherWait)
		select {
		case <-g.sent:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		b.mu.Lock()
		if b.gathered == g { // not handed the turn: it goes now anyway
			b.gathered = nil
		}
		b.mu.Unlock()
		// On a worker (a goroutine apart) and no lookup's context: the batch
		// answers others, and each of them may leave on its own context.
		// It ends within the query timeout; Close waits for it.
		d.senders.Add(1)
		d.workers.Go(func() {
			defer d.senders.Done()
			d.sendBatch(context.WithoutCancel(ctx), g)
		})
		return d.await(ctx, g, uuid)
	case contains(g.uuids, uuid):
		b.mu.Unlock()
		return d.await(ctx, g, uuid)
	case len(g.uuids) < maxBatch:
		g.uuids = append(g.uuids, uuid)
		b.mu.Unlock()
		return d.await(ctx, g, uuid)
	default: // a full batch is gathered: this one goes alone
		b.mu.Unlock()
		one := uuidBatch{uuids: []string{uuid}, done: make(chan struct{})}
		d.runBatch(ctx, &one)
		return one.result(uuid)
	}
}

// await waits for the batch's answer for uuid, or for ctx to end.
func (d *DB) await(ctx context.Context, batch *uuidBatch, uuid string) (store.Container, error) {
	select {
	case <-batch.done:
		return batch.result(uuid)
	case <-ctx.Done():
		return store.Container{}, d.unavailable(ctx.Err())
	}
}

// sendBatch runs a batch as the one in flight, then hands the gathered
// batch, if any, the turn.
func (d *DB) sendBatch(ctx context.Context, batch *uuidBatch) {
	d.runBatch(ctx, batch)
	b := &d.byUUID
	b.mu.Lock()
	if g := b.gathered; g != nil {
		b.gathered = nil
		close(g.sent) // its sender keeps inFlight set
	} else {
		b.inFlight = false
	}
	b.mu.Unlock()
}

// runBatch queries the batch's uuids and closes its done.
func (d *DB) runBatch(ctx context.Context, batch *uuidBatch) {
	defer close(batch.done)
	d.byUUID.queries.Add(1)
	args := make([]any, len(batch.uuids))
	for i, u := range batch.uuids {
		args[i] = u
	}
	batch.rows, batch.err = d.containers(ctx, byUUIDQueries[len(batch.uuids)], args...)
}

// result is uuid's container among the batch's rows. The comparison is
// the column's for the values it meets: Zun's tables compare
// case-insensitively, and the uuids Zun stores are canonical (36 ASCII
// characters), which a lookup's uuid matches, in any collation Zun's
// tables use, exactly when strings.EqualFold says so.
func (batch *uuidBatch) result(uuid string) (store.Container, error) {
	if batch.err != nil {
		return store.Container{}, batch.err
	}
	for _, c := range batch.rows {
		if strings.EqualFold(c.UUID, uuid) {
			return c, nil
		}
	}
	return store.Container{}, fmt.Errorf("container %s: %w", uuid, store.ErrNotFound)
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// BatchedLookups reports lookups by uuid asked and the queries that
// answered them.
func (d *DB) BatchedLookups() (lookups, queries uint64) {
	return d.byUUID.lookups.Load(), d.byUUID.queries.Load()
}
