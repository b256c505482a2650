//go:build !linux

package server

import "net"

// listenConfig leaves TCP keepalive to Go, which sets it on each accepted
// connection (15 s).
func listenConfig() net.ListenConfig { return net.ListenConfig{} }
