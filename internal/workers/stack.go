package workers

// GrowStack grows the calling goroutine's stack to 16 KiB in one step,
// where the stack is still shallow: a worker does so before each task,
// and so does code about to go deep on a goroutine not of the pool. A
// goroutine starts small, and a console handshake (its store lookup, its
// dial, its log lines) grew it to 16 KiB in three copies, each walking
// every frame below it, deep in the handshake. GrowStack's frame is what
// the runtime makes room for at once; the copy moves the few frames above
// it. On a stack already grown (the garbage collector shrinks the stacks
// of goroutines that wait, idle workers' among them) it costs the frame's
// zeroing. Call it shallow: its frame on top of deep ones needs a 32 KiB
// stack.
//
//go:noinline
func GrowStack() {
	var frame [stackReserve]byte
	touchStack(frame[:])
}

// stackReserve is GrowStack's frame: with the frames below it and the
// runtime's guard, a 16 KiB stack.
const stackReserve = 10 << 10

//go:noinline
func touchStack(b []byte) { b[len(b)-1] = 0 }
