package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"
)

// Each key type makes a certificate that loads, is of that key type and
// verifies for the loopback names only.
func TestMakeCertificate(t *testing.T) {
	for keyType, algo := range map[string]x509.PublicKeyAlgorithm{"ecdsa": x509.ECDSA, "rsa": x509.RSA, "ed25519": x509.Ed25519} {
		certPEM, keyPEM, err := MakeCertificate(keyType)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			t.Fatalf("%s: the certificate and key do not load: %v", keyType, err)
		}
		block, _ := pem.Decode(certPEM)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if cert.PublicKeyAlgorithm != algo {
			t.Errorf("%s: a %v key", keyType, cert.PublicKeyAlgorithm)
		}
		roots := x509.NewCertPool()
		roots.AddCert(cert)
		for name, ok := range map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true, "example.org": false, "10.0.0.1": false} {
			_, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name})
			if (err == nil) != ok {
				t.Errorf("%s: verify for %s: %v, want valid=%v", keyType, name, err, ok)
			}
		}
	}
	if _, _, err := MakeCertificate("dsa"); err == nil || !strings.Contains(err.Error(), `key type "dsa"`) {
		t.Errorf("unknown key type: %v", err)
	}
}

// Full handshakes never resume; with a session cache, all but each
// worker's first do, and MeasureHandshakes counts them.
func TestHandshakesResume(t *testing.T) {
	certPEM, keyPEM, err := MakeCertificate("ecdsa")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{pair}})) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	defer UseTLS(nil)
	url := []string{"wss://127.0.0.1:" + strings.Split(ln.Addr().String(), ":")[1] + "/"}
	for _, resume := range []bool{false, true} {
		cfg, err := ClientTLS(certPEM, resume, []tls.CurveID{tls.X25519})
		if err != nil {
			t.Fatal(err)
		}
		UseTLS(cfg)
		h := MeasureHandshakes(context.Background(), url, 2, 200*time.Millisecond)
		if h.Errors != 0 || h.Opened < 4 {
			t.Fatalf("resume=%v: %+v", resume, h)
		}
		if resume && h.Resumed < h.Opened-2 || !resume && h.Resumed != 0 {
			t.Errorf("resume=%v: %d of %d sessions resumed", resume, h.Resumed, h.Opened)
		}
	}
	if _, err := ClientTLS([]byte("no PEM"), false, nil); err == nil {
		t.Error("a CA file without a certificate was accepted")
	}
}
