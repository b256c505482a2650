package websocket

import "testing"

// BenchmarkMask masks a bulk chunk's payload, as a relay does for every
// 64 KiB a client sends.
func BenchmarkMask(b *testing.B) {
	p := make([]byte, 64<<10)
	key := [4]byte{1, 2, 3, 4}
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		mask(key, 1, p)
	}
}
