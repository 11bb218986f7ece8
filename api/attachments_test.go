package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/attachments"
)

// bucket is a chat bucket as its creator knows it.
type bucket struct {
	id            string
	member, admin []byte
}

func secret() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

func hashOf(b []byte) string {
	h := sha256.Sum256(b)
	return b64(h[:])
}

func (e *env) newBucket(c *creds) bucket {
	e.t.Helper()
	b := bucket{member: secret(), admin: secret()}
	r := e.call("POST", "/v1/attachments/buckets", c, map[string]any{
		"member_secret_hash": hashOf(b.member), "admin_secret_hash": hashOf(b.admin)}, true)
	if r.Status != 201 {
		e.t.Fatalf("create bucket: %d %s", r.Status, r.Raw)
	}
	b.id = r.Body["bucket_id"].(string)
	return b
}

// presigned is an upload or download request as the relay returned it.
type presigned struct {
	Method  string
	URL     string
	Headers map[string]string
}

func asPresigned(m map[string]any) presigned {
	p := presigned{Method: m["method"].(string), URL: m["url"].(string), Headers: map[string]string{}}
	for k, v := range m["headers"].(map[string]any) {
		p.Headers[k] = v.(string)
	}
	return p
}

// upload asks for an upload URL; it returns the key and the request.
func (e *env) upload(c *creds, b bucket, member []byte, size int) (string, presigned, response) {
	e.t.Helper()
	r := e.call("POST", "/v1/attachments/buckets/"+b.id+"/uploads", c, map[string]any{"member_secret": b64(member), "size": size}, true)
	if r.Status != 200 {
		return "", presigned{}, r
	}
	return r.Body["object_key"].(string), asPresigned(r.Body["upload"].(map[string]any)), r
}

func (e *env) download(c *creds, b bucket, member []byte, key string) (presigned, response) {
	e.t.Helper()
	r := e.call("POST", "/v1/attachments/buckets/"+b.id+"/downloads", c, map[string]any{"member_secret": b64(member), "object_key": key}, true)
	if r.Status != 200 {
		return presigned{}, r
	}
	return asPresigned(r.Body), r
}

// do makes a presigned request (relative to the relay) with body.
func (e *env) do(p presigned, body []byte) response {
	e.t.Helper()
	h := http.Header{}
	for k, v := range p.Headers {
		h.Set(k, v)
	}
	var b any
	if p.Method == "PUT" {
		h.Set("Content-Type", "application/octet-stream")
		b = body
	}
	return e.callHeader(p.Method, p.URL, nil, b, h, false)
}

func TestAttachmentRoundTrip(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	b := e.newBucket(alice)
	data := make([]byte, 100_000)
	rand.Read(data)

	key, up, r := e.upload(alice, b, b.member, len(data))
	if r.Status != 200 || up.Method != "PUT" || !attachments.ValidID(key) {
		t.Fatalf("upload: %d %s", r.Status, r.Raw)
	}
	if strings.Contains(up.URL, alice.Account) || strings.Contains(key, alice.Account) {
		t.Fatal("the object URL names the account")
	}
	if r := e.do(up, data); r.Status != 200 {
		t.Fatalf("PUT: %d %s", r.Status, r.Raw)
	}
	// Bob, given the member secret inside the chat, downloads it.
	down, r := e.download(bob, b, b.member, key)
	if r.Status != 200 || down.Method != "GET" {
		t.Fatalf("download: %d %s", r.Status, r.Raw)
	}
	if r := e.do(down, nil); r.Status != 200 || !bytes.Equal(r.Raw, data) {
		t.Fatalf("GET: %d, %d bytes; want the %d uploaded", r.Status, len(r.Raw), len(data))
	}
	// Ranges let a client resume a download.
	req, _ := http.NewRequest("GET", e.srv.URL+down.URL, nil)
	req.Header.Set("Range", "bytes=1000-1999")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 2000)
	n, _ := resp.Body.Read(part)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(part[:n], data[1000:2000]) {
		t.Fatalf("range: %d, %d bytes", resp.StatusCode, n)
	}
	// On disk: BUCKET/KEY, the ciphertext the client sent, mode 0600.
	fi, err := os.Stat(filepath.Join(e.disk, b.id, key))
	if err != nil || fi.Size() != int64(len(data)) || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stored object: %v, %v", fi, err)
	}
}

// TestAttachmentRefusals tries every forbidden path against the disk
// backend; cmd/parleyd runs the same refusals against real parleyd
// processes on both backends.
func TestAttachmentRefusals(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixMilli())
	cfg := attachments.DefaultConfig()
	cfg.QuotaBytes, cfg.MaxObjectBytes = 10_000, 4_000
	e := newEnv(t, func(c *envConfig) {
		c.attach = cfg
		c.now = func() time.Time { return time.UnixMilli(clock.Load()) }
	})
	_, alice := e.register(aliceNumber, 0)
	_, mallory := e.register(carolNumber, 0)
	b := e.newBucket(alice)
	other := e.newBucket(alice)
	data := bytes.Repeat([]byte{7}, 1000)
	key, up, _ := e.upload(alice, b, b.member, len(data))
	if r := e.do(up, data); r.Status != 200 {
		t.Fatalf("PUT: %d %s", r.Status, r.Raw)
	}
	otherKey, otherUp, _ := e.upload(alice, other, other.member, 10)
	e.do(otherUp, make([]byte, 10))
	down, _ := e.download(alice, b, b.member, key)

	expect := func(t *testing.T, r response, status int, code string) {
		t.Helper()
		if r.Status != status || r.errCode() != code {
			t.Errorf("got %d %s, want %d %s", r.Status, r.Raw, status, code)
		}
	}
	path := "/v1/attachments/buckets/" + b.id

	t.Run("no device credentials", func(t *testing.T) {
		e := e.with(t)
		expect(t, e.call("POST", path+"/uploads", nil, map[string]any{"member_secret": b64(b.member), "size": 1}, true), 401, "unauthorized")
		expect(t, e.call("POST", "/v1/attachments/buckets", nil, map[string]any{"member_secret_hash": hashOf(secret()), "admin_secret_hash": hashOf(secret())}, true), 401, "unauthorized")
	})
	t.Run("wrong member secret", func(t *testing.T) {
		e := e.with(t)
		_, _, r := e.upload(mallory, b, secret(), 10)
		expect(t, r, 403, "bucket_forbidden")
		_, r = e.download(mallory, b, secret(), key)
		expect(t, r, 403, "bucket_forbidden")
	})
	t.Run("admin secret is not a member secret", func(t *testing.T) {
		e := e.with(t)
		_, r := e.download(alice, b, b.admin, key)
		expect(t, r, 403, "bucket_forbidden")
	})
	t.Run("member secret cannot administer", func(t *testing.T) {
		e := e.with(t)
		expect(t, e.call("PUT", path+"/member-secret", mallory, map[string]any{"admin_secret": b64(b.member), "member_secret_hash": hashOf(secret())}, true), 403, "bucket_forbidden")
		expect(t, e.call("PUT", path+"/retention", mallory, map[string]any{"admin_secret": b64(b.member), "retention_seconds": 60}, true), 403, "bucket_forbidden")
		expect(t, e.call("POST", path+"/delete", mallory, map[string]any{"admin_secret": b64(b.member)}, true), 403, "bucket_forbidden")
	})
	t.Run("another bucket's object", func(t *testing.T) {
		e := e.with(t)
		_, r := e.download(alice, b, b.member, otherKey)
		expect(t, r, 404, "attachment_not_found")
		_, r = e.download(alice, other, other.member, key)
		expect(t, r, 404, "attachment_not_found")
		// The other bucket's URL with this bucket's id in its path.
		tampered := down
		tampered.URL = strings.Replace(down.URL, b.id+"/"+key, other.id+"/"+otherKey, 1)
		expect(t, e.do(tampered, nil), 403, "invalid_object_url")
	})
	t.Run("tampered URLs", func(t *testing.T) {
		e := e.with(t)
		u, _ := url.Parse(down.URL)
		for name, f := range map[string]func(q url.Values){
			"signature":  func(q url.Values) { s := q.Get("sig"); q.Set("sig", "A"+s[1:]) },
			"no sig":     func(q url.Values) { q.Del("sig") },
			"generation": func(q url.Values) { q.Set("gen", "1") },
			"expiry":     func(q url.Values) { q.Set("expires", "99999999999") },
		} {
			q := u.Query()
			f(q)
			if q.Get("sig") == u.Query().Get("sig") && name == "signature" {
				q.Set("sig", "B"+q.Get("sig")[1:])
			}
			p := down
			p.URL = u.Path + "?" + q.Encode()
			if r := e.do(p, nil); r.Status != 403 || r.errCode() != "invalid_object_url" {
				t.Errorf("%s: got %d %s", name, r.Status, r.Raw)
			}
		}
		// The download URL does not upload, nor the upload URL download.
		asPut := down
		asPut.Method = "PUT"
		expect(t, e.do(asPut, data), 403, "invalid_object_url")
		asGet := up
		asGet.Method = "GET"
		expect(t, e.do(asGet, nil), 403, "invalid_object_url")
		// A larger size in the URL is not what was signed.
		u2, _ := url.Parse(up.URL)
		q := u2.Query()
		q.Set("size", "4000")
		bigger := up
		bigger.URL = u2.Path + "?" + q.Encode()
		expect(t, e.do(bigger, make([]byte, 4000)), 403, "invalid_object_url")
	})
	t.Run("oversized and undersized uploads leave nothing", func(t *testing.T) {
		e := e.with(t)
		k, p, _ := e.upload(alice, b, b.member, 100)
		expect(t, e.do(p, make([]byte, 101)), 413, "object_too_large")
		expect(t, e.do(p, make([]byte, 99)), 422, "invalid_attachment_request")
		entries, _ := os.ReadDir(filepath.Join(e.disk, b.id))
		for _, de := range entries {
			if strings.Contains(de.Name(), k) {
				t.Errorf("a refused upload left %s", de.Name())
			}
		}
		if r := e.do(p, make([]byte, 100)); r.Status != 200 {
			t.Fatalf("exact size: %d %s", r.Status, r.Raw)
		}
		expect(t, e.do(p, make([]byte, 100)), 409, "object_exists")
	})
	t.Run("limits", func(t *testing.T) {
		e := e.with(t)
		_, _, r := e.upload(alice, b, b.member, 4001)
		expect(t, r, 413, "object_too_large")
		expect(t, e.call("POST", path+"/uploads", alice, map[string]any{"member_secret": b64(b.member), "size": 0}, false), 422, "invalid_attachment_request")
		for range 2 {
			e.upload(alice, b, b.member, 4000)
		}
		_, _, r = e.upload(alice, b, b.member, 4000) // 1000+100+8000 of 10000 reserved
		expect(t, r, 413, "bucket_quota_exceeded")
		expect(t, e.call("PUT", path+"/retention", alice, map[string]any{"admin_secret": b64(b.admin), "retention_seconds": 4}, true), 422, "invalid_attachment_request")
		expect(t, e.call("PUT", path+"/retention", alice, map[string]any{"admin_secret": b64(b.admin), "retention_seconds": 31 * 86400}, true), 422, "invalid_attachment_request")
		expect(t, e.call("POST", "/v1/attachments/buckets", alice, map[string]any{"member_secret_hash": hashOf(b.member), "admin_secret_hash": hashOf(b.member)}, true), 422, "invalid_attachment_request")
	})
	t.Run("expired URL", func(t *testing.T) {
		e := e.with(t)
		d, _ := e.download(alice, b, b.member, key)
		_, p, _ := e.upload(alice, other, other.member, 10)
		clock.Add((cfg.URLTTL + time.Second).Milliseconds())
		expect(t, e.do(d, nil), 403, "invalid_object_url")
		expect(t, e.do(p, make([]byte, 10)), 403, "invalid_object_url")
	})
	t.Run("rotated secret", func(t *testing.T) {
		e := e.with(t)
		d, _ := e.download(alice, b, b.member, key)
		newMember := secret()
		if r := e.call("PUT", path+"/member-secret", alice, map[string]any{"admin_secret": b64(b.admin), "member_secret_hash": hashOf(newMember)}, true); r.Status != 204 {
			t.Fatalf("rotate: %d %s", r.Status, r.Raw)
		}
		_, r := e.download(alice, b, b.member, key)
		expect(t, r, 403, "bucket_forbidden")
		_, _, r = e.upload(alice, b, b.member, 10)
		expect(t, r, 403, "bucket_forbidden")
		expect(t, e.do(d, nil), 403, "invalid_object_url") // issued under the old secret
		d2, r := e.download(alice, b, newMember, key)
		if r.Status != 200 {
			t.Fatalf("new secret: %d %s", r.Status, r.Raw)
		}
		if r := e.do(d2, nil); r.Status != 200 || !bytes.Equal(r.Raw, data) {
			t.Fatalf("download with the new secret: %d", r.Status)
		}
		b.member = newMember
	})
	t.Run("retention expires objects", func(t *testing.T) {
		e := e.with(t)
		if r := e.call("PUT", "/v1/attachments/buckets/"+other.id+"/retention", alice, map[string]any{"admin_secret": b64(other.admin), "retention_seconds": 60}, true); r.Status != 200 || r.Body["retention_seconds"] != 60.0 {
			t.Fatalf("retention: %d %s", r.Status, r.Raw)
		}
		clock.Add(61_000)
		_, r := e.download(alice, other, other.member, otherKey)
		expect(t, r, 404, "attachment_not_found")
		if _, err := os.Stat(filepath.Join(e.disk, other.id, otherKey)); err != nil {
			t.Fatalf("object gone before the sweep: %v", err)
		}
		objs, _, err := e.attach.Sweep(context.Background())
		if err != nil || objs < 1 {
			t.Fatalf("sweep = %d, %v", objs, err)
		}
		if _, err := os.Stat(filepath.Join(e.disk, other.id, otherKey)); !os.IsNotExist(err) {
			t.Fatalf("expired object still on disk: %v", err)
		}
	})
	t.Run("deleted bucket", func(t *testing.T) {
		e := e.with(t)
		d, _ := e.download(alice, b, b.member, key)
		expect(t, e.call("POST", path+"/delete", alice, map[string]any{"admin_secret": b64(b.admin)}, true), 204, "")
		if _, err := os.Stat(filepath.Join(e.disk, b.id)); !os.IsNotExist(err) {
			t.Fatalf("deleted bucket's directory remains: %v", err)
		}
		expect(t, e.do(d, nil), 404, "attachment_not_found")
		_, r := e.download(alice, b, b.member, key)
		expect(t, r, 404, "attachment_not_found")
		_, _, r = e.upload(alice, b, b.member, 10)
		expect(t, r, 404, "attachment_not_found")
		expect(t, e.call("POST", path+"/delete", alice, map[string]any{"admin_secret": b64(b.admin)}, true), 404, "attachment_not_found")
		if n := rowCount(t, e, "attachment_objects"); n != 0 { // the other bucket's were swept
			t.Errorf("%d object rows remain", n)
		}
	})
}

// with returns a copy of e reporting to t.
func (e *env) with(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}
