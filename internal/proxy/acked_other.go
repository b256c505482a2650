//go:build !linux

package proxy

import "net"

// bytesAcked is known on Linux only.
func bytesAcked(net.Conn) (int64, bool) { return 0, false }
