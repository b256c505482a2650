//go:build !linux

package server

import "net"

// listenConfig leaves TCP keepalive to Go, which sets it on each accepted
// connection (15 s); connections are accepted as soon as they are made.
func listenConfig() net.ListenConfig { return net.ListenConfig{} }

// deferAccept: connections are not deferred here (seconds).
const deferAccept = 0
