//go:build !linux

package server

import "net"

// peekFirst: elsewhere the caller reads the first byte and gives it back.
func peekFirst(net.Conn) (byte, bool, error) { return 0, false, nil }
