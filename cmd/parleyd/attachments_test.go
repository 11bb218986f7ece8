package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/attachments/s3test"
)

// objectStore is what a test can see of a backend's stored objects.
type objectStore interface {
	// keys lists every stored object path ("BUCKET/KEY" after any prefix).
	keys(t *testing.T) []string
}

type diskStore string

func (d diskStore) keys(t *testing.T) []string {
	var out []string
	filepath.WalkDir(string(d), func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			rel, _ := filepath.Rel(string(d), p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

type s3Store struct{ *s3test.Server }

func (s s3Store) keys(t *testing.T) []string { return s.Objects(t) }

// TestAttachmentRefusals runs one suite against real parleyd processes on
// both backends: the disk backend (parleyd signs and serves the URLs) and
// S3 through aws-sdk-go-v2 against versitygw, which checks presigned
// signatures, expiry and the signed Content-Length as S3 does.
func TestAttachmentRefusals(t *testing.T) {
	common := []string{"--test-number", "+15555550100=123456", "--test-number", "+15555550101=123456",
		"--attachment-url-ttl", "2s", "--sweep-interval", "1s", "--attachment-max-bytes", "100000"}
	onBothBackends(t, common, attachmentSuite)
}

// onBothBackends runs suite against a parleyd started with flags, once
// with the disk backend and once with S3 (versitygw); suite gets the
// object store to look into and whether it is S3.
func onBothBackends(t *testing.T, flags []string, suite func(t *testing.T, p *proc, store objectStore, s3 bool)) {
	t.Run("disk", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		p := start(t, nil, append(flags, "--data-dir", dir)...)
		suite(t, p, diskStore(filepath.Join(dir, "attachments")), false)
	})
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		s := s3test.Start(t)
		p := start(t, s.Env(), append(flags, "--data-dir", t.TempDir(), "--attachments", "s3",
			"--s3-bucket", s.Bucket, "--s3-endpoint", s.Endpoint, "--s3-prefix", "chats/")...)
		suite(t, p, s3Store{s}, true)
	})
}

type chatBucket struct {
	id            string
	member, admin []byte
}

func newSecret() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

func hash64(b []byte) string {
	h := sha256.Sum256(b)
	return b64(h[:])
}

// objectRequest is a presigned request as the relay hands it out.
type objectRequest struct {
	method, url string
	headers     map[string]string
}

func asRequest(base string, m map[string]any) objectRequest {
	u, _ := url.Parse(base)
	ref, _ := url.Parse(m["url"].(string))
	r := objectRequest{method: m["method"].(string), url: u.ResolveReference(ref).String(), headers: map[string]string{}}
	for k, v := range m["headers"].(map[string]any) {
		r.headers[k] = v.(string)
	}
	return r
}

// send makes the request with body and returns the status and body.
func (o objectRequest) send(t *testing.T, body []byte) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(o.method, o.url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range o.headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func attachmentSuite(t *testing.T, p *proc, store objectStore, s3 bool) {
	alice := registerDevice(t, p, "+15555550100")
	mallory := registerDevice(t, p, "+15555550101")
	create := func() chatBucket {
		b := chatBucket{member: newSecret(), admin: newSecret()}
		st, body := p.do("POST", "/v1/attachments/buckets", alice.user, alice.pass, map[string]any{
			"member_secret_hash": hash64(b.member), "admin_secret_hash": hash64(b.admin)})
		if st != 201 {
			t.Fatalf("create bucket: %d %v", st, body)
		}
		b.id = body["bucket_id"].(string)
		return b
	}
	upload := func(d device, b chatBucket, member []byte, size int) (int, string, objectRequest) {
		st, body := p.do("POST", "/v1/attachments/buckets/"+b.id+"/uploads", d.user, d.pass, map[string]any{"member_secret": b64(member), "size": size})
		if st != 200 {
			return st, "", objectRequest{}
		}
		return st, body["object_key"].(string), asRequest(p.base, body["upload"].(map[string]any))
	}
	download := func(d device, b chatBucket, member []byte, key string) (int, objectRequest) {
		st, body := p.do("POST", "/v1/attachments/buckets/"+b.id+"/downloads", d.user, d.pass, map[string]any{"member_secret": b64(member), "object_key": key})
		if st != 200 {
			return st, objectRequest{}
		}
		return st, asRequest(p.base, body)
	}
	refused := func(what string, st int, want ...int) {
		t.Helper()
		for _, w := range want {
			if st == w {
				return
			}
		}
		t.Errorf("%s: status %d, want one of %v", what, st, want)
	}

	a, b := create(), create()
	// b expires its objects after 5 s; the sweeper (every second) must
	// remove them from the object store.
	if st, body := p.do("PUT", "/v1/attachments/buckets/"+b.id+"/retention", alice.user, alice.pass, map[string]any{
		"admin_secret": b64(b.admin), "retention_seconds": 5}); st != 200 {
		t.Fatalf("set retention: %d %v", st, body)
	}
	data := make([]byte, 50_000)
	rand.Read(data)
	_, keyA, upA := upload(alice, a, a.member, len(data))
	if s3 && upA.headers["X-Amz-Server-Side-Encryption"] != "AES256" {
		t.Errorf("upload does not request server-side encryption: %v", upA.headers)
	}
	if st, body := upA.send(t, data); st != 200 {
		t.Fatalf("upload: %d %s", st, body)
	}
	_, keyB, upB := upload(alice, b, b.member, 10)
	if st, body := upB.send(t, make([]byte, 10)); st != 200 {
		t.Fatalf("upload to b: %d %s", st, body)
	}
	st, downA := download(mallory, a, a.member, keyA) // any device holding the secret
	if st != 200 {
		t.Fatalf("download URL: %d", st)
	}
	if st, got := downA.send(t, nil); st != 200 || !bytes.Equal(got, data) {
		t.Fatalf("download: %d, %d bytes", st, len(got))
	}
	for _, k := range store.keys(t) {
		if strings.Contains(k, alice.account) || strings.Contains(k, mallory.account) {
			t.Errorf("stored object path %q names an account", k)
		}
	}

	// Tampered URLs: another object's path under the same signature, and a
	// changed signature.
	_, downB := download(alice, b, b.member, keyB)
	swapped := downA
	swapped.url = strings.Replace(downA.url, a.id+"/"+keyA, b.id+"/"+keyB, 1)
	if swapped.url == downA.url {
		t.Fatalf("object path not found in %s", downA.url)
	}
	st, _ = swapped.send(t, nil)
	refused("URL pointed at another bucket's object", st, 403)
	u, _ := url.Parse(downA.url)
	q := u.Query()
	for k, v := range q {
		if kl := strings.ToLower(k); kl == "sig" || kl == "x-amz-signature" {
			flipped := []byte(v[0])
			flipped[0] ^= 1
			q.Set(k, string(flipped))
		}
	}
	u.RawQuery = q.Encode()
	tampered := downA
	tampered.url = u.String()
	st, _ = tampered.send(t, nil)
	refused("tampered signature", st, 403)
	asPut := downA
	asPut.method = "PUT"
	st, _ = asPut.send(t, []byte("overwrite"))
	refused("download URL used to upload", st, 403)

	// Oversized and undersized uploads store nothing.
	_, keyC, upC := upload(alice, a, a.member, 100)
	st, _ = upC.send(t, make([]byte, 101))
	refused("oversized upload", st, 403, 413)
	st, _ = upC.send(t, make([]byte, 99))
	refused("undersized upload", st, 400, 403, 422)
	_, downC := download(alice, a, a.member, keyC)
	st, _ = downC.send(t, nil)
	refused("object after refused uploads", st, 404)
	st, _, _ = upload(alice, a, a.member, 100_001)
	refused("object over the size limit", st, 413)

	// Another bucket's object through this bucket's secret.
	st, _ = download(alice, b, b.member, keyA)
	refused("another bucket's object", st, 404)
	st, _ = download(alice, a, b.member, keyA)
	refused("another bucket's secret", st, 403)
	st, _, _ = upload(mallory, a, newSecret(), 10)
	refused("guessed member secret", st, 403)
	if st, _ := p.do("POST", "/v1/attachments/buckets/"+a.id+"/delete", mallory.user, mallory.pass, map[string]any{"admin_secret": b64(a.member)}); st != 403 {
		t.Errorf("delete with the member secret: %d", st)
	}

	// Expired URLs.
	_, late := download(alice, a, a.member, keyA)
	_, lateUp := func() (string, objectRequest) { _, k, r := upload(alice, a, a.member, 5); return k, r }()
	time.Sleep(3 * time.Second)
	st, _ = late.send(t, nil)
	refused("expired download URL", st, 403)
	st, _ = lateUp.send(t, make([]byte, 5))
	refused("expired upload URL", st, 403)

	// Rotation: the old secret stops working for old and new objects.
	newMember := newSecret()
	if st, body := p.do("PUT", "/v1/attachments/buckets/"+a.id+"/member-secret", alice.user, alice.pass, map[string]any{
		"admin_secret": b64(a.admin), "member_secret_hash": hash64(newMember)}); st != 204 {
		t.Fatalf("rotate: %d %v", st, body)
	}
	st, _ = download(mallory, a, a.member, keyA)
	refused("download with the rotated-out secret", st, 403)
	st, _, _ = upload(mallory, a, a.member, 10)
	refused("upload with the rotated-out secret", st, 403)
	st, fresh := download(alice, a, newMember, keyA)
	if st != 200 {
		t.Fatalf("download with the new secret: %d", st)
	}
	if st, got := fresh.send(t, nil); st != 200 || !bytes.Equal(got, data) {
		t.Fatalf("download with the new secret: %d", st)
	}

	// Retention: b's object expired after 5 s and the sweeper removed it.
	waitCond(t, 10*time.Second, "expired object removed from the object store", func() bool {
		for _, k := range store.keys(t) {
			if strings.Contains(k, keyB) {
				return false
			}
		}
		return true
	})
	st, _ = download(alice, b, b.member, keyB)
	refused("expired object", st, 404)
	st, _ = downB.send(t, nil)
	refused("URL of an expired object", st, 403, 404)

	// Deleting the bucket wipes its objects and refuses everything after.
	if st, body := p.do("POST", "/v1/attachments/buckets/"+a.id+"/delete", alice.user, alice.pass, map[string]any{"admin_secret": b64(a.admin)}); st != 204 {
		t.Fatalf("delete: %d %v", st, body)
	}
	for _, k := range store.keys(t) {
		if strings.Contains(k, a.id) {
			t.Errorf("deleted bucket's object %s remains", k)
		}
	}
	st, _ = fresh.send(t, nil)
	refused("URL into a deleted bucket", st, 403, 404)
	st, _ = download(alice, a, newMember, keyA)
	refused("download from a deleted bucket", st, 404)
	st, _, _ = upload(alice, a, newMember, 10)
	refused("upload to a deleted bucket", st, 404)
}
