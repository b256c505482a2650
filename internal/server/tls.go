package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"os"
	"sync"
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
// change. A reload that fails keeps the certificate in use. With a ticket
// key file, the session ticket keys are reloaded with it.
type Certificate struct {
	certFile, keyFile string
	current           atomic.Pointer[tls.Certificate]
	stamp             atomic.Value // string: the files' sizes and times at the last load

	ticketFile string      // "": Go's own ticket keys, random per process
	ticketKeys [][32]byte  // as last loaded, under mu
	mu         sync.Mutex  // ticketKeys, config
	config     *tls.Config // made by TLSConfig, once
}

// LoadCertificate loads certFile and keyFile (keyFile may be certFile).
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	c := &Certificate{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// SetTicketKeyFile has session tickets encrypted with the keys in file
// (see ParseTicketKeys) from now on, and reloaded with the certificate:
// replicas given the same file resume each other's TLS sessions.
func (c *Certificate) SetTicketKeyFile(file string) error {
	keys, err := loadTicketKeys(file)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ticketFile, c.ticketKeys = file, keys
	if c.config != nil {
		c.config.SetSessionTicketKeys(keys)
	}
	c.stamp.Store(c.fileStamp())
	return nil
}

// Reload reads the files again: the certificate and key, and the ticket
// keys if set; if one fails, none changes.
func (c *Certificate) Reload() error {
	stamp := c.fileStamp()
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("load certificate %s: %w", c.certFile, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ticketFile != "" {
		keys, err := loadTicketKeys(c.ticketFile)
		if err != nil {
			return err
		}
		c.ticketKeys = keys
		if c.config != nil {
			c.config.SetSessionTicketKeys(keys)
		}
	}
	c.current.Store(&cert)
	c.stamp.Store(stamp)
	return nil
}

// A ticket key file holds one key per line, each 32 random bytes in
// base64 (`openssl rand -base64 32`); blank lines and lines starting with
// '#' are ignored. The first key encrypts new tickets; every key decrypts,
// so a key can be rotated in by adding it at the top, and out once
// tickets made with it have expired (7 days).
func ParseTicketKeys(data []byte) ([][32]byte, error) {
	var keys [][32]byte
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(string(line))
		if err != nil || len(b) != 32 {
			return nil, fmt.Errorf("line %d: not a key (32 bytes in base64, as openssl rand -base64 32 prints)", i+1)
		}
		keys = append(keys, [32]byte(b))
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no key (one per line, 32 bytes in base64, as openssl rand -base64 32 prints)")
	}
	return keys, nil
}

func loadTicketKeys(file string) ([][32]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("ticket keys: %w", err)
	}
	keys, err := ParseTicketKeys(data)
	if err != nil {
		return nil, fmt.Errorf("ticket keys %s: %w", file, err)
	}
	return keys, nil
}

func (c *Certificate) fileStamp() string {
	var s string
	for _, f := range []string{c.certFile, c.keyFile, c.ticketFile} {
		if f == "" {
			continue
		}
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
// suites, the current certificate at every handshake, Go's key exchanges
// (X25519MLKEM768 first, then X25519, P-256...) and session tickets for
// resumption: with Go's own keys (random per process, rotated daily) or
// the ticket key file's. Every call returns the same configuration.
func (c *Certificate) TLSConfig() *tls.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.config == nil {
		c.config = &tls.Config{
			MinVersion:   tls.VersionTLS12,
			CipherSuites: modernCiphers,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return c.current.Load(), nil
			},
		}
		if c.ticketKeys != nil {
			c.config.SetSessionTicketKeys(c.ticketKeys)
		}
	}
	return c.config
}
