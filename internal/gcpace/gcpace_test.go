package gcpace

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestWant(t *testing.T) {
	p := &Pacer{percent: 25, floor: 4 << 20}
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 100}, // the runtime's own floor (4 MiB at 100%) does the rest
		{100 << 10, 100},
		{1 << 20, 100},
		{4 << 20, 100},
		{8 << 20, 50},
		{16 << 20, 25},
		{64 << 20, 25}, // large heaps: the fraction alone
		{1 << 30, 25},
	} {
		if got := p.want(c.live); got != c.want {
			t.Errorf("live %d: percent %d, want %d", c.live, got, c.want)
		}
	}
}

var sink []byte

// A small heap at 25% is collected every ~1 MiB; with a 4 MiB floor, every
// ~4 MiB or more.
func TestFloorSpacesCollections(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	collections := func() uint32 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.NumGC
	}
	churn := func() uint32 {
		runtime.GC()
		before := collections()
		for i := 0; i < 64<<10; i++ { // 64 MiB of 1 KiB garbage
			sink = make([]byte, 1<<10)
		}
		return collections() - before
	}
	debug.SetGCPercent(25)
	plain := churn()
	p := Start(25, 4<<20)
	defer p.Stop()
	runtime.GC() // the pacer adjusts after a collection
	runtime.GC()
	paced := churn()
	t.Logf("collections for 64 MiB of garbage: %d at 25%%, %d with a 4 MiB floor (percent %d)", plain, paced, p.Percent())
	if p.Percent() <= 25 {
		t.Errorf("percent %d with a small heap, want more than 25", p.Percent())
	}
	if paced > 24 || paced*2 > plain {
		t.Errorf("%d collections with a 4 MiB floor (%d without): want at most 24 and half as many", paced, plain)
	}
}
