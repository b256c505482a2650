package proxy

import (
	"net"

	"golang.org/x/sys/unix"
)

// bytesAcked reports how many bytes the peer of TCP connection c has
// acknowledged: what it took, however far a write of the proxy's is from
// done. false: c is not TCP (a Unix socket, a pipe).
func bytesAcked(c net.Conn) (int64, bool) {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn() // TLS: its TCP connection
	}
	rc := rawConn(c)
	if rc == nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var infoErr error
	if err := rc.Control(func(fd uintptr) {
		info, infoErr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || infoErr != nil {
		return 0, false
	}
	return int64(info.Bytes_acked), true
}
