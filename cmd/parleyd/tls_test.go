package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (string, string, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "parleyd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// TestTLS: with a certificate the relay speaks only TLS 1.2+ with
// forward-secret AEAD suites, and every answer carries HSTS.
func TestTLS(t *testing.T) {
	cert, key, pool := selfSigned(t)
	p := start(t, nil, "--data-dir", t.TempDir(), "--tls-cert", cert, "--tls-key", key)
	addr := strings.TrimPrefix(p.base, "http://")
	url := "https://" + addr + "/healthz"
	get := func(c *tls.Config) (*http.Response, error) {
		c.RootCAs = pool
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: c}, Timeout: 10 * time.Second}
		return client.Get(url)
	}
	for name, c := range map[string]*tls.Config{
		"TLS 1.3":                {MinVersion: tls.VersionTLS13},
		"TLS 1.2 with ECDHE-GCM": {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}},
	} {
		resp, err := get(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Strict-Transport-Security") != hstsValue {
			t.Errorf("%s: %d, HSTS %q", name, resp.StatusCode, resp.Header.Get("Strict-Transport-Security"))
		}
	}
	for name, c := range map[string]*tls.Config{
		"TLS 1.1":            {MaxVersion: tls.VersionTLS11},
		"TLS 1.0":            {MaxVersion: tls.VersionTLS10},
		"TLS 1.2 CBC suite":  {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}},
		"TLS 1.2 without FS": {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}},
	} {
		if resp, err := get(c); err == nil {
			resp.Body.Close()
			t.Errorf("%s: the relay accepted it", name)
		}
	}
	// Plain HTTP on the TLS port gets no API.
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		if resp.StatusCode == 200 {
			t.Error("plain HTTP served on the TLS listener")
		}
		resp.Body.Close()
	}
}

func TestTLSConfigErrors(t *testing.T) {
	cert, _, _ := selfSigned(t)
	for name, args := range map[string][]string{
		"cert without key":  {"--tls-cert", cert},
		"cert and ACME":     {"--tls-cert", cert, "--tls-key", cert, "--acme-domain", "relay.example.org"},
		"ACME HTTP no ACME": {"--acme-http-listen", ":0"},
	} {
		out, err := exec.Command(binary, append([]string{"serve", "--data-dir", t.TempDir()}, args...)...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "invalid configuration") {
			t.Errorf("%s: %v %s", name, err, out)
		}
	}
	// A key that does not match fails at start with a clear message.
	other, otherKey, _ := selfSigned(t)
	_ = other
	out, err := exec.Command(binary, "serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--metrics-listen", "",
		"--tls-cert", cert, "--tls-key", otherKey).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "TLS certificate") {
		t.Errorf("mismatched key: %v %s", err, out)
	}
}
