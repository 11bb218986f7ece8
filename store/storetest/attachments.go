package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/parleyhq/parley/attachments"
	"github.com/parleyhq/parley/store"
)

var attachmentTests = []struct {
	name string
	f    func(*testing.T, *store.DB)
}{
	{"AttachmentBucketLifecycle", testBucketLifecycle},
	{"AttachmentQuotaUnderConcurrency", testQuotaConcurrent},
	{"AttachmentRetentionAndExpiry", testAttachmentExpiry},
}

func newBucket(t *testing.T, db *store.DB) attachments.Bucket {
	t.Helper()
	b := attachments.Bucket{ID: attachments.NewID(), MemberHash: random(32), AdminHash: random(32), Retention: time.Hour}
	if err := db.CreateBucket(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	return b
}

func object(b attachments.Bucket, size int64, created time.Time) attachments.Object {
	return attachments.Object{Bucket: b.ID, Key: attachments.NewID(), Size: size, Created: created, Expires: created.Add(b.Retention)}
}

func testBucketLifecycle(t *testing.T, db *store.DB) {
	ctx := context.Background()
	b := newBucket(t, db)
	got, err := db.Bucket(ctx, b.ID)
	if err != nil || string(got.MemberHash) != string(b.MemberHash) || string(got.AdminHash) != string(b.AdminHash) ||
		got.Generation != 0 || got.Retention != time.Hour {
		t.Fatalf("Bucket = %+v, %v", got, err)
	}
	if _, err := db.Bucket(ctx, attachments.NewID()); !errors.Is(err, attachments.ErrNotFound) {
		t.Fatalf("unknown bucket: %v", err)
	}
	o := object(b, 100, now)
	if err := db.ReserveObject(ctx, o, 0, 1000); err != nil {
		t.Fatal(err)
	}
	if got, err := db.Object(ctx, b.ID, o.Key, now); err != nil || got.Size != 100 {
		t.Fatalf("Object = %+v, %v", got, err)
	}
	// Another bucket's object is not found through this bucket.
	other := newBucket(t, db)
	if _, err := db.Object(ctx, other.ID, o.Key, now); !errors.Is(err, attachments.ErrNotFound) {
		t.Fatalf("object through another bucket: %v", err)
	}

	// Rotation bumps the generation once; a stale generation conflicts.
	gen, err := db.RotateMemberSecret(ctx, b.ID, 0, random(32))
	if err != nil || gen != 1 {
		t.Fatalf("rotate = %d, %v", gen, err)
	}
	if _, err := db.RotateMemberSecret(ctx, b.ID, 0, random(32)); !errors.Is(err, attachments.ErrConflict) {
		t.Fatalf("rotate at a stale generation: %v", err)
	}
	if err := db.ReserveObject(ctx, object(b, 1, now), 0, 1000); !errors.Is(err, attachments.ErrConflict) {
		t.Fatalf("reserve at a stale generation: %v", err)
	}

	// Deleting hides the bucket and its objects at once, keeps the row
	// until forgotten, and refuses every change.
	if err := db.DeleteBucket(ctx, b.ID, now); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Bucket(ctx, b.ID); !errors.Is(err, attachments.ErrNotFound) {
		t.Fatalf("deleted bucket: %v", err)
	}
	if _, err := db.Object(ctx, b.ID, o.Key, now); !errors.Is(err, attachments.ErrNotFound) {
		t.Fatalf("object of a deleted bucket: %v", err)
	}
	for name, err := range map[string]error{
		"reserve":   db.ReserveObject(ctx, object(b, 1, now), 1, 1000),
		"retention": db.SetRetention(ctx, b.ID, time.Minute),
		"delete":    db.DeleteBucket(ctx, b.ID, now),
	} {
		if !errors.Is(err, attachments.ErrNotFound) {
			t.Errorf("%s on a deleted bucket: %v", name, err)
		}
	}
	if _, err := db.RotateMemberSecret(ctx, b.ID, 1, random(32)); err == nil {
		t.Error("rotated a deleted bucket")
	}
	deleted, err := db.DeletedBuckets(ctx, 10)
	if err != nil || len(deleted) != 1 || deleted[0].ID != b.ID || !deleted[0].Deleted.Equal(now) {
		t.Fatalf("DeletedBuckets = %+v, %v", deleted, err)
	}
	if err := db.ForgetBucket(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if deleted, _ := db.DeletedBuckets(ctx, 10); len(deleted) != 0 {
		t.Fatalf("forgotten bucket still listed: %+v", deleted)
	}
	// ForgetBucket never removes a live bucket.
	if err := db.ForgetBucket(ctx, other.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Bucket(ctx, other.ID); err != nil {
		t.Fatalf("ForgetBucket removed a live bucket: %v", err)
	}
}

func testQuotaConcurrent(t *testing.T, db *store.DB) {
	ctx := context.Background()
	b := newBucket(t, db)
	const quota, size, tries = 1000, 100, 30
	ok := inParallel(t, tries, attachments.ErrQuota, func(int) error {
		return db.ReserveObject(ctx, object(b, size, now), 0, quota)
	})
	full := tries - ok // every other call failed with ErrQuota
	if ok != quota/size || full != tries-quota/size {
		t.Fatalf("%d reserved, %d refused; want %d and %d", ok, full, quota/size, tries-quota/size)
	}
	// Expired objects no longer count.
	if err := db.ReserveObject(ctx, object(b, size, now.Add(b.Retention)), 0, quota); err != nil {
		t.Fatalf("quota still counts expired objects: %v", err)
	}
}

func testAttachmentExpiry(t *testing.T, db *store.DB) {
	ctx := context.Background()
	b := newBucket(t, db)
	old := object(b, 10, now.Add(-50*time.Minute))
	fresh := object(b, 10, now)
	for _, o := range []attachments.Object{old, fresh} {
		if err := db.ReserveObject(ctx, o, 0, 1000); err != nil {
			t.Fatal(err)
		}
	}
	if exp, err := db.ExpiredObjects(ctx, now, 10); err != nil || len(exp) != 0 {
		t.Fatalf("expired before retention: %+v, %v", exp, err)
	}
	if keys, err := db.ObjectKeys(ctx, b.ID); err != nil || len(keys) != 2 {
		t.Fatalf("ObjectKeys = %v, %v", keys, err)
	}
	// Shortening retention expires what is older than the new period.
	if err := db.SetRetention(ctx, b.ID, 30*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Object(ctx, b.ID, old.Key, now); !errors.Is(err, attachments.ErrNotFound) {
		t.Fatalf("object past the new retention still served: %v", err)
	}
	exp, err := db.ExpiredObjects(ctx, now, 10)
	if err != nil || len(exp) != 1 || exp[0].Key != old.Key || exp[0].Bucket != b.ID {
		t.Fatalf("ExpiredObjects = %+v, %v", exp, err)
	}
	if err := db.DeleteObjects(ctx, exp); err != nil {
		t.Fatal(err)
	}
	if exp, _ := db.ExpiredObjects(ctx, now, 10); len(exp) != 0 {
		t.Fatalf("deleted objects still listed: %+v", exp)
	}
	if keys, err := db.ObjectKeys(ctx, b.ID); err != nil || len(keys) != 1 || keys[0] != fresh.Key {
		t.Fatalf("ObjectKeys after the expired one went = %v, %v", keys, err)
	}
	if _, err := db.Object(ctx, b.ID, fresh.Key, now); err != nil {
		t.Fatalf("fresh object gone: %v", err)
	}
	if got, _ := db.Bucket(ctx, b.ID); got.Retention != 30*time.Minute {
		t.Fatalf("retention = %v", got.Retention)
	}
}
