package workers

// growStack grows the calling goroutine's stack to 16 KiB in one step,
// where the stack is still shallow: a new worker's first act. A
// goroutine starts small, and a console handshake (its store lookup, its
// dial, its log lines) grew it to 16 KiB in three copies, each walking
// every frame below it, deep in the handshake. The frame of growStack is
// what the runtime makes room for at once; the copy moves the few frames
// above it.
//
//go:noinline
func growStack() {
	var frame [stackReserve]byte
	touchStack(frame[:])
}

// stackReserve is growStack's frame: with the frames below it and the
// runtime's guard, a 16 KiB stack.
const stackReserve = 10 << 10

//go:noinline
func touchStack(b []byte) { b[len(b)-1] = 0 }
