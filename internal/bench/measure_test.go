package bench

import (
	"os"
	"testing"
	"time"
)

// A thread that sleeps is switched out: the count of this process's
// switches grows by at least that.
func TestContextSwitches(t *testing.T) {
	pids := []int{os.Getpid()}
	before := ContextSwitches(pids)
	for i := 0; i < 20; i++ {
		time.Sleep(time.Millisecond)
	}
	after := ContextSwitches(pids)
	if before <= 0 || after-before < 10 {
		t.Fatalf("context switches %d, then %d after 20 sleeps", before, after)
	}
	if n := ContextSwitches([]int{1 << 30}); n != 0 {
		t.Fatalf("a process that does not exist has %d context switches", n)
	}
}
