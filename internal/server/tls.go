package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// modernCiphers are the TLS 1.2 suites offered: forward secrecy and AEAD
// only. TLS 1.3's suites are all modern and not configurable.
var modernCiphers = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Certificate serves the listener's certificate and reloads it from its
// files without a restart: on Reload (SIGHUP) or when Watch sees the files
// change. A reload that fails keeps the certificate in use.
type Certificate struct {
	certFile, keyFile string
	current           atomic.Pointer[tls.Certificate]
	stamp             atomic.Value // string: the files' sizes and times at the last load
}

// LoadCertificate loads certFile and keyFile (keyFile may be certFile).
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	c := &Certificate{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again.
func (c *Certificate) Reload() error {
	stamp := c.fileStamp()
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("load certificate %s: %w", c.certFile, err)
	}
	c.current.Store(&cert)
	c.stamp.Store(stamp)
	return nil
}

func (c *Certificate) fileStamp() string {
	var s string
	for _, f := range []string{c.certFile, c.keyFile} {
		if st, err := os.Stat(f); err == nil {
			s += fmt.Sprintf("%d/%d;", st.Size(), st.ModTime().UnixNano())
		}
	}
	return s
}

// Watch reloads when the files change, checking every interval, until ctx
// ends; failures are reported to onError and retried at the next change.
func (c *Certificate) Watch(ctx context.Context, interval time.Duration, onReload func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s := c.fileStamp(); s != c.stamp.Load() {
				err := c.Reload()
				if err != nil {
					c.stamp.Store(s) // do not retry until the files change again
				}
				onReload(err)
			}
		}
	}
}

// TLSConfig is the listener's TLS configuration: TLS 1.2 or newer, modern
// suites, the current certificate at every handshake.
func (c *Certificate) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: modernCiphers,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.current.Load(), nil
		},
	}
}
