package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// serial returns the serial number of the certificate a TLS client sees.
func serial(t *testing.T, addr string, cfg *tls.Config) (string, error) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

// handshakeServer completes TLS handshakes with c's configuration and
// hangs up, until the test ends.
func handshakeServer(t *testing.T, c *Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", c.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { conn.(*tls.Conn).Handshake(); conn.Close() }()
		}
	}()
	return ln.Addr().String()
}

func TestCertificateReload(t *testing.T) {
	certA, keyA, _ := testenv.SelfSignedCert(t)
	certB, keyB, _ := testenv.SelfSignedCert(t)
	dir := t.TempDir()
	cert, key := dir+"/cert.pem", dir+"/key.pem"
	testenv.CopyFile(t, certA, cert)
	testenv.CopyFile(t, keyA, key)
	c, err := LoadCertificate(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	addr := handshakeServer(t, c)
	client := &tls.Config{InsecureSkipVerify: true}
	first, err := serial(t, addr, client)
	if err != nil {
		t.Fatal(err)
	}

	// A broken file keeps the certificate in use.
	os.WriteFile(cert, []byte("garbage"), 0o600)
	if err := c.Reload(); err == nil {
		t.Fatal("reload of a broken certificate succeeded")
	}
	if s, _ := serial(t, addr, client); s != first {
		t.Fatal("a failed reload changed the certificate")
	}

	// New files are picked up by the watcher.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reloaded := make(chan error, 4)
	go c.Watch(ctx, 20*time.Millisecond, func(err error) { reloaded <- err })
	time.Sleep(30 * time.Millisecond)
	testenv.CopyFile(t, certB, cert)
	testenv.CopyFile(t, keyB, key)
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-reloaded:
			if err != nil {
				continue // caught the files half-written
			}
			if s, _ := serial(t, addr, client); s == first {
				t.Fatal("watcher reloaded but the old certificate is served")
			}
			return
		case <-deadline:
			t.Fatal("the watcher did not reload new files")
		}
	}
}

func TestTLSVersionsAndCiphers(t *testing.T) {
	certFile, keyFile, _ := testenv.SelfSignedCert(t)
	c, err := LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := handshakeServer(t, c)
	cases := []struct {
		name string
		cfg  *tls.Config
		ok   bool
	}{
		{"TLS 1.3", &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}, true},
		{"TLS 1.2 AEAD", &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}, true},
		{"TLS 1.1", &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, false},
		{"TLS 1.2 CBC only", &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}}, false},
	}
	for _, tc := range cases {
		_, err := serial(t, addr, tc.cfg)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestParseTicketKeys(t *testing.T) {
	key := func(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) }
	for _, c := range []struct {
		name, data string
		keys       []byte // first byte of each key, in order
		err        string
	}{
		{"one", key(1) + "\n", []byte{1}, ""},
		{"rotation, comments, blank lines, CRLF", "# new\r\n" + key(2) + "\r\n\n# old\n  " + key(1) + "  \n", []byte{2, 1}, ""},
		{"no trailing newline", key(3), []byte{3}, ""},
		{"empty", "", nil, "no key"},
		{"comments only", "# nothing\n\n", nil, "no key"},
		{"short key", key(1) + "\n" + base64.StdEncoding.EncodeToString(make([]byte, 16)) + "\n", nil, "line 2: not a key"},
		{"long key", base64.StdEncoding.EncodeToString(make([]byte, 48)), nil, "line 1: not a key"},
		{"not base64", "not a key at all, but as long as one is.\n", nil, "line 1: not a key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			keys, err := ParseTicketKeys([]byte(c.data))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				for _, line := range strings.Split(c.data, "\n") {
					if line = strings.TrimSpace(line); len(line) >= 8 && strings.Contains(err.Error(), line) {
						t.Fatalf("error %q shows the file's contents", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != len(c.keys) {
				t.Fatalf("%d keys, want %d", len(keys), len(c.keys))
			}
			for i, k := range keys {
				if k != [32]byte(bytes.Repeat([]byte{c.keys[i]}, 32)) {
					t.Errorf("key %d is not the file's", i)
				}
			}
		})
	}
}

// resumes reports whether a client holding a session ticket from one
// server resumes its TLS session at another (or the same) address.
func resumes(t *testing.T, pool *x509.CertPool, from, to string) bool {
	t.Helper()
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", ClientSessionCache: tls.NewLRUClientSessionCache(1)}
	dial := func(addr string) bool {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// TLS 1.3 tickets come after the handshake: read until the
		// server hangs up, which takes them in.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 1))
		return c.ConnectionState().DidResume
	}
	if dial(from) {
		t.Fatal("the first handshake resumed")
	}
	return dial(to)
}

// Replicas given the same ticket key file resume each other's TLS
// sessions; without one, each resumes only its own. A reload takes in a
// rotated file, whose old key still decrypts.
func TestTicketKeyFile(t *testing.T) {
	certFile, keyFile, pool := testenv.SelfSignedCert(t)
	dir := t.TempDir()
	ticketFile := filepath.Join(dir, "tickets")
	key := func(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) + "\n" }
	os.WriteFile(ticketFile, []byte(key(1)), 0o600)
	replica := func(tickets string) (*Certificate, string) {
		c, err := LoadCertificate(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		if tickets != "" {
			if err := c.SetTicketKeyFile(tickets); err != nil {
				t.Fatal(err)
			}
		}
		return c, handshakeServer(t, c)
	}
	_, a := replica(ticketFile)
	cb, b := replica(ticketFile)
	_, own1 := replica("")
	_, own2 := replica("")
	if !resumes(t, pool, a, b) {
		t.Error("a replica with the same ticket keys did not resume another's session")
	}
	if !resumes(t, pool, own1, own1) {
		t.Error("a replica with its own ticket keys did not resume its own session")
	}
	if resumes(t, pool, own1, own2) {
		t.Error("replicas with their own ticket keys resumed each other's sessions")
	}

	// Rotation: b gets a new first key, a still has only the old one. a's
	// tickets still open at b (the old key decrypts there); b's new ones
	// do not at a until a reloads too.
	os.WriteFile(ticketFile, []byte(key(2)+key(1)), 0o600)
	if err := cb.Reload(); err != nil {
		t.Fatal(err)
	}
	if !resumes(t, pool, a, b) {
		t.Error("after rotation, a ticket of the old key did not resume")
	}
	if resumes(t, pool, b, a) {
		t.Error("a ticket of the new key resumed where only the old key is known")
	}

	// A broken file fails the reload and keeps the keys in use.
	os.WriteFile(ticketFile, []byte("garbage\n"), 0o600)
	if err := cb.Reload(); err == nil || !strings.Contains(err.Error(), "line 1: not a key") {
		t.Fatalf("reload of a broken ticket key file: %v", err)
	}
	if !resumes(t, pool, b, b) {
		t.Error("a failed reload lost the ticket keys")
	}
	if err := cb.SetTicketKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing ticket key file was accepted")
	}
}
