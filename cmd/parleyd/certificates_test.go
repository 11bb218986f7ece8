package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/store/postgres/pgtest"
)

// parleydRun runs a parleyd command and returns its stdout, stderr and
// exit code.
func parleydRun(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// certFiles makes a trust root and a server certificate file with keyID
// in dir with the two commands, and returns the trust root's public key
// as printed and the two paths.
func certFiles(t *testing.T, dir string, keyID string) (rootKey, rootFile, serverFile string) {
	t.Helper()
	rootFile, serverFile = filepath.Join(dir, "trust-root.json"), filepath.Join(dir, "server-certificate-"+keyID+".json")
	if _, err := os.Stat(rootFile); err != nil {
		stdout, stderr, code := parleydRun(t, "trust-root", "--out", rootFile)
		if code != 0 {
			t.Fatalf("trust-root: exit %d\n%s%s", code, stdout, stderr)
		}
		rootKey, _, _ = strings.Cut(stdout, "\n")
		if !strings.Contains(stdout, "offline") || !strings.Contains(stdout, "Publish the public key") {
			t.Errorf("trust-root does not say to keep the file offline and publish the key:\n%s", stdout)
		}
	} else {
		var f map[string]string
		b, _ := os.ReadFile(rootFile)
		json.Unmarshal(b, &f)
		rootKey = f["public_key"]
	}
	if stdout, stderr, code := parleydRun(t, "server-certificate", "--trust-root", rootFile, "--key-id", keyID, "--out", serverFile); code != 0 {
		t.Fatalf("server-certificate: exit %d\n%s%s", code, stdout, stderr)
	}
	return rootKey, rootFile, serverFile
}

// fetchCertificate gets d's sender certificate from p and checks it
// against the trust root: it validates, names d's account, device and the
// account's identity key, carries no number, and expires lifetime after it
// was asked for.
func fetchCertificate(t *testing.T, p *proc, d keyedDevice, device uint32, root protocol.PublicKey, lifetime time.Duration) *protocol.SenderCertificate {
	t.Helper()
	before := time.Now()
	st, body := p.do("GET", "/v1/certificate/delivery", d.user, d.pass, nil)
	after := time.Now()
	if st != 200 {
		t.Fatalf("certificate: %d %v", st, body)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(body["certificate"].(string))
	if err != nil {
		t.Fatal(err)
	}
	c, err := protocol.ParseSenderCertificate(b)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Validate(root, after) {
		t.Error("the certificate does not validate under the trust root")
	}
	if c.SenderUUID != d.account || c.SenderDevice != device || c.SenderE164 != "" || !c.IdentityKey.Equal(d.id.Public()) {
		t.Errorf("certificate names %s.%d, number %q, key %v; want %s.%d, no number, key %v",
			c.SenderUUID, c.SenderDevice, c.SenderE164, c.IdentityKey, d.account, device, d.id.Public())
	}
	expires := time.UnixMilli(int64(body["expires"].(float64)))
	if !expires.Equal(c.Expires) || expires.Before(before.Add(lifetime).Truncate(time.Millisecond)) || expires.After(after.Add(lifetime)) {
		t.Errorf("expires %v (in the certificate %v), want %v after %v", expires, c.Expires, lifetime, before)
	}
	if c.Validate(root, expires.Add(time.Millisecond)) {
		t.Error("the certificate validates after it expires")
	}
	return c
}

func parseRoot(t *testing.T, s string) protocol.PublicKey {
	t.Helper()
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		t.Fatalf("trust root %q: %v", s, err)
	}
	k, err := protocol.ParsePublicKey(b)
	if err != nil {
		t.Fatalf("trust root %q: %v", s, err)
	}
	return k
}

// TestSenderCertificates: a relay started with files made by the two
// commands issues every device a sender certificate that validates under
// the trust root the relay names, and the operator printed.
func TestSenderCertificates(t *testing.T) {
	rootKey, _, serverFile := certFiles(t, t.TempDir(), "7")
	root := parseRoot(t, rootKey)
	p := start(t, []string{testNumbers, "PARLEY_SENDER_CERTIFICATE_LIFETIME=90m"}, "--data-dir", t.TempDir(), "--sender-certificate-file", serverFile)
	if !strings.Contains(p.logs.String(), `"msg":"sealed sender is on","key_id":7,"trust_root":"`+rootKey+`"`) {
		t.Errorf("no start-up line for sealed sender:\n%s", p.logs)
	}
	st, body := p.do("GET", "/v1/certificate/trust-root", "", "", nil)
	if st != 200 || body["trust_root"] != rootKey || body["key_id"] != 7.0 {
		t.Fatalf("trust root: %d %v, want %s and key id 7", st, body, rootKey)
	}
	alice := registerKeyed(t, p, "+15555550100")
	c := fetchCertificate(t, p, alice, 1, root, 90*time.Minute)
	if c.Signer.KeyID != 7 {
		t.Errorf("signed by key id %d", c.Signer.KeyID)
	}
	fetchCertificate(t, p, link(t, p, alice, 99), 2, root, 90*time.Minute)
	for _, user := range []string{"", alice.user} {
		if st, body := p.do("GET", "/v1/certificate/delivery", user, "not-the-credential-not-the-credential", nil); st != 401 {
			t.Errorf("certificate for user %q with a wrong or no credential: %d %v", user, st, body)
		}
	}
	if strings.Contains(p.logs.String(), "private_key") {
		t.Error("the server log mentions the private key")
	}
	p.stop()
}

// TestSenderCertificatesTwoReplicas: replicas on one PostgreSQL sharing
// the server certificate file issue certificates that validate under the
// same root, for a device registered through either.
func TestSenderCertificatesTwoReplicas(t *testing.T) {
	dsn := pgtest.Database(t)
	dir := t.TempDir()
	secret := rootSecretFile(t)
	rootKey, _, serverFile := certFiles(t, dir, "3")
	root := parseRoot(t, rootKey)
	args := []string{"--database-url", dsn, "--secret-file", secret, "--sender-certificate-file", serverFile}
	r1 := start(t, []string{testNumbers}, args...)
	r2 := start(t, []string{testNumbers}, args...)
	alice := registerKeyed(t, r1, "+15555550100")
	bob := registerKeyed(t, r2, "+15555550101")
	for _, r := range []*proc{r1, r2} {
		if st, body := r.do("GET", "/v1/certificate/trust-root", "", "", nil); st != 200 || body["trust_root"] != rootKey || body["key_id"] != 3.0 {
			t.Errorf("trust root: %d %v", st, body)
		}
		for _, d := range []keyedDevice{alice, bob} {
			if c := fetchCertificate(t, r, d, 1, root, 24*time.Hour); c.Signer.KeyID != 3 {
				t.Errorf("signed by key id %d", c.Signer.KeyID)
			}
		}
	}
	r1.stop()
	r2.stop()
}

// TestSealedSenderOff: without the file both endpoints say sealed sender
// is off; the trust root endpoint is capped per client address like the
// other unauthenticated ones.
func TestSealedSenderOff(t *testing.T) {
	p := start(t, []string{testNumbers}, "--data-dir", t.TempDir(), "--public-ip-burst", "5", "--public-ip-rate", "0.001")
	alice := registerKeyed(t, p, "+15555550100") // 3 unauthenticated requests
	for i := range 2 {
		if st, body := p.do("GET", "/v1/certificate/trust-root", "", "", nil); st != 404 || body["error"].(map[string]any)["code"] != "sealed_sender_disabled" {
			t.Errorf("trust root %d: %d %v", i, st, body)
		}
	}
	if st, body := p.do("GET", "/v1/certificate/trust-root", "", "", nil); st != 429 {
		t.Errorf("trust root past the address's budget: %d %v", st, body)
	}
	if st, body := p.do("GET", "/v1/certificate/delivery", alice.user, alice.pass, nil); st != 404 || body["error"].(map[string]any)["code"] != "sealed_sender_disabled" {
		t.Errorf("certificate: %d %v", st, body)
	}
	if st, body := p.do("GET", "/v1/certificate/delivery", "", "", nil); st != 401 {
		t.Errorf("certificate without credentials: %d %v", st, body)
	}
	if !strings.Contains(p.logs.String(), "sealed sender is off") {
		t.Error("the log does not say sealed sender is off")
	}
	p.stop()
}

// rewrite writes file's JSON with member set to value, mode 0600.
func rewrite(t *testing.T, file, out, member string, value any) string {
	t.Helper()
	var m map[string]any
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m[member] = value
	b, _ = json.Marshal(m)
	if err := os.WriteFile(out, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

func member(t *testing.T, file, name string) any {
	t.Helper()
	var m map[string]any
	b, _ := os.ReadFile(file)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m[name]
}

// TestServeRefusesBadSenderCertificate: serve names exactly what is wrong
// with a server certificate file, and refuses a lifetime out of bounds.
func TestServeRefusesBadSenderCertificate(t *testing.T) {
	dir, otherDir := t.TempDir(), t.TempDir()
	_, _, good := certFiles(t, dir, "1")
	_, _, sibling := certFiles(t, dir, "2")      // same root, another key
	_, _, foreign := certFiles(t, otherDir, "1") // another root
	exposed := filepath.Join(dir, "exposed.json")
	b, _ := os.ReadFile(good)
	if err := os.WriteFile(exposed, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(exposed, 0o640); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"group-readable", []string{"--sender-certificate-file", exposed}, 1, "accessible by group or others; chmod 600 it"},
		{"signed by another root", []string{"--sender-certificate-file", rewrite(t, good, filepath.Join(dir, "a"), "certificate", member(t, foreign, "certificate"))}, 1,
			"the server certificate does not validate under the file's trust_root"},
		{"private key of another certificate", []string{"--sender-certificate-file", rewrite(t, good, filepath.Join(dir, "b"), "private_key", member(t, sibling, "private_key"))}, 1,
			"private_key is not the key the server certificate certifies"},
		{"key id not the certificate's", []string{"--sender-certificate-file", rewrite(t, good, filepath.Join(dir, "c"), "key_id", 2)}, 1,
			"key_id is not the server certificate's key id"},
		{"a trust root file", []string{"--sender-certificate-file", filepath.Join(dir, "trust-root.json")}, 1, "invalid JSON"},
		{"missing", []string{"--sender-certificate-file", filepath.Join(dir, "missing.json")}, 1, "no such file"},
		{"lifetime too short", []string{"--sender-certificate-file", good, "--sender-certificate-lifetime", "59s"}, 2, "--sender-certificate-lifetime 59s: must be 1m to 168h"},
		{"lifetime too long", []string{"--sender-certificate-file", good, "--sender-certificate-lifetime", "169h"}, 2, "--sender-certificate-lifetime 169h0m0s: must be 1m to 168h"},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := t.TempDir()
			out, code := serveExit(t, nil, append([]string{"--listen", "127.0.0.1:0", "--data-dir", data}, c.args...)...)
			if code != c.code || !strings.Contains(out, c.want) {
				t.Errorf("exit %d, want %d and %q:\n%s", code, c.code, c.want, out)
			}
			if _, err := os.Stat(filepath.Join(data, "root.key")); err == nil {
				t.Error("a refused start generated a root secret")
			}
			if c.code == 1 && !strings.Contains(out, "--sender-certificate-file") {
				t.Errorf("the error does not name the flag:\n%s", out)
			}
			if pk, _ := member(t, good, "private_key").(string); strings.Contains(out, pk) {
				t.Error("the error shows the private key")
			}
		})
	}
}

// TestCertificateCommands: the commands write 0600 files, never replace
// one, refuse an exposed trust root and a revoked key id, and answer usage
// errors with exit 2 and help with 0.
func TestCertificateCommands(t *testing.T) {
	dir := t.TempDir()
	_, rootFile, serverFile := certFiles(t, dir, "4294967295")
	for _, f := range []string{rootFile, serverFile} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, fi.Mode().Perm())
		}
	}
	rootBefore, _ := os.ReadFile(rootFile)
	serverBefore, _ := os.ReadFile(serverFile)
	other := filepath.Join(dir, "other-root.json")
	exposed := filepath.Join(dir, "exposed-root.json")
	if err := os.WriteFile(exposed, rootBefore, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"trust root over an existing file", []string{"trust-root", "--out", rootFile}, 1, "already exists; not replacing it"},
		{"server certificate over an existing file", []string{"server-certificate", "--trust-root", rootFile, "--key-id", "5", "--out", serverFile}, 1, "already exists; not replacing it"},
		{"exposed trust root", []string{"server-certificate", "--trust-root", exposed, "--key-id", "5", "--out", filepath.Join(dir, "x.json")}, 1, "chmod 600"},
		{"a server certificate file as trust root", []string{"server-certificate", "--trust-root", serverFile, "--key-id", "5", "--out", filepath.Join(dir, "y.json")}, 1, "invalid JSON"},
		{"revoked key id", []string{"server-certificate", "--trust-root", rootFile, "--key-id", "3735929687", "--out", filepath.Join(dir, "z.json")}, 1, "libsignal refuses"},
		{"no --out", []string{"trust-root"}, 2, "--out is required"},
		{"argument", []string{"trust-root", "--out", other, "extra"}, 2, "unexpected arguments"},
		{"unknown flag", []string{"trust-root", "--force", "--out", other}, 2, "flag provided but not defined"},
		{"nothing given", []string{"server-certificate"}, 2, "--trust-root is required"},
		{"key id too big", []string{"server-certificate", "--trust-root", rootFile, "--key-id", "4294967296", "--out", other}, 2, "--key-id \"4294967296\""},
		{"negative key id", []string{"server-certificate", "--trust-root", rootFile, "--key-id", "-1", "--out", other}, 2, "--key-id"},
		{"help", []string{"server-certificate", "--help"}, 0, "Usage: parleyd server-certificate"},
		{"trust root help", []string{"trust-root", "-h"}, 0, "Keep FILE offline"},
	} {
		stdout, stderr, code := parleydRun(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d, want %d and %q:\n%s%s", c.name, code, c.code, c.want, stdout, stderr)
		}
	}
	if _, stderr, _ := parleydRun(t, "server-certificate"); !strings.Contains(stderr, "--out is required") || !strings.Contains(stderr, "--key-id \"\"") {
		t.Errorf("server-certificate does not report every missing flag:\n%s", stderr)
	}
	for _, f := range []string{other, filepath.Join(dir, "x.json"), filepath.Join(dir, "y.json"), filepath.Join(dir, "z.json")} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("a refused command wrote %s", f)
		}
	}
	if b, _ := os.ReadFile(rootFile); !bytes.Equal(b, rootBefore) {
		t.Error("the trust root file changed")
	}
	if b, _ := os.ReadFile(serverFile); !bytes.Equal(b, serverBefore) {
		t.Error("the server certificate file changed")
	}
	if _, stderr, _ := parleydRun(t, "help"); !strings.Contains(stderr, "parleyd trust-root --out FILE") || !strings.Contains(stderr, "parleyd server-certificate") {
		t.Errorf("usage does not list the commands:\n%s", stderr)
	}
}
