package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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
		client := &acme.Client{DirectoryURL: cfg.ACMEDirectory}
		if client.DirectoryURL == "" {
			client.DirectoryURL = autocert.DefaultACMEDirectory
		}
		if cfg.ACMERoots != nil {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = &tls.Config{RootCAs: cfg.ACMERoots, MinVersion: tls.VersionTLS12}
			client.HTTPClient = &http.Client{Transport: tr}
		}
		m := &autocert.Manager{
			Prompt:      autocert.AcceptTOS,
			Cache:       certLog{Cache: autocert.DirCache(dir), log: log, renewBefore: cfg.ACMERenewBefore},
			HostPolicy:  autocert.HostWhitelist(cfg.ACMEDomains...),
			Email:       cfg.ACMEEmail,
			Client:      client,
			RenewBefore: cfg.ACMERenewBefore,
		}
		c := tlsConfig()
		c.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, err := m.GetCertificate(hello)
			if err != nil {
				// net/http logs it as a TLS handshake error; say it is ACME's.
				err = fmt.Errorf("no ACME certificate for %q (directory %s): %w", hello.ServerName, client.DirectoryURL, err)
				if errors.As(err, new(x509.UnknownAuthorityError)) {
					err = fmt.Errorf("%w (a private ACME CA's certificate is trusted with --acme-ca-file)", err)
				}
			}
			return cert, err
		}
		c.NextProtos = []string{"h2", "http/1.1", acme.ALPNProto}
		return c, m, nil
	}
	return nil, nil, nil
}

// acmeChallenges answers ACME HTTP-01 challenges for m and redirects every
// other request to HTTPS. autocert checks the Host header, port included,
// against the domains, so a CA validating on a port other than 80 (Pebble,
// a private CA configured so) would get 403: the port is dropped first.
func acmeChallenges(m *autocert.Manager) http.Handler {
	h := m.HTTPHandler(nil)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if host, _, err := net.SplitHostPort(r.Host); err == nil {
			r = r.Clone(r.Context())
			r.Host = host
		}
		h.ServeHTTP(w, r)
	})
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
	if c.ACMECAFile != "" && len(c.ACMEDomains) == 0 {
		errs = append(errs, errors.New("--acme-ca-file needs --acme-domain"))
	}
	// autocert does not refuse what it cannot honour: it treats a negative
	// RenewBefore as unset and cuts a longer one to 30 days, without a word.
	switch r := c.ACMERenewBefore; {
	case r < 0:
		errs = append(errs, fmt.Errorf("--acme-renew-before %v: must not be negative (autocert would silently use its default instead; 0 asks for that default, a third of the certificate's lifetime)", r))
	case r > 0 && r < minRenewBefore:
		errs = append(errs, fmt.Errorf("--acme-renew-before %v: must be 0 or at least %v (obtaining a certificate takes the CA seconds to minutes, so less leaves no time to renew before expiry)", r, minRenewBefore))
	case r > maxRenewBefore:
		errs = append(errs, fmt.Errorf("--acme-renew-before %v: must be at most %v (autocert silently renews no earlier than 30 days before expiry)", r, maxRenewBefore))
	}
	return errs
}

// The range of --acme-renew-before (0 aside): autocert uses at most 30 days.
const (
	minRenewBefore = time.Minute
	maxRenewBefore = 30 * 24 * time.Hour
)

// certLog is the ACME certificate cache that logs each certificate autocert
// stores in it, the first for a domain and every renewal, and reports an
// error when the CA issues certificates that live no longer than
// --acme-renew-before: autocert then renews each as soon as it has it, again
// and again.
type certLog struct {
	autocert.Cache
	log         *slog.Logger
	renewBefore time.Duration
}

// Put stores data and logs the certificate in it, if any: not the
// account key, the challenge certificates (NAME+token) or HTTP-01 tokens.
// Only the certificate is read; the private key beside it is never logged.
func (c certLog) Put(ctx context.Context, name string, data []byte) error {
	if err := c.Cache.Put(ctx, name, data); err != nil {
		return err
	}
	if strings.HasSuffix(name, "+token") {
		return nil
	}
	for rest := data; len(rest) > 0; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		leaf, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil // autocert wrote it; it reports its own parse errors
		}
		lifetime := leaf.NotAfter.Sub(leaf.NotBefore)
		c.log.Info("ACME certificate stored", "name", name, "serial", leaf.SerialNumber.Text(16),
			"not_after", leaf.NotAfter.UTC(), "issuer", leaf.Issuer.CommonName)
		if c.renewBefore >= lifetime {
			c.log.Error("the ACME CA issues certificates valid no longer than --acme-renew-before, so each is renewed as soon as it is issued, again and again until the CA's rate limits stop it: lower --acme-renew-before",
				"name", name, "lifetime", lifetime.String(), "renew_before", c.renewBefore.String())
		}
		return nil
	}
	return nil
}
