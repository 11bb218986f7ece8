package main_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/bench"
)

// TestPrivateCA: a relay whose certificate a private CA signed is refused
// by default and trusted with --ca-file (or $PARLEY_CA_FILE).
func TestPrivateCA(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "private relay"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	s, err := bench.Spawn(parleydBin, dir, 10, code, nil, "--data-dir", filepath.Join(dir, "data"), "--tls-cert", cert, "--tls-key", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	server := "https://" + strings.TrimPrefix(s.Base, "http://")
	alice := newUser(t, server, 0)
	if _, errs, code := alice.run("", "register"); code != 3 || !strings.Contains(errs, "certificate") {
		t.Fatalf("without --ca-file: exit %d %s", code, errs)
	}
	alice.ok("--ca-file", cert, "register")
	alice.ok("--ca-file", cert, "verify", "135790")
	c := alice.cmd("listDevices")
	c.Env = append(c.Env, "PARLEY_CA_FILE="+cert)
	if out, err := c.CombinedOutput(); err != nil || !strings.Contains(string(out), "Device 1") {
		t.Errorf("with PARLEY_CA_FILE: %v %s", err, out)
	}
	// Waiting forever does not retry what retrying cannot fix.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := alice.cmdContext(ctx, "receive", "--timeout", "-1").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 || ctx.Err() != nil || !strings.Contains(string(out), "certificate") {
		t.Errorf("receive --timeout -1 with an untrusted certificate: %v %s", err, out)
	}
	if _, errs, code := alice.run("", "--ca-file", filepath.Join(dir, "key.pem"), "listDevices"); code != 1 || !strings.Contains(errs, "no PEM certificate") {
		t.Errorf("a --ca-file without a certificate: exit %d %s", code, errs)
	}
}

// TestTLSFrontWithHTTP2: behind a TLS terminator that offers HTTP/2 (as
// HAProxy in deploy/ does), a client trusting a private CA opens its
// WebSocket over HTTP/1.1 after using HTTP/2 for requests.
func TestTLSFrontWithHTTP2(t *testing.T) {
	dir := t.TempDir()
	s, err := bench.Spawn(parleydBin, dir, 10, code, nil, "--data-dir", filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	backend, _ := url.Parse(s.Base)
	front := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(backend))
	front.EnableHTTP2 = true
	front.StartTLS()
	t.Cleanup(front.Close)
	ca := filepath.Join(t.TempDir(), "front.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw}), 0o600)
	t.Setenv("PARLEY_CA_FILE", ca)

	alice, bob := newUser(t, front.URL, 0), newUser(t, front.URL, 1)
	alice.register()
	bob.register()
	alice.ok("send", "-m", "through the front", bob.number)
	if out := bob.ok("receive", "--timeout", "0.2"); !strings.Contains(out, "through the front") {
		t.Errorf("bob received %q", out)
	}
}

// TestProxyErrorPage: an HTML error page from a proxy in front of the
// relay is not printed; the status is named, once.
func TestProxyErrorPage(t *testing.T) {
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "<html><body><h1>503 Service Unavailable</h1>No server is available to handle this request.</body></html>")
	}))
	defer proxy.Close()
	alice := newUser(t, proxy.URL, 0)
	_, errs, code := alice.run("", "register")
	if code != 3 || strings.Contains(errs, "<") || !strings.Contains(errs, "503") || strings.Count(errs, "503") != 1 {
		t.Errorf("exit %d, stderr:\n%s", code, errs)
	}
}
