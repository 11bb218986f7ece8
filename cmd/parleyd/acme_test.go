package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The ACME tests run parleyd against Pebble, Let's Encrypt's ACME server for
// tests, and pebble-challtestsrv as the DNS server Pebble asks, which answers
// every name with 127.0.0.1. scripts/with-pebble installs both and names them
// in PARLEY_TEST_PEBBLE and PARLEY_TEST_CHALLTESTSRV; make test runs it.

// acmeName is the domain parleyd gets certificates for: .test is reserved,
// and only challtestsrv resolves it.
const acmeName = "relay.parley.test"

// acmeRig is what the ACME subtests share: Pebble's binary, the DNS server,
// and a throwaway CA that signed the certificate of Pebble's own HTTPS.
type acmeRig struct {
	pebble    string
	dns       string // challtestsrv's DNS address
	caFile    string // the throwaway CA (PEM), for --acme-ca-file
	ca        *x509.CertPool
	cert, key string // Pebble's HTTPS certificate and key files
}

// pebbleCA is one running Pebble.
type pebbleCA struct {
	dir          string // ACME directory URL
	root         *x509.Certificate
	rootFile     string // root (PEM), as parley --ca-file takes it
	intermediate *x509.Certificate
	logs         *logBuffer
}

func TestACME(t *testing.T) {
	rig := newACMERig(t)

	t.Run("TLS-ALPN-01", func(t *testing.T) {
		t.Parallel()
		port := freePort(t)
		p := rig.startPebble(t, freePort(t), port, 0)
		r := p.relay(t, nil, port, "--acme-ca-file", rig.caFile)
		cs, err := handshake(port, p.root)
		if err != nil {
			t.Fatalf("TLS handshake for %s: %v", acmeName, err)
		}
		p.checkIssued(t, cs)
		// The relay's API answers on that certificate, with HSTS.
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool(p.root)},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(port))
			}}}
		resp, err := client.Get("https://" + acmeName + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Strict-Transport-Security") != hstsValue {
			t.Errorf("healthz over the ACME certificate: %d, HSTS %q", resp.StatusCode, resp.Header.Get("Strict-Transport-Security"))
		}
		if !strings.Contains(r.logs.String(), `"msg":"ACME certificate stored","name":"`+acmeName+`"`) {
			t.Error("no log line for the new certificate")
		}
	})

	t.Run("HTTP-01", func(t *testing.T) {
		t.Parallel()
		// Pebble's TLS-ALPN-01 port is closed, so that challenge fails and
		// autocert falls back to HTTP-01 on --acme-http-listen. The CA file
		// comes from the environment this time.
		httpPort, port := freePort(t), freePort(t)
		p := rig.startPebble(t, httpPort, freePort(t), 0)
		p.relay(t, []string{"PARLEY_ACME_CA_FILE=" + rig.caFile}, port, "--acme-http-listen", "127.0.0.1:"+strconv.Itoa(httpPort))
		cs, err := handshake(port, p.root)
		if err != nil {
			t.Fatalf("TLS handshake for %s: %v", acmeName, err)
		}
		p.checkIssued(t, cs)
		// Pebble logs no challenge types: an authorization failed (autocert
		// tries TLS-ALPN-01 first), then it fetched the HTTP-01 token.
		logs := p.logs.String()
		failed := strings.Index(logs, "set INVALID by completed challenge")
		fetched := strings.Index(logs, "Attempting to validate w/ HTTP: http://"+acmeName+":"+strconv.Itoa(httpPort)+"/.well-known/acme-challenge/")
		if failed < 0 || fetched < failed {
			t.Error("Pebble did not fail a challenge and then validate over HTTP-01")
		}
	})

	t.Run("renewal", func(t *testing.T) {
		t.Parallel()
		// Certificates valid for 63 s renewed a minute before expiry: autocert
		// renews 2 s after issuance plus up to 6 s of jitter (a tenth of
		// --acme-renew-before), while the same process keeps serving.
		port := freePort(t)
		p := rig.startPebble(t, freePort(t), port, 63*time.Second)
		r := p.relay(t, nil, port, "--acme-ca-file", rig.caFile, "--acme-renew-before", "1m")
		cs, err := handshake(port, p.root)
		if err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		p.checkIssued(t, cs)
		first := cs.PeerCertificates[0]
		if life := first.NotAfter.Sub(first.NotBefore); life < time.Minute || life > 63*time.Second {
			t.Fatalf("Pebble issued a certificate valid for %v, not about 63 s", life)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			cs, err = handshake(port, p.root)
			if err != nil {
				t.Fatalf("TLS handshake while renewing: %v", err)
			}
			if next := cs.PeerCertificates[0]; next.SerialNumber.Cmp(first.SerialNumber) != 0 {
				if now := time.Now(); !now.Before(first.NotAfter) {
					t.Errorf("renewed only at %v, after the first certificate expired at %v", now, first.NotAfter)
				}
				if !next.NotAfter.After(first.NotAfter) {
					t.Errorf("renewed certificate expires %v, not after the first's %v", next.NotAfter, first.NotAfter)
				}
				p.checkIssued(t, cs)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the certificate (serial %x, valid until %v) was not renewed within 30 s", first.SerialNumber, first.NotAfter)
			}
			time.Sleep(250 * time.Millisecond)
		}
		// One process, started once, obtained both.
		logs := r.logs.String()
		if n := strings.Count(logs, `"msg":"ACME certificate stored"`); n < 2 {
			t.Errorf("%d certificates logged as stored, want the first and its renewal", n)
		}
		if n := strings.Count(logs, `"msg":"parleyd listening"`); n != 1 {
			t.Errorf("parleyd started listening %d times", n)
		}
	})

	t.Run("parley --ca-file", func(t *testing.T) {
		// The CLI trusts a relay whose certificate Pebble issued only when
		// given Pebble's root.
		t.Parallel()
		port := freePort(t)
		p := rig.startPebble(t, freePort(t), port, 0)
		p.relay(t, []string{testNumbers}, port, "--acme-ca-file", rig.caFile)
		if _, err := handshake(port, p.root); err != nil { // the certificate is issued before parley runs
			t.Fatalf("TLS handshake: %v", err)
		}
		parley := buildParley(t)
		// parley resolves names with the system resolver, for which
		// relay.parley.test does not exist (and autocert refuses one-label
		// names such as localhost), so it reaches the relay through an HTTP
		// CONNECT proxy that stands in for DNS; TLS still runs end to end
		// between parley and parleyd, for that name.
		proxy := connectProxy(t, acmeName)
		run := func(args ...string) (string, int) {
			t.Helper()
			cmd := exec.Command(parley, append([]string{"--config", t.TempDir(), "-a", "+15555550100"}, args...)...)
			cmd.Env = append(os.Environ(), "PARLEY_SERVER=https://"+acmeName+":"+strconv.Itoa(port),
				"HTTPS_PROXY="+proxy, "NO_PROXY=", "no_proxy=", "PARLEY_CA_FILE=")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := runBounded(cmd, 30*time.Second)
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return stderr.String(), ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			return stderr.String(), 0
		}
		if errs, code := run("register"); code != 3 || !strings.Contains(errs, "certificate") {
			t.Errorf("parley without --ca-file: exit %d, want 3 and a certificate error:\n%s", code, errs)
		}
		if errs, code := run("--ca-file", p.rootFile, "register"); code != 0 {
			t.Errorf("parley --ca-file PEBBLE-ROOT register: exit %d\n%s", code, errs)
		}
	})

	t.Run("untrusted ACME directory", func(t *testing.T) {
		t.Parallel()
		// Without --acme-ca-file parleyd does not trust Pebble's HTTPS: the
		// handshake fails at once, and the log says why.
		port := freePort(t)
		p := rig.startPebble(t, freePort(t), port, 0)
		r := p.relay(t, nil, port)
		began := time.Now()
		if _, err := handshake(port, p.root); err == nil {
			t.Fatal("a certificate was served although parleyd cannot trust the ACME directory")
		}
		if d := time.Since(began); d > 10*time.Second {
			t.Errorf("the failed handshake took %v", d)
		}
		waitFor(t, 5*time.Second, "a log line naming the untrusted ACME directory", func() bool {
			return strings.Contains(r.logs.String(), "x509: certificate signed by unknown authority")
		})
		line := grep(r.logs.String(), "unknown authority")
		for _, want := range []string{"TLS handshake error", `no ACME certificate for \"` + acmeName + `\" (directory ` + p.dir + ")", "--acme-ca-file"} {
			if !strings.Contains(line, want) {
				t.Errorf("the log line does not say %s:\n%s", want, line)
			}
		}
	})
}

// TestACMEConfigErrors: a bad --acme-ca-file or --acme-renew-before stops
// parleyd at start, every problem reported at once.
func TestACMEConfigErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600)
	for name, tc := range map[string]struct {
		args []string
		want []string
	}{
		"CA file": {[]string{"--acme-domain", acmeName, "--acme-ca-file", filepath.Join(dir, "missing.pem"), "--acme-renew-before", "30s"},
			[]string{"--acme-ca-file: open " + filepath.Join(dir, "missing.pem"), "--acme-renew-before 30s: must be 0 or at least 1m0s"}},
		"no certificate": {[]string{"--acme-domain", acmeName, "--acme-ca-file", notPEM, "--acme-renew-before", "-1h"},
			[]string{notPEM + " holds no PEM certificate", "--acme-renew-before -1h0m0s: must not be negative"}},
		"without a domain": {[]string{"--acme-ca-file", notPEM, "--acme-renew-before", "721h"},
			[]string{"--acme-ca-file needs --acme-domain", "must be at most 720h0m0s (autocert silently"}},
	} {
		out, err := exec.Command(binary, append([]string{"serve", "--data-dir", t.TempDir()}, tc.args...)...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "invalid configuration") {
			t.Errorf("%s: %v %s", name, err, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s: the errors do not say %q:\n%s", name, w, out)
			}
		}
	}
}

// newACMERig starts pebble-challtestsrv as a DNS server only and makes the
// CA for Pebble's HTTPS, skipping without Pebble (failing under
// PARLEY_TEST_PEBBLE_REQUIRED=1).
func newACMERig(t *testing.T) *acmeRig {
	t.Helper()
	pebble, challtestsrv := os.Getenv("PARLEY_TEST_PEBBLE"), os.Getenv("PARLEY_TEST_CHALLTESTSRV")
	if pebble == "" || challtestsrv == "" {
		if os.Getenv("PARLEY_TEST_PEBBLE_REQUIRED") != "" {
			t.Fatal("PARLEY_TEST_PEBBLE_REQUIRED is set but PARLEY_TEST_PEBBLE or PARLEY_TEST_CHALLTESTSRV is not (scripts/with-pebble sets them)")
		}
		t.Skip("Pebble not installed: run through scripts/with-pebble (make test does)")
	}
	for _, bin := range []string{pebble, challtestsrv} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatal(err) // named but missing: a broken installation, not a skip
		}
	}
	dir := t.TempDir()
	rig := &acmeRig{pebble: pebble, caFile: filepath.Join(dir, "ca.pem"), cert: filepath.Join(dir, "pebble.pem"), key: filepath.Join(dir, "pebble.key")}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "parleyd ACME test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "pebble"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	for path, b := range map[string]*pem.Block{rig.caFile: {Type: "CERTIFICATE", Bytes: caDER},
		rig.cert: {Type: "CERTIFICATE", Bytes: der}, rig.key: {Type: "EC PRIVATE KEY", Bytes: kb}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rig.ca = pool(caCert)

	dnsPort := freeDNSPort(t)
	rig.dns = "127.0.0.1:" + strconv.Itoa(dnsPort)
	startProcess(t, "pebble-challtestsrv", nil, challtestsrv, "-dnsserver", rig.dns,
		"-management", "127.0.0.1:"+strconv.Itoa(freePort(t)), "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	waitFor(t, 15*time.Second, "pebble-challtestsrv's DNS server", func() bool {
		c, err := net.DialTimeout("tcp", rig.dns, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return rig
}

// startPebble runs a Pebble that validates HTTP-01 on httpPort and
// TLS-ALPN-01 on tlsPort and issues certificates valid for validity (0: its
// default, 90 days), and fetches its root and intermediate.
func (rig *acmeRig) startPebble(t *testing.T, httpPort, tlsPort int, validity time.Duration) *pebbleCA {
	t.Helper()
	dir := t.TempDir()
	listen, mgmt := "127.0.0.1:"+strconv.Itoa(freePort(t)), "127.0.0.1:"+strconv.Itoa(freePort(t))
	profile := map[string]any{"description": "parleyd test"}
	if validity > 0 {
		profile["validityPeriod"] = int(validity / time.Second)
	}
	cfg, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": rig.cert, "privateKey": rig.key,
		"httpPort": httpPort, "tlsPort": tlsPort, "keyAlgorithm": "ecdsa",
		// No Retry-After: autocert then polls every second, not every 3 or 5.
		"retryAfter": map[string]int{"authz": 0, "order": 0},
		"profiles":   map[string]any{"default": profile},
	}})
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	// No random validation delays, no rejected nonces, and every order
	// validated again rather than reusing an earlier authorization.
	logs := startProcess(t, "pebble", []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"},
		rig.pebble, "-config", cfgFile, "-dnsserver", rig.dns)
	p := &pebbleCA{dir: "https://" + listen + "/dir", rootFile: filepath.Join(dir, "root.pem"), logs: logs}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: rig.ca}}}
	get := func(url string) ([]byte, error) {
		resp, err := client.Get(url)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		return b, err
	}
	var root, intermediate []byte
	waitFor(t, 15*time.Second, "Pebble's directory, root and intermediate", func() bool {
		_, err := get(p.dir)
		if err == nil {
			if root, err = get("https://" + mgmt + "/roots/0"); err == nil {
				intermediate, err = get("https://" + mgmt + "/intermediates/0")
			}
		}
		return err == nil
	})
	p.root, p.intermediate = parsePEM(t, root), parsePEM(t, intermediate)
	if err := os.WriteFile(p.rootFile, root, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkIssued checks that the relay served a certificate for acmeName that
// Pebble's intermediate issued under its root, with that intermediate.
func (p *pebbleCA) checkIssued(t *testing.T, cs *tls.ConnectionState) {
	t.Helper()
	leaf := cs.PeerCertificates[0]
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != acmeName {
		t.Errorf("certificate for %v, want %s", leaf.DNSNames, acmeName)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool(p.root), Intermediates: pool(p.intermediate), DNSName: acmeName})
	if err != nil {
		t.Errorf("the served certificate does not verify with Pebble's root and intermediate: %v", err)
	}
	if len(cs.PeerCertificates) < 2 || !cs.PeerCertificates[1].Equal(p.intermediate) {
		t.Errorf("the relay does not serve Pebble's intermediate after its certificate (%d certificates)", len(cs.PeerCertificates))
	}
}

// relay starts parleyd with a certificate from p for acmeName, serving
// HTTPS on port (where p's TLS-ALPN-01 validation may connect), with extra
// flags; its log is printed if the test fails.
func (p *pebbleCA) relay(t *testing.T, env []string, port int, extra ...string) *proc {
	t.Helper()
	r := start(t, env, append([]string{"--data-dir", t.TempDir(), "--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--acme-domain", acmeName, "--acme-directory-url", p.dir}, extra...)...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("parleyd's log:\n%s", r.logs)
		}
	})
	return r
}

// handshake connects to the relay on port asking for acmeName, as a client
// that trusts only root, and returns what the relay served. The first
// handshake waits while parleyd obtains the certificate: 30 s at most.
func handshake(port int, root *x509.Certificate) (*tls.ConnectionState, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", "127.0.0.1:"+strconv.Itoa(port),
		&tls.Config{ServerName: acmeName, RootCAs: pool(root)})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cs := conn.ConnectionState()
	return &cs, nil
}

// connectProxy is an HTTP proxy that tunnels CONNECT name:PORT to
// 127.0.0.1:PORT and refuses anything else.
func connectProxy(t *testing.T, name string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, port, err := net.SplitHostPort(r.Host)
		if r.Method != http.MethodConnect || err != nil || host != name {
			http.Error(w, "this proxy only tunnels to "+name, http.StatusForbidden)
			return
		}
		up, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", port), 5*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer up.Close()
		down, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer down.Close()
		io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n")
		go func() { io.Copy(up, buf); up.Close() }()
		io.Copy(down, up)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// buildParley builds the parley CLI into a temporary directory.
func buildParley(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "parley")
	if out, err := exec.Command("go", "build", "-o", bin, "../parley").CombinedOutput(); err != nil {
		t.Fatalf("go build ../parley: %v\n%s", err, out)
	}
	return bin
}

// startProcess runs a helper process with its output in a buffer, which
// it returns and logs if the test fails, and kills it when the test ends.
func startProcess(t *testing.T, name string, env []string, bin string, args ...string) *logBuffer {
	t.Helper()
	logs := &logBuffer{}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s's output:\n%s", name, logs)
		}
	})
	return logs
}

// runBounded runs cmd, killing it after limit.
func runBounded(cmd *exec.Cmd, limit time.Duration) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	timer := time.AfterFunc(limit, func() { cmd.Process.Kill() })
	defer timer.Stop()
	return cmd.Wait()
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// freeDNSPort returns a port free for both TCP and UDP on 127.0.0.1.
func freeDNSPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		port := freePort(t)
		if pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return 0
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func parsePEM(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("not PEM: %q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
