//go:build race

package rawsock

import "sync/atomic"

// The race detector cannot see bytes travel through the kernel. Go's own
// socket calls tell it that a write happens before the read of its bytes;
// an atomic counter says the same here, in race builds only.
var ioSync atomic.Int64

func beforeWrite() { ioSync.Add(1) }
func afterRead()   { ioSync.Load() }
