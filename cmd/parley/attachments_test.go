package main_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/attachments/s3test"
	"github.com/parleyhq/parley/bench"
	"github.com/parleyhq/parley/cli/attachment"
)

// TestAttachment20MiB sends a 20 MiB file from one parley to another
// through both attachment backends: the relay's disk and S3 (versitygw).
func TestAttachment20MiB(t *testing.T) {
	plain := make([]byte, 20<<20)
	rand.Read(plain)
	src := filepath.Join(t.TempDir(), "scan 2026-11.pdf")
	if err := os.WriteFile(src, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, backend := range []string{"disk", "s3"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			args := []string{"--data-dir", data}
			var env []string
			objects := filepath.Join(data, "attachments")
			if backend == "s3" {
				s := s3test.Start(t)
				env = s.Env()
				args = append(args, "--attachments", "s3", "--s3-bucket", s.Bucket, "--s3-endpoint", s.Endpoint)
				objects = filepath.Join(s.Dir, s.Bucket)
			}
			srv, err := bench.SpawnEnv(parleydBin, dir, env, 10, code, nil, args...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Stop() })
			alice, bob := newUser(t, srv.Base, 1), newUser(t, srv.Base, 2)
			alice.register()
			bob.register()

			start := time.Now()
			alice.ok("send", "-m", "the scan", "-a", src, bob.number)
			sent := time.Since(start)
			out := t.TempDir()
			start = time.Now()
			got := bob.ok("receive", "--json", "--timeout", "0.5", "--output", out)
			received := time.Since(start)
			t.Logf("%s: send (encrypt + upload) %v, receive (download + verify + decrypt, plus the 0.5 s idle timeout) %v", backend, sent.Round(time.Millisecond), received.Round(time.Millisecond))

			var ev struct {
				Text        string `json:"text"`
				Attachments []struct {
					FileName    string `json:"file_name"`
					ContentType string `json:"content_type"`
					Path        string `json:"path"`
					Error       string `json:"error"`
					Size        int64  `json:"size"`
				} `json:"attachments"`
			}
			for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
				if strings.Contains(l, `"attachments"`) {
					if err := json.Unmarshal([]byte(l), &ev); err != nil {
						t.Fatal(err)
					}
				}
			}
			if ev.Text != "the scan" || len(ev.Attachments) != 1 {
				t.Fatalf("received %s", got)
			}
			a := ev.Attachments[0]
			if a.Error != "" || a.FileName != "scan 2026-11.pdf" || a.ContentType != "application/pdf" || a.Size != int64(len(plain)) {
				t.Fatalf("attachment %+v", a)
			}
			if filepath.Dir(a.Path) != out {
				t.Fatalf("saved to %s, not under --output %s", a.Path, out)
			}
			saved, err := os.ReadFile(a.Path)
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(saved) != sha256.Sum256(plain) {
				t.Fatal("the received file differs from the sent one")
			}
			// The object store holds one blob of the padded, encrypted size,
			// and none of the plaintext.
			var blobs []string
			filepath.WalkDir(objects, func(p string, de os.DirEntry, err error) error {
				if err == nil && !de.IsDir() && !strings.HasPrefix(de.Name(), ".") {
					blobs = append(blobs, p)
				}
				return nil
			})
			if len(blobs) != 1 {
				t.Fatalf("object store holds %v", blobs)
			}
			blob, _ := os.ReadFile(blobs[0])
			if int64(len(blob)) != attachment.EncryptedSize(int64(len(plain))) || bytes.Contains(blob, plain[1000:1064]) {
				t.Fatalf("stored object is %d bytes or contains plaintext", len(blob))
			}
			if strings.Contains(blobs[0], "scan") {
				t.Fatalf("object path %s carries the file name", blobs[0])
			}
		})
	}
}

// TestS3PublicEndpoint: with --s3-public-endpoint, the upload and download
// URLs clients get name the store's public address (here a proxy in front
// of it, as a load balancer would be) and are signed for it, while the
// relay itself uses --s3-endpoint.
func TestS3PublicEndpoint(t *testing.T) {
	s := s3test.Start(t)
	store, _ := url.Parse(s.Endpoint)
	var proxied atomic.Int64
	public := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		httputil.NewSingleHostReverseProxy(store).ServeHTTP(w, r) // the Host header stays the public one
	}))
	t.Cleanup(public.Close)
	dir := t.TempDir()
	srv, err := bench.SpawnEnv(parleydBin, dir, s.Env(), 10, code, nil, "--data-dir", filepath.Join(dir, "data"),
		"--attachments", "s3", "--s3-bucket", s.Bucket, "--s3-endpoint", s.Endpoint, "--s3-public-endpoint", public.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	alice, bob := newUser(t, srv.Base, 1), newUser(t, srv.Base, 2)
	alice.register()
	bob.register()
	data := make([]byte, 64<<10)
	rand.Read(data)
	file := filepath.Join(t.TempDir(), "report.bin")
	os.WriteFile(file, data, 0o600)
	alice.ok("send", "-m", "via the public address", "-a", file, bob.number)
	out := t.TempDir()
	bob.ok("receive", "--json", "--timeout", "0.5", "--output", out)
	if got, err := os.ReadFile(filepath.Join(out, "report.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file through the public address: %v", err)
	}
	if n := proxied.Load(); n < 2 {
		t.Fatalf("%d requests reached the public address; the upload and download should both go there", n)
	}
}
