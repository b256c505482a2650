package server

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
)

// A request's client is the address that drives the failed-authorization
// limit and that logs and audit records name. It is the connection's peer
// unless the peer is a trusted proxy (trusted_proxies) that names the
// client:
//
//   - by a PROXY protocol header (proxy_protocol), read by the listener:
//     the header's source becomes the connection's remote address;
//   - by X-Forwarded-For, walked by forwardedFor from that address.
//
// What an untrusted peer says in either is not believed, and nothing of
// X-Forwarded-For is passed on: the requests to Docker carry none.

// TrustedProxies is the set of peers believed when they name the client:
// [websocket_proxy] trusted_proxies. The server and its listener share
// one, and Set changes it for both (on SIGHUP). A nil *TrustedProxies
// trusts no one.
type TrustedProxies struct {
	list atomic.Pointer[[]netip.Prefix]
}

// NewTrustedProxies returns a set holding list.
func NewTrustedProxies(list []netip.Prefix) *TrustedProxies {
	t := &TrustedProxies{}
	t.Set(list)
	return t
}

// Set replaces the set's prefixes with list.
func (t *TrustedProxies) Set(list []netip.Prefix) {
	list = append([]netip.Prefix(nil), list...)
	t.list.Store(&list)
}

// Contains reports whether a is in the set.
func (t *TrustedProxies) Contains(a netip.Addr) bool {
	if t == nil {
		return false
	}
	a = a.Unmap().WithZone("")
	for _, p := range *t.list.Load() {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// empty reports whether the set trusts no one.
func (t *TrustedProxies) empty() bool { return t == nil || len(*t.list.Load()) == 0 }

// containsPeer reports whether a connection's remote address is in the
// set.
func (t *TrustedProxies) containsPeer(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && t.Contains(tcp.AddrPort().Addr())
}

// client is who a request comes from.
type client struct {
	addr netip.Addr // the limiter's key; invalid when the peer is not IP
	text string     // for logs and audit records: address and port, when known
}

// key is the client's key in the failed-authorization limiter: its IPv4
// address, or its IPv6 address's /64 (a host or site gets a /64 at
// least, and may send from any address in it); the zero Prefix for a
// peer that is not IP (all such share one count).
func (c client) key() netip.Prefix {
	if !c.addr.IsValid() {
		return netip.Prefix{}
	}
	a := c.addr.Unmap()
	bits := 64
	if a.Is4() {
		bits = 32
	}
	p, _ := a.Prefix(bits)
	return p
}

// clientOf finds a request's client: its peer, or the client a trusted
// peer names in X-Forwarded-For.
func (s *Server) clientOf(r *http.Request) client {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return client{text: r.RemoteAddr} // not an IP peer
	}
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 && s.trusted.Contains(peer.Addr()) {
		if named, ok := forwardedFor(xff, s.trusted.Contains); ok {
			peer = named
		}
	}
	c := client{addr: peer.Addr(), text: peer.String()}
	if peer.Port() == 0 {
		c.text = peer.Addr().String()
	}
	return c
}

// forwardedProto is the X-Forwarded-Proto the Origin check believes: any
// peer's while trusted_proxies is empty (Zun's proxy believes it from
// anyone), else only a trusted proxy's.
func (s *Server) forwardedProto(r *http.Request) string {
	proto := r.Header.Get("X-Forwarded-Proto")
	if proto == "" || s.trusted.empty() {
		return proto
	}
	if peer, err := netip.ParseAddrPort(r.RemoteAddr); err == nil && s.trusted.Contains(peer.Addr()) {
		return proto
	}
	return ""
}

// forwardedFor walks X-Forwarded-For from its right end to its left, over
// every line of the header in the order received (one list, as if joined
// by commas), and returns the client it names:
//
//   - the first address that is not a trusted proxy; else
//   - on an element that is not an address (empty, "unknown", a host
//     name, garbage), the address to its right, which a trusted proxy
//     wrote; none (ok false) when the rightmost element is malformed; else
//   - when every element is a trusted proxy, the leftmost.
//
// Elements are an IPv4 or IPv6 address, optionally bracketed (IPv6) or
// with a port (1.2.3.4:5, [::1]:5), between optional spaces and tabs;
// IPv4-mapped IPv6 addresses are their IPv4 form; zones are refused.
func forwardedFor(lines []string, trusted func(netip.Addr) bool) (named netip.AddrPort, ok bool) {
	for i := len(lines) - 1; i >= 0; i-- {
		line := lines[i]
		for end := len(line); end >= 0; {
			start := strings.LastIndexByte(line[:end], ',') + 1
			a, valid := parseForwarded(line[start:end])
			if !valid {
				return named, ok
			}
			named, ok = a, true
			if !trusted(a.Addr()) {
				return named, true
			}
			end = start - 1
		}
	}
	return named, ok
}

// parseForwarded parses one X-Forwarded-For element; a port of 0 means
// none was given.
func parseForwarded(s string) (netip.AddrPort, bool) {
	s = strings.Trim(s, " \t")
	var ap netip.AddrPort
	if a, err := netip.ParseAddr(s); err == nil {
		ap = netip.AddrPortFrom(a, 0)
	} else if p, err := netip.ParseAddrPort(s); err == nil {
		ap = p
	} else if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil && a.Is6() && len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		ap = netip.AddrPortFrom(a, 0)
	} else {
		return netip.AddrPort{}, false
	}
	if ap.Addr().Zone() != "" {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
