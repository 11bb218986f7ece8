package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// hstsValue tells browsers and HTTP clients to use only HTTPS for two years.
const hstsValue = "max-age=63072000; includeSubDomains"

// tlsConfig is the relay's TLS policy: TLS 1.2 at least, and for 1.2 only
// forward-secret AEAD suites (TLS 1.3's suites are all of that kind).
func tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256},
	}
}

// serverTLS returns the TLS configuration the settings ask for (nil: plain
// HTTP) and, for ACME, the handler that answers HTTP-01 challenges.
func serverTLS(cfg *config, log *slog.Logger) (*tls.Config, *autocert.Manager, error) {
	switch {
	case cfg.TLSCert != "":
		c := tlsConfig()
		kp := &keyPair{cert: cfg.TLSCert, key: cfg.TLSKey, log: log}
		if _, err := kp.load(); err != nil {
			return nil, nil, err
		}
		c.GetCertificate = kp.get
		return c, nil, nil
	case len(cfg.ACMEDomains) > 0:
		dir := cfg.ACMECacheDir
		if dir == "" {
			dir = filepath.Join(cfg.DataDir, "acme")
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("ACME cache: %w", err)
		}
		m := &autocert.Manager{
			Prompt:     autocert.AcceptTOS,
			Cache:      autocert.DirCache(dir),
			HostPolicy: autocert.HostWhitelist(cfg.ACMEDomains...),
			Email:      cfg.ACMEEmail,
		}
		if cfg.ACMEDirectory != "" {
			m.Client = &acme.Client{DirectoryURL: cfg.ACMEDirectory}
		}
		c := tlsConfig()
		c.GetCertificate = m.GetCertificate
		c.NextProtos = []string{"h2", "http/1.1", acme.ALPNProto}
		return c, m, nil
	}
	return nil, nil, nil
}

// keyPair serves a certificate from files and reloads them when they
// change, so a renewed certificate is used without a restart.
type keyPair struct {
	cert, key string
	log       *slog.Logger

	mu      sync.Mutex
	current *tls.Certificate
	mtime   time.Time
	checked time.Time
}

func (k *keyPair) load() (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	return &c, nil
}

func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.current != nil && time.Since(k.checked) < 10*time.Second {
		return k.current, nil
	}
	k.checked = time.Now()
	fi, err := os.Stat(k.cert)
	if err == nil && k.current != nil && !fi.ModTime().After(k.mtime) {
		return k.current, nil
	}
	c, lerr := k.load()
	if lerr != nil {
		if k.current != nil {
			k.log.Warn("cannot reload the TLS certificate; keeping the current one", "err", lerr)
			return k.current, nil
		}
		return nil, lerr
	}
	if err == nil {
		k.mtime = fi.ModTime()
	}
	k.current = c
	return c, nil
}

// hsts adds the Strict-Transport-Security header to every answer.
func hsts(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", hstsValue)
		h.ServeHTTP(w, r)
	})
}

func validateTLS(c *config) []error {
	var errs []error
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.TLSCert != "" && len(c.ACMEDomains) > 0 {
		errs = append(errs, errors.New("use either --tls-cert/--tls-key or --acme-domain, not both"))
	}
	if c.ACMEHTTPListen != "" && len(c.ACMEDomains) == 0 {
		errs = append(errs, errors.New("--acme-http-listen needs --acme-domain"))
	}
	return errs
}
