package bench

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// KeyTypes are the certificate keys MakeCertificate makes.
var KeyTypes = []string{"ecdsa", "rsa", "ed25519"}

// MakeCertificate makes a self-signed certificate for loopback names only
// (localhost, 127.0.0.1, ::1), valid for a day, with a key of keyType:
// "ecdsa" (P-256), "rsa" (2048 bits) or "ed25519". It returns both PEM
// blocks.
func MakeCertificate(keyType string) (certPEM, keyPEM []byte, err error) {
	var key crypto.Signer
	switch keyType {
	case "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, nil, fmt.Errorf("key type %q: want one of %v", keyType, KeyTypes)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("generate %s key: %w", keyType, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // its own root: clients trust it as their CA
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if keyType == "rsa" {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal %s key: %w", keyType, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// ClientTLS is the TLS configuration of a client that trusts the
// certificates in caPEM and, with resume, keeps session tickets to resume
// TLS sessions as browsers do; without, every handshake is a full one.
// curves are the key exchanges it offers (nil: Go's default, which puts
// the post-quantum hybrid X25519MLKEM768 first, as current browsers do).
func ClientTLS(caPEM []byte, resume bool, curves []tls.CurveID) (*tls.Config, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in the CA file")
	}
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, CurvePreferences: curves}
	if resume {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	} else {
		cfg.SessionTicketsDisabled = true
	}
	return cfg, nil
}
