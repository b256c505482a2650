package workers

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// goid is the calling goroutine's number, from its stack's first line.
func goid() int {
	var b [64]byte
	line := b[:runtime.Stack(b[:], false)]
	line = bytes.TrimPrefix(line, []byte("goroutine "))
	n, _ := strconv.Atoi(string(line[:bytes.IndexByte(line, ' ')]))
	return n
}

func TestRunsEveryTask(t *testing.T) {
	for _, tc := range []struct {
		name string
		pool *Pool
	}{
		{"pool", New(4)},
		{"nil pool", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.pool.Close()
			var wg sync.WaitGroup
			var mu sync.Mutex
			ran := map[int]bool{}
			for i := range 1000 {
				wg.Add(1)
				tc.pool.Go(func() {
					defer wg.Done()
					mu.Lock()
					ran[i] = true
					mu.Unlock()
				})
			}
			wg.Wait()
			if len(ran) != 1000 {
				t.Fatalf("%d of 1000 tasks ran", len(ran))
			}
		})
	}
}

func TestIdleWorkerTakesTheNextTask(t *testing.T) {
	p := New(1)
	defer p.Close()
	first := make(chan int)
	p.Go(func() { first <- goid() })
	id := <-first
	// The worker counts itself idle before it waits: the next task goes
	// to it once it does.
	deadline := time.Now().Add(5 * time.Second)
	for p.idle.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for time.Now().Before(deadline) {
		next := make(chan int)
		p.Go(func() { next <- goid() })
		if <-next == id {
			return
		}
		// Counted idle but not yet receiving: the task had a goroutine of
		// its own. Again.
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no task ran on the worker that ran the first")
}

func TestKeepsAtMostMaxIdle(t *testing.T) {
	p := New(3)
	defer p.Close()
	before := runtime.NumGoroutine()
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		p.Go(func() { defer wg.Done(); <-release })
	}
	close(release)
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine() - before
		if n <= 3 && p.idle.Load() == 3 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after 20 tasks (idle %d), want at most 3", n, p.idle.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCloseEndsIdleWorkers(t *testing.T) {
	p := New(8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		p.Go(func() { wg.Done() })
	}
	wg.Wait()
	p.Close()
	p.Close() // twice is fine
	if err := goleak.Find(); err != nil {
		t.Fatal(err)
	}
	// Tasks still run after Close.
	done := make(chan struct{})
	p.Go(func() { close(done) })
	<-done
}

// stackMoved reports whether the calling goroutine's stack was copied
// (grown) while f ran: a local's address is its place on the stack.
//
//go:noinline
func stackMoved(f func()) bool {
	var here byte
	before := uintptr(unsafe.Pointer(&here))
	f()
	return uintptr(unsafe.Pointer(&here)) != before
}

// A task that needs 12 KiB of stack finds it grown, on a new worker and
// on an idle one whose stack the garbage collector has shrunk; on a
// goroutine of its own (a nil pool) the stack grows under it, which is
// what the instrument sees.
func TestTasksFindTheirStackGrown(t *testing.T) {
	p := New(1)
	defer p.Close()
	moved := func(pool *Pool, collect bool) bool {
		if collect {
			runtime.GC() // each cycle halves an idle worker's stack
			runtime.GC()
		}
		ch := make(chan bool)
		pool.Go(func() { ch <- stackMoved(func() { sinkByte += deep(12) }) })
		return <-ch
	}
	if !moved(nil, false) {
		t.Fatal("a new goroutine's stack did not grow for a 12 KiB task: the test sees nothing")
	}
	if moved(p, false) {
		t.Error("a new worker's stack grew under its first task")
	}
	for i := range 3 {
		if moved(p, true) {
			t.Errorf("task %d: the stack grew under it after the garbage collector ran", i)
		}
	}
}

// Tasks given while the pool closes all run, once each.
func TestGoRacingClose(t *testing.T) {
	p := New(4)
	var ran sync.WaitGroup
	var count atomic.Int64
	start := make(chan struct{})
	var givers sync.WaitGroup
	for range 8 {
		givers.Add(1)
		go func() {
			defer givers.Done()
			<-start
			for range 100 {
				ran.Add(1)
				p.Go(func() { count.Add(1); ran.Done() })
			}
		}()
	}
	close(start)
	p.Close()
	givers.Wait()
	ran.Wait()
	if n := count.Load(); n != 800 {
		t.Fatalf("%d of 800 tasks ran", n)
	}
	if err := goleak.Find(); err != nil {
		t.Fatal(err)
	}
}

// deep needs about n KiB of stack, as a session's set-up does.
//
//go:noinline
func deep(n int) byte {
	var frame [1024]byte
	frame[n%len(frame)] = byte(n)
	if n <= 1 {
		return frame[0]
	}
	return deep(n-1) + frame[n%len(frame)]
}

var sinkByte byte

// BenchmarkStackGrowth runs tasks that need 12 KiB of stack each, on
// the pool and on a goroutine of their own.
func BenchmarkStackGrowth(b *testing.B) {
	for _, bc := range []struct {
		name string
		pool *Pool
	}{
		{"pool", New(0)},
		{"go", nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			defer bc.pool.Close()
			done := make(chan byte)
			b.ReportAllocs()
			for b.Loop() {
				bc.pool.Go(func() { done <- deep(12) })
				sinkByte += <-done
			}
		})
	}
}
