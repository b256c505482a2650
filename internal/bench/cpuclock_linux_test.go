package bench

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// The CPU clock counts what /proc counts, in nanoseconds instead of
// clock ticks, for another process as for this one.
func TestCPUTimeReadsTheProcessClock(t *testing.T) {
	spin := exec.Command("sh", "-c", "while :; do :; done")
	if err := spin.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { spin.Process.Kill(); spin.Wait() }()
	pid := spin.Process.Pid
	for deadline := time.Now().Add(10 * time.Second); statCPUTime(pid) < 30*time.Millisecond; {
		if time.Now().After(deadline) {
			t.Fatal("the child used no CPU time in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Stopped, so that the figures hold still while they are compared.
	if err := spin.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !stopped(pid); {
		if time.Now().After(deadline) {
			t.Fatal("the child did not stop")
		}
		time.Sleep(time.Millisecond)
	}
	stat := statCPUTime(pid)
	clock, ok := processClock(pid)
	if !ok {
		t.Fatal("the CPU clock of a stopped child cannot be read")
	}
	// /proc rounds user and system time down to ticks, each on its own.
	if clock < stat || clock >= stat+20*time.Millisecond {
		t.Fatalf("CPU clock %v, /proc %v: the clock should match /proc, to within its ticks", clock, stat)
	}
	if clock%time.Millisecond == 0 {
		t.Fatalf("CPU clock %v is in whole milliseconds: a tick-based clock", clock)
	}
	if got := CPUTime([]int{pid}); got != clock {
		t.Fatalf("CPUTime %v, the clock %v: the clock should be what it reads", got, clock)
	}
	for _, bad := range []int{0, -1, os.Getpid() + 1<<22, pid + 1<<29} {
		if _, ok := processClock(bad); ok {
			t.Errorf("pid %d, which Linux never gives, has a CPU clock", bad)
		}
	}
}

// stopped reports whether process pid is stopped by a signal.
func stopped(pid int) bool {
	f := statFields(pid)
	return len(f) > 0 && f[0] == "T"
}
