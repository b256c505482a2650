package server

import (
	"context"
	"crypto/tls"
	"os"
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
