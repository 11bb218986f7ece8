package main

import (
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

// TestAttachmentRetentionReplay replays the attack of issue 14 row 3 on
// both backends: upload URLs are taken, the bucket's retention shortened so
// the sweeper removes the objects' rows, the retention restored, and the
// old URLs used again. Nothing may stay in the object store without a row:
// the disk backend refuses the upload, and what S3 accepts (a presigned URL
// cannot be revoked) is deleted by the sweeper's reconciliation.
func TestAttachmentRetentionReplay(t *testing.T) {
	common := []string{"--test-number", "+15555550100=123456", "--attachment-url-ttl", "60s",
		"--sweep-interval", "1s", "--attachment-reconcile-interval", "1s"}
	onBothBackends(t, common, retentionReplay)
}

func retentionReplay(t *testing.T, p *proc, store objectStore, s3 bool) {
	alice := registerDevice(t, p, "+15555550100")
	b := chatBucket{member: newSecret(), admin: newSecret()}
	st, body := p.do("POST", "/v1/attachments/buckets", alice.user, alice.pass, map[string]any{
		"member_secret_hash": hash64(b.member), "admin_secret_hash": hash64(b.admin)})
	if st != 201 {
		t.Fatalf("create bucket: %d %v", st, body)
	}
	b.id = body["bucket_id"].(string)
	retention := func(seconds int) {
		t.Helper()
		if st, body := p.do("PUT", "/v1/attachments/buckets/"+b.id+"/retention", alice.user, alice.pass, map[string]any{
			"admin_secret": b64(b.admin), "retention_seconds": seconds}); st != 200 {
			t.Fatalf("set retention %d: %d %v", seconds, st, body)
		}
	}
	data := make([]byte, 4096)
	rand.Read(data)
	var urls []objectRequest
	for range 2 {
		st, body := p.do("POST", "/v1/attachments/buckets/"+b.id+"/uploads", alice.user, alice.pass,
			map[string]any{"member_secret": b64(b.member), "size": len(data)})
		if st != 200 {
			t.Fatalf("reserve: %d %v", st, body)
		}
		up := asRequest(p.base, body["upload"].(map[string]any))
		if st, out := up.send(t, data); st != 200 {
			t.Fatalf("upload: %d %s", st, out)
		}
		urls = append(urls, up)
	}
	inBucket := func() int {
		n := 0
		for _, k := range store.keys(t) {
			if strings.Contains(k, b.id+"/") && !strings.Contains(k, ".part") {
				n++
			}
		}
		return n
	}
	if n := inBucket(); n != 2 {
		t.Fatalf("%d objects stored, want 2", n)
	}
	// Shorten the retention; the sweeper removes rows and files.
	retention(5)
	waitFor(t, 15*time.Second, "the sweeper to remove the expired objects", func() bool { return inBucket() == 0 })
	retention(3600)
	// Replay the old URLs.
	for i, up := range urls {
		st, _ := up.send(t, data)
		if !s3 && st == 200 {
			t.Errorf("replayed upload URL %d was accepted by the disk backend", i)
		}
	}
	// Whatever was accepted has no row and goes at the next reconciliation.
	waitFor(t, 15*time.Second, "objects without a row to be deleted", func() bool { return inBucket() == 0 })
	// The quota counts nothing of it: a reservation of the whole quota's
	// worth is still possible only as before (the rows are gone).
	if st, body := p.do("POST", "/v1/attachments/buckets/"+b.id+"/uploads", alice.user, alice.pass,
		map[string]any{"member_secret": b64(b.member), "size": len(data)}); st != 200 {
		t.Errorf("reserve after the replay: %d %v", st, body)
	}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
