package attachments

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func testDisk(t testing.TB) *Disk {
	d, err := NewDisk(t.TempDir(), bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestDiskURLs: a signed URL verifies for exactly what it was signed for.
func TestDiskURLs(t *testing.T) {
	d := testDisk(t)
	now := time.Unix(1_800_000_000, 0)
	o := Object{Bucket: NewID(), Key: NewID()}
	put := d.presign(http.MethodPut, o, 3, 1234, now.Add(time.Minute))
	u, _ := url.Parse(put.URL)
	parts := strings.Split(strings.TrimPrefix(u.Path, ObjectPath), "/")
	if len(parts) != 2 || parts[0] != o.Bucket || parts[1] != o.Key {
		t.Fatalf("URL path %s", u.Path)
	}
	got, err := d.verify(http.MethodPut, o.Bucket, o.Key, u.Query(), now)
	if err != nil || got.size != 1234 || got.gen != 3 {
		t.Fatalf("verify = %+v, %v", got, err)
	}
	for name, f := range map[string]func(q url.Values) (method, bucket, key string){
		"as GET":       func(q url.Values) (string, string, string) { return http.MethodGet, o.Bucket, o.Key },
		"other key":    func(q url.Values) (string, string, string) { return http.MethodPut, o.Bucket, NewID() },
		"other bucket": func(q url.Values) (string, string, string) { return http.MethodPut, NewID(), o.Key },
		"bigger size": func(q url.Values) (string, string, string) {
			q.Set("size", "1235")
			return http.MethodPut, o.Bucket, o.Key
		},
		"generation": func(q url.Values) (string, string, string) { q.Set("gen", "4"); return http.MethodPut, o.Bucket, o.Key },
		"later expiry": func(q url.Values) (string, string, string) {
			q.Set("expires", "1800000061")
			return http.MethodPut, o.Bucket, o.Key
		},
		"no signature":  func(q url.Values) (string, string, string) { q.Del("sig"); return http.MethodPut, o.Bucket, o.Key },
		"traversal key": func(q url.Values) (string, string, string) { return http.MethodPut, o.Bucket, "../" + o.Key[3:] },
	} {
		q := u.Query()
		m, b, k := f(q)
		if _, err := d.verify(m, b, k, q, now); err != ErrBadURL {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := d.verify(http.MethodPut, o.Bucket, o.Key, u.Query(), now.Add(time.Minute)); err != ErrBadURL {
		t.Errorf("expired URL: %v", err)
	}
}

// FuzzObjectURL: no query string verifies without the key, and none panics.
func FuzzObjectURL(f *testing.F) {
	d := testDisk(f)
	o := Object{Bucket: "AAAAAAAAAAAAAAAAAAAAAA", Key: "BBBBBBBBBBBBBBBBBBBBBB"}
	good, _ := url.Parse(d.presign(http.MethodPut, o, 0, 10, time.Unix(2_000_000_000, 0)).URL)
	f.Add("PUT", o.Bucket, o.Key, good.RawQuery)
	f.Add("GET", o.Bucket, "..%2f..", "gen=-1&expires=9&sig=")
	f.Fuzz(func(t *testing.T, method, bucket, key, rawQuery string) {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return
		}
		_, err = d.verify(method, bucket, key, q, time.Unix(1_800_000_000, 0))
		if err == nil && (method != "PUT" || bucket != o.Bucket || key != o.Key || q.Get("sig") != good.Query().Get("sig")) {
			t.Fatalf("forged URL verified: %s %s/%s?%s", method, bucket, key, rawQuery)
		}
	})
}
