package proxy

import (
	"net"
	"sync"
	"time"
)

// deadlines is the one owner of a connection's deadlines. While the
// session runs, its pumps move them through it: the idle read deadline
// that parks a direction (or bounds a frame's progress), and the bound of
// each write (the Writer's timeout, a heartbeat's). Closing sets the final
// ones with end, and from then on nothing else moves them: a read or a
// write that begins after the session began closing waits no longer than
// closing allows, whoever begins it.
type deadlines struct {
	conn net.Conn

	mu    sync.Mutex // guards final and every deadline change on conn
	final bool       // end was called
}

// SetReadDeadline sets conn's read deadline, unless closing set it.
func (d *deadlines) SetReadDeadline(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.final {
		return nil
	}
	return d.conn.SetReadDeadline(t)
}

// SetWriteDeadline sets conn's write deadline, unless closing set it.
func (d *deadlines) SetWriteDeadline(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.final {
		return nil
	}
	return d.conn.SetWriteDeadline(t)
}

// ended reports whether the deadlines are the closing ones (end was
// called): a deadline that expires from now on is not an idle one.
func (d *deadlines) ended() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.final
}

// end sets the closing deadlines, for good (only end changes them again).
// They also bound reads and writes already under way.
func (d *deadlines) end(read, write time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.final = true
	d.conn.SetReadDeadline(read)
	d.conn.SetWriteDeadline(write)
}

// lingerClose closes the connection after a close frame went out on it,
// once the session's pumps have ended: it sends FIN first and discards
// what the client still sends until it closes too. Closing with unread
// input would make the kernel send a reset, which can destroy the close
// frame (and the output before it) before the client reads it. A client
// that is still sending is slow to see the close, not gone: the wait goes
// on while bytes keep coming, each read within step, for at most 10 steps
// in all (as nginx's lingering close).
func (d *deadlines) lingerClose(step time.Duration) {
	c := d.conn
	defer c.Close()
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() != nil {
			return
		}
	}
	limit := time.Now().Add(10 * step)
	var discard [2048]byte
	for {
		next := time.Now().Add(step)
		if next.After(limit) {
			next = limit
		}
		d.end(next, time.Now())
		if _, err := c.Read(discard[:]); err != nil {
			return
		}
	}
}
