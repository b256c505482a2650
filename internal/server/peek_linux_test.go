package server

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/proxyproto"
	"github.com/zun-wsproxy/zun-wsproxy/internal/rawsock"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// peekFirst tells what the first byte is and leaves it for the reader;
// it waits with the read deadline and reports the end of the stream.
func TestPeekFirst(t *testing.T) {
	t.Run("byte waiting", func(t *testing.T) {
		dialed, accepted := testenv.SocketPair(t, "tcp")
		defer dialed.Close()
		defer accepted.Close()
		dialed.Write([]byte("GET"))
		first, ok, err := peekFirst(accepted)
		if !ok || err != nil || first != 'G' {
			t.Fatalf("peekFirst = %q, %v, %v; want 'G', true, nil", first, ok, err)
		}
		buf := make([]byte, 3)
		if _, err := io.ReadFull(accepted, buf); err != nil || string(buf) != "GET" {
			t.Fatalf("read after the peek: %q, %v; want the byte still there", buf, err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		dialed, accepted := testenv.SocketPair(t, "tcp")
		defer dialed.Close()
		defer accepted.Close()
		accepted.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, ok, err := peekFirst(accepted); !ok || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("peekFirst on a silent peer: ok %v, error %v; want the deadline's", ok, err)
		}
	})
	t.Run("end of stream", func(t *testing.T) {
		dialed, accepted := testenv.SocketPair(t, "tcp")
		defer accepted.Close()
		dialed.Close()
		if _, ok, err := peekFirst(accepted); !ok || err != io.EOF {
			t.Fatalf("peekFirst after the peer closed: ok %v, error %v; want io.EOF", ok, err)
		}
	})
	t.Run("no socket", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		if _, ok, _ := peekFirst(a); ok {
			t.Fatal("peekFirst on a pipe: ok; want the caller to read the byte")
		}
	})
}

// A TLS connection's records are read from and written to the socket with
// raw system calls (no wrapper giving back a sniffed byte), with or
// without a PROXY header; a plain one on the same port is the socket.
func TestListenerTLSOverRawSocket(t *testing.T) {
	certFile, keyFile, pool := testenv.SelfSignedCert(t)
	cert, err := LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, proxied := range []bool{false, true} {
		opts := ListenOptions{TLS: cert.TLSConfig()}
		if proxied {
			opts.ProxyProtocol, opts.Trusted = true, NewTrustedProxies(prefixes("127.0.0.1/32"))
		}
		ln, err := Listen("127.0.0.1:0", opts)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		dial := func() net.Conn {
			t.Helper()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			if proxied {
				h := proxyproto.Header{Version: 2, Command: proxyproto.Proxy, Transport: proxyproto.TCP4,
					Source: netip.MustParseAddrPort("192.0.2.7:4711"), Destination: netip.MustParseAddrPort("192.0.2.1:443")}
				c.Write(h.Append(nil))
			}
			return c
		}
		c := dial()
		client := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
		done := make(chan error, 1)
		go func() {
			_, err := client.Write([]byte("ping"))
			done <- err
		}()
		accepted, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		tc, ok := accepted.(*tls.Conn)
		if !ok {
			t.Fatalf("proxied=%v: accepted a %T, want a TLS connection", proxied, accepted)
		}
		under := tc.NetConn()
		if p, ok := under.(*proxiedConn); ok {
			if p.RemoteAddr().String() != "192.0.2.7:4711" {
				t.Errorf("proxied: remote address %s, want the header's", p.RemoteAddr())
			}
			under = p.Conn
		} else if proxied {
			t.Errorf("proxied: under TLS a %T, want the header's name on it", under)
		}
		if _, ok := under.(*rawsock.Conn); !ok {
			t.Errorf("proxied=%v: under TLS a %T, want the socket with raw reads and writes", proxied, under)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(tc, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("proxied=%v: read %q, %v", proxied, buf, err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, err := tc.Write([]byte("pong")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "pong" {
			t.Fatalf("proxied=%v: client read %q, %v", proxied, buf, err)
		}
		client.Close()
		tc.Close()

		plain := dial()
		plain.Write([]byte("G"))
		accepted, err = ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if !proxied {
			if _, ok := accepted.(*rawsock.Conn); !ok {
				t.Errorf("plain: accepted a %T, want the socket with raw reads and writes", accepted)
			}
		}
		if _, err := io.ReadFull(accepted, buf[:1]); err != nil || buf[0] != 'G' {
			t.Errorf("proxied=%v plain: first byte %q, %v", proxied, buf[:1], err)
		}
		plain.Close()
		accepted.Close()
	}
}
