package bench

import (
	"syscall"
	"time"
	"unsafe"
)

// processClock reads pid's CPU clock: the clock id clock_getcpuclockid(3)
// makes for a process (its pid, complemented, above the scheduler clock's
// type), which counts the time of all its threads. Not for pids Linux
// never gives (0 and below would name this process's own clock, and
// numbers past the largest pid would wrap onto another's).
func processClock(pid int) (time.Duration, bool) {
	const cpuClockSched, pidMax = 2, 1 << 22
	if pid <= 0 || pid > pidMax {
		return 0, false
	}
	id := uintptr((^pid)<<3 | cpuClockSched)
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, id, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}
