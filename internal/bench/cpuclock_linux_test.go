package bench

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// The CPU clock counts what /proc counts, in nanoseconds instead of
// 10 ms ticks, for another process as for this one.
func TestCPUTimeReadsTheProcessClock(t *testing.T) {
	spin := exec.Command("sh", "-c", "while :; do :; done")
	if err := spin.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { spin.Process.Kill(); spin.Wait() }()
	pid := spin.Process.Pid
	time.Sleep(300 * time.Millisecond)
	stat := statCPUTime(pid) // first: the clock, read after, is ahead
	clock, ok := processClock(pid)
	if !ok {
		t.Fatal("the CPU clock of a running child cannot be read")
	}
	if clock < 50*time.Millisecond || clock < stat || clock-stat > 50*time.Millisecond {
		t.Fatalf("CPU clock %v, /proc %v: the clock should match /proc, to within its ticks", clock, stat)
	}
	if clock%(10*time.Millisecond) == 0 {
		t.Fatalf("CPU clock %v is a whole number of ticks", clock)
	}
	if got := CPUTime([]int{pid}); got < clock {
		t.Fatalf("CPUTime %v went back from %v", got, clock)
	}
	if _, ok := processClock(os.Getpid() + 1<<22); ok {
		t.Fatal("a process that does not exist has a CPU clock")
	}
}
