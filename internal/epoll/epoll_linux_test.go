package epoll

import (
	"syscall"
	"testing"
)

// An event carries its 64-bit id whole, and the wake pipe reports WakeID
// until drained.
func TestIDsAndWake(t *testing.T) {
	e, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	const id = 1<<40 | 0xfffffffe
	if err := e.Ctl(syscall.EPOLL_CTL_ADD, fds[0], syscall.EPOLLIN, id); err != nil {
		t.Fatal(err)
	}
	wait := func() []uint64 {
		n, err := syscall.EpollWait(e.FD, e.Events[:], 0)
		if err != nil {
			t.Fatal(err)
		}
		var ids []uint64
		for i := range e.Events[:n] {
			ids = append(ids, ID(&e.Events[i]))
		}
		return ids
	}
	if ids := wait(); len(ids) != 0 {
		t.Fatalf("ready before anything happened: %v", ids)
	}
	syscall.Write(fds[1], []byte{1})
	if ids := wait(); len(ids) != 1 || ids[0] != id {
		t.Fatalf("ready %x, want %x", ids, uint64(id))
	}
	e.Remove(fds[0])
	e.Interrupt()
	if ids := wait(); len(ids) != 1 || ids[0] != WakeID {
		t.Fatalf("after Interrupt: %v", ids)
	}
	e.Drain()
	if ids := wait(); len(ids) != 0 {
		t.Fatalf("after Drain: %v", ids)
	}
}
