// Package gcpace sets how much the heap may grow between garbage
// collections: a fixed fraction of the live heap (small, so that memory
// held stays close to what sessions use), but never less than a floor in
// bytes, so that a small heap is not collected every few hundred
// kilobytes.
//
// The runtime offers only the fraction (GOGC), and its floor (4 MiB at
// GOGC=100) shrinks with it: at 25% a small heap was collected every
// ~1 MiB allocated, about every 25 new sessions, which cost a quarter of
// the processor time of setting a session up. After each collection the
// pacer sets the fraction that gives at least the floor for the heap that
// is live now.
package gcpace

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Pacer adjusts the GC percent after each collection until Stop.
type Pacer struct {
	percent int    // the fraction, in percent of the live heap
	floor   uint64 // the least growth, in bytes

	mu      sync.Mutex
	stopped bool
	current int
	sample  []metrics.Sample
}

// Start sets the GC percent to percent and from now on raises it after a
// collection when percent of the live heap is less than floor bytes.
func Start(percent int, floor uint64) *Pacer {
	p := &Pacer{percent: percent, floor: floor,
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	p.current = percent
	debug.SetGCPercent(percent)
	p.arm()
	return p
}

// Stop leaves the GC percent as it is and adjusts it no more.
func (p *Pacer) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
}

// Percent reports the GC percent in force.
func (p *Pacer) Percent() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current
}

// sentinel is garbage whose finalizer runs after the collection that
// found it: the pacer's "a collection ended" signal, with no goroutine.
type sentinel struct{ _ [16]byte }

func (p *Pacer) arm() {
	s := new(sentinel)
	runtime.SetFinalizer(s, func(*sentinel) {
		if p.adjust() {
			p.arm()
		}
	})
}

// adjust sets the percent for the live heap; it reports false once stopped.
func (p *Pacer) adjust() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false
	}
	metrics.Read(p.sample)
	want := p.want(p.sample[0].Value.Uint64())
	// Setting the percent stops the world briefly: only for a real change.
	if want*4 < p.current*3 || want*3 > p.current*4 || (want == p.percent && p.current != p.percent) {
		debug.SetGCPercent(want)
		p.current = want
	}
	return true
}

// runtimeMinHeap is the runtime's least heap goal at GOGC=100; it scales
// with the percent, so below it the percent alone sets the growth.
const runtimeMinHeap = 4 << 20

// want is the percent for a live heap of live bytes.
func (p *Pacer) want(live uint64) int {
	live = max(live, runtimeMinHeap)
	return max(p.percent, int((p.floor*100+live-1)/live))
}
