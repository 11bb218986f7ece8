// Package attachments keeps per-chat private buckets of encrypted files.
//
// Access is by capability, not by a member list: the device that creates a
// bucket chooses two random secrets and gives the relay only their SHA-256
// hashes (which the relay keys once more before storing). Whoever can show
// the member secret may ask for short-lived URLs to upload or download one
// object; whoever can show the admin secret may rotate the member secret,
// set the bucket's retention and delete the bucket. The secrets travel
// inside the chat's end-to-end encrypted messages, so the relay never learns
// who belongs to which chat. Every request is also device-authenticated, for
// rate limits.
//
// Objects live in a Backend: S3 (presigned URLs) or local disk (URLs that
// parleyd signs and serves itself). Object keys are random and carry no
// account or chat identifiers. Sweep deletes what outlived its bucket's
// retention and wipes deleted buckets.
package attachments

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/ratelimit"
)

// Errors the API maps to answers.
var (
	// ErrNotFound reports an unknown or deleted bucket, or an object that
	// is not in the bucket (or has expired).
	ErrNotFound = errors.New("no such bucket or object")
	// ErrForbidden reports a secret that does not open the bucket.
	ErrForbidden = errors.New("the secret does not grant this operation on the bucket")
	// ErrInvalid reports a malformed identifier, secret, hash or size.
	ErrInvalid = errors.New("invalid attachment request")
	// ErrTooLarge reports an object over the per-object size limit.
	ErrTooLarge = errors.New("object is larger than the relay allows")
	// ErrQuota reports a bucket that would exceed its quota.
	ErrQuota = errors.New("the bucket's quota is used up")
	// ErrBadURL reports an object URL that is tampered with, expired or
	// used for another request than it was signed for.
	ErrBadURL = errors.New("the object URL is invalid or has expired")
	// ErrConflict reports a change that raced with another on the bucket.
	ErrConflict = errors.New("the bucket changed concurrently; retry")
)

// SecretSize is the length of member and admin secrets in bytes.
const SecretSize = 32

// idBytes is the entropy of bucket ids and object keys (128 bits).
const idBytes = 16

// Config holds the limits operators tune.
type Config struct {
	// MaxObjectBytes bounds one encrypted object.
	MaxObjectBytes int64
	// QuotaBytes bounds the sum of a bucket's live objects.
	QuotaBytes int64
	// DefaultRetention is a new bucket's retention unless it asks for less.
	DefaultRetention time.Duration
	// MaxRetention is the longest retention any bucket may have.
	MaxRetention time.Duration
	// URLTTL is how long an upload or download URL stays valid.
	URLTTL time.Duration
	// ReconcileEvery is how often Sweep compares the object store with the
	// database and deletes stored objects that have no row (uploads made
	// with a URL whose object was already swept).
	ReconcileEvery time.Duration
}

// MinRetention is the shortest retention a bucket may set.
const MinRetention = 5 * time.Second

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		MaxObjectBytes:   100 << 20,
		QuotaBytes:       2 << 30,
		DefaultRetention: 30 * 24 * time.Hour,
		MaxRetention:     30 * 24 * time.Hour,
		URLTTL:           5 * time.Minute,
		ReconcileEvery:   time.Hour,
	}
}

// Validate reports every inconsistent limit at once.
func (c Config) Validate() error {
	var errs []error
	if c.MaxObjectBytes < 1 || c.QuotaBytes < c.MaxObjectBytes {
		errs = append(errs, errors.New("attachments: need 0 < max object size <= bucket quota"))
	}
	if c.MaxRetention < MinRetention || c.DefaultRetention < MinRetention || c.DefaultRetention > c.MaxRetention {
		errs = append(errs, fmt.Errorf("attachments: need %v <= default retention <= max retention", MinRetention))
	}
	if c.URLTTL < time.Second || c.URLTTL > 7*24*time.Hour {
		errs = append(errs, errors.New("attachments: URL lifetime must be between 1s and 7 days"))
	}
	if c.ReconcileEvery < 0 {
		errs = append(errs, errors.New("attachments: the reconcile interval cannot be negative"))
	}
	return errors.Join(errs...)
}

// Bucket is one chat's bucket as stored. The hashes are keyed (see
// Service.keyed), never the client's values.
type Bucket struct {
	ID         string
	MemberHash []byte
	AdminHash  []byte
	// Generation counts member-secret rotations; URLs that parleyd signs
	// name it, so a rotation revokes them at once.
	Generation int
	Retention  time.Duration
	// Deleted is set once the bucket is deleted; the row stays until every
	// URL issued before could have expired, so late uploads are wiped too.
	Deleted time.Time
}

// Object is one object as stored: its size is the exact size its upload
// URL allows, reserved against the bucket's quota when the URL is issued.
type Object struct {
	Bucket  string
	Key     string
	Size    int64
	Created time.Time
	Expires time.Time
}

// Store is the persistence attachments need; store/ implements it.
type Store interface {
	// CreateBucket stores a new bucket.
	CreateBucket(ctx context.Context, b Bucket) error
	// Bucket returns a bucket that is not deleted, or ErrNotFound.
	Bucket(ctx context.Context, id string) (Bucket, error)
	// ReserveObject stores o if the bucket exists undeleted at generation
	// gen (else ErrNotFound or ErrConflict) and its live objects plus o
	// fit quota at o.Created (else ErrQuota).
	ReserveObject(ctx context.Context, o Object, gen int, quota int64) error
	// Object returns an object of a live bucket that has not expired at
	// now, or ErrNotFound.
	Object(ctx context.Context, bucket, key string, now time.Time) (Object, error)
	// RotateMemberSecret replaces the member hash of a live bucket at
	// generation gen and returns the new generation.
	RotateMemberSecret(ctx context.Context, bucket string, gen int, hash []byte) (int, error)
	// SetRetention changes a live bucket's retention and the expiry of
	// every object in it.
	SetRetention(ctx context.Context, bucket string, retention time.Duration) error
	// DeleteBucket marks a live bucket deleted at now and forgets its
	// objects' rows.
	DeleteBucket(ctx context.Context, bucket string, now time.Time) error
	// ExpiredObjects lists up to limit objects expired at now.
	ExpiredObjects(ctx context.Context, now time.Time, limit int) ([]Object, error)
	// DeleteObjects forgets objects by (bucket, key).
	DeleteObjects(ctx context.Context, objs []Object) error
	// ObjectKeys lists the keys of every object row of a bucket, expired
	// or not (what the object store may hold for it).
	ObjectKeys(ctx context.Context, bucket string) ([]string, error)
	// DeletedBuckets lists up to limit buckets marked deleted.
	DeletedBuckets(ctx context.Context, limit int) ([]Bucket, error)
	// ForgetBucket removes a deleted bucket's row.
	ForgetBucket(ctx context.Context, id string) error
}

// Request is a presigned HTTP request a client makes directly against the
// object store (or parleyd's own object endpoint). URL may be relative to
// the relay's base URL.
type Request struct {
	Method  string
	URL     string
	Headers map[string]string
	Expires time.Time
}

// Backend stores objects under paths "BUCKET/KEY" and signs URLs to them.
type Backend interface {
	// Name says which backend this is ("disk" or "s3"), for logs.
	Name() string
	// PresignPut returns a request that uploads exactly size bytes to o.
	PresignPut(ctx context.Context, o Object, gen int, size int64, expires time.Time) (Request, error)
	// PresignGet returns a request that downloads o.
	PresignGet(ctx context.Context, o Object, gen int, expires time.Time) (Request, error)
	// Delete removes objects; missing ones are not an error.
	Delete(ctx context.Context, objs []Object) error
	// DeleteBucket removes every object of a bucket.
	DeleteBucket(ctx context.Context, bucket string) error
	// List calls visit for every object stored, with its bucket, key and
	// last modification (uploads still in progress excluded).
	List(ctx context.Context, visit func(bucket, key string, modified time.Time) error) error
}

// Service answers bucket requests.
type Service struct {
	cfg     Config
	store   Store
	backend Backend
	hashKey []byte
	log     *slog.Logger
	limit   *ratelimit.Limiter
	create  *ratelimit.Limiter
	now     func() time.Time
	// reconciled is when Sweep last compared the object store with the
	// database (Sweep runs from one goroutine).
	reconciled time.Time
}

// Options are a Service's collaborators.
type Options struct {
	Store   Store
	Backend Backend
	// HashKey keys the stored secret hashes (from the root secret).
	HashKey []byte
	Log     *slog.Logger
	// Limit bounds attachment requests per device, Create bucket creations
	// per account (nil: no limit).
	Limit, Create *ratelimit.Limiter
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// DefaultLimit and DefaultCreateLimit are the request budgets parleyd uses:
// plenty for sending files, too little to use the relay as a file host.
var (
	DefaultLimit       = ratelimit.Rule{Burst: 120, Every: time.Second}
	DefaultCreateLimit = ratelimit.Rule{Burst: 20, Every: 5 * time.Minute}
)

// New returns a Service.
func New(cfg Config, o Options) (*Service, error) {
	switch {
	case o.Store == nil || o.Backend == nil:
		return nil, errors.New("attachments: store and backend are required")
	case len(o.HashKey) < 32:
		return nil, errors.New("attachments: hash key must be at least 32 bytes")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Service{cfg: cfg, store: o.Store, backend: o.Backend, hashKey: o.HashKey, log: o.Log,
		limit: o.Limit, create: o.Create, now: o.Now}, nil
}

// Config returns the limits in force, which clients are told on creation.
func (s *Service) Config() Config { return s.cfg }

// Backend returns the object store in use.
func (s *Service) Backend() Backend { return s.backend }

// NewID returns a random 128-bit identifier in its text form, as used for
// bucket ids and object keys.
func NewID() string {
	b := make([]byte, idBytes)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ValidID reports whether s is the text form of a 128-bit identifier.
func ValidID(s string) bool {
	if len(s) != base64.RawURLEncoding.EncodedLen(idBytes) {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && base64.RawURLEncoding.EncodeToString(b) == s
}

// HashSecret is the hash a client sends in place of a secret when it
// creates a bucket or rotates its member secret.
func HashSecret(secret []byte) []byte {
	h := sha256.Sum256(secret)
	return h[:]
}

// keyed turns a client's secret hash into the stored form, so a copy of the
// database cannot even be used to test guesses without the server's key.
func (s *Service) keyed(clientHash []byte) []byte {
	m := hmac.New(sha256.New, s.hashKey)
	m.Write(clientHash)
	return m.Sum(nil)
}

func (s *Service) opens(secret, stored []byte) bool {
	if len(secret) != SecretSize {
		return false
	}
	return subtle.ConstantTimeCompare(s.keyed(HashSecret(secret)), stored) == 1
}

func (s *Service) allow(l *ratelimit.Limiter, key string) error {
	if ok, wait := l.Allow(key); !ok {
		return &ratelimit.Error{RetryAfter: wait}
	}
	return nil
}

func (s *Service) retention(seconds int64) (time.Duration, error) {
	if seconds == 0 {
		return s.cfg.DefaultRetention, nil
	}
	r := time.Duration(seconds) * time.Second
	if seconds < 0 || seconds > int64(s.cfg.MaxRetention/time.Second) || r < MinRetention {
		return 0, fmt.Errorf("%w: retention must be from %d to %d seconds", ErrInvalid,
			int64(MinRetention/time.Second), int64(s.cfg.MaxRetention/time.Second))
	}
	return r, nil
}

// Create makes a bucket from the hashes of the creator's member and admin
// secrets; retentionSeconds 0 means the default. It returns the bucket.
func (s *Service) Create(ctx context.Context, p accounts.Principal, memberHash, adminHash []byte, retentionSeconds int64) (Bucket, error) {
	if err := s.allow(s.create, p.Account.String()); err != nil {
		return Bucket{}, err
	}
	if len(memberHash) != sha256.Size || len(adminHash) != sha256.Size {
		return Bucket{}, fmt.Errorf("%w: secret hashes must be %d bytes", ErrInvalid, sha256.Size)
	}
	if subtle.ConstantTimeCompare(memberHash, adminHash) == 1 {
		return Bucket{}, fmt.Errorf("%w: member and admin secrets must differ", ErrInvalid)
	}
	ret, err := s.retention(retentionSeconds)
	if err != nil {
		return Bucket{}, err
	}
	b := Bucket{ID: NewID(), MemberHash: s.keyed(memberHash), AdminHash: s.keyed(adminHash),
		Retention: ret}
	if err := s.store.CreateBucket(ctx, b); err != nil {
		return Bucket{}, fmt.Errorf("create bucket: %w", err)
	}
	s.log.InfoContext(ctx, "attachment bucket created", "bucket", b.ID, "retention", ret.String())
	return b, nil
}

// open loads a live bucket and checks the secret against the member hash
// (admin false) or the admin hash. Unknown buckets and wrong secrets are
// told apart: bucket ids are 128-bit random, so knowing one exists tells a
// guesser nothing, while the distinction helps a client recover.
func (s *Service) open(ctx context.Context, p accounts.Principal, bucket string, secret []byte, admin bool) (Bucket, error) {
	if err := s.allow(s.limit, p.Account.String()+"/"+fmt.Sprint(p.Device)); err != nil {
		return Bucket{}, err
	}
	if !ValidID(bucket) {
		return Bucket{}, fmt.Errorf("%w: malformed bucket id", ErrInvalid)
	}
	if len(secret) != SecretSize {
		return Bucket{}, fmt.Errorf("%w: secrets are %d bytes", ErrInvalid, SecretSize)
	}
	b, err := s.store.Bucket(ctx, bucket)
	if err != nil {
		return Bucket{}, err
	}
	stored := b.MemberHash
	if admin {
		stored = b.AdminHash
	}
	if !s.opens(secret, stored) {
		return Bucket{}, ErrForbidden
	}
	return b, nil
}

// Upload reserves a new object of exactly size bytes in bucket and returns
// its key and the request that uploads it.
func (s *Service) Upload(ctx context.Context, p accounts.Principal, bucket string, memberSecret []byte, size int64) (string, Request, error) {
	if size < 1 {
		return "", Request{}, fmt.Errorf("%w: size must be positive", ErrInvalid)
	}
	if size > s.cfg.MaxObjectBytes {
		return "", Request{}, fmt.Errorf("%w (%d bytes at most)", ErrTooLarge, s.cfg.MaxObjectBytes)
	}
	b, err := s.open(ctx, p, bucket, memberSecret, false)
	if err != nil {
		return "", Request{}, err
	}
	now := s.now()
	o := Object{Bucket: b.ID, Key: NewID(), Size: size, Created: now, Expires: now.Add(b.Retention)}
	if err := s.store.ReserveObject(ctx, o, b.Generation, s.cfg.QuotaBytes); err != nil {
		return "", Request{}, err
	}
	req, err := s.backend.PresignPut(ctx, o, b.Generation, size, s.urlExpiry(now, o))
	if err != nil {
		return "", Request{}, fmt.Errorf("sign upload URL: %w", err)
	}
	return o.Key, req, nil
}

// Download returns the request that downloads object key of bucket.
func (s *Service) Download(ctx context.Context, p accounts.Principal, bucket string, memberSecret []byte, key string) (Request, error) {
	if !ValidID(key) {
		return Request{}, fmt.Errorf("%w: malformed object key", ErrInvalid)
	}
	b, err := s.open(ctx, p, bucket, memberSecret, false)
	if err != nil {
		return Request{}, err
	}
	now := s.now()
	o, err := s.store.Object(ctx, b.ID, key, now)
	if err != nil {
		return Request{}, err
	}
	req, err := s.backend.PresignGet(ctx, o, b.Generation, s.urlExpiry(now, o))
	if err != nil {
		return Request{}, fmt.Errorf("sign download URL: %w", err)
	}
	return req, nil
}

// urlExpiry is when a URL for o stops working: after the URL lifetime, or
// when the object expires if that is sooner. URLs are signed to the second.
func (s *Service) urlExpiry(now time.Time, o Object) time.Time {
	t := now.Add(s.cfg.URLTTL)
	if o.Expires.Before(t) {
		t = o.Expires
	}
	return t.Truncate(time.Second)
}

// RotateMemberSecret replaces the member secret: the old one stops
// opening the bucket at once, and so do URLs parleyd signed under it.
func (s *Service) RotateMemberSecret(ctx context.Context, p accounts.Principal, bucket string, adminSecret, newMemberHash []byte) error {
	if len(newMemberHash) != sha256.Size {
		return fmt.Errorf("%w: secret hashes must be %d bytes", ErrInvalid, sha256.Size)
	}
	b, err := s.open(ctx, p, bucket, adminSecret, true)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(newMemberHash, HashSecret(adminSecret)) == 1 {
		return fmt.Errorf("%w: member and admin secrets must differ", ErrInvalid)
	}
	gen, err := s.store.RotateMemberSecret(ctx, b.ID, b.Generation, s.keyed(newMemberHash))
	if err != nil {
		return err
	}
	s.log.InfoContext(ctx, "attachment bucket member secret rotated", "bucket", b.ID, "generation", gen)
	return nil
}

// SetRetention sets how long the bucket keeps objects (0: the default);
// objects already older than that expire at the next sweep.
func (s *Service) SetRetention(ctx context.Context, p accounts.Principal, bucket string, adminSecret []byte, retentionSeconds int64) (time.Duration, error) {
	ret, err := s.retention(retentionSeconds)
	if err != nil {
		return 0, err
	}
	b, err := s.open(ctx, p, bucket, adminSecret, true)
	if err != nil {
		return 0, err
	}
	if err := s.store.SetRetention(ctx, b.ID, ret); err != nil {
		return 0, err
	}
	s.log.InfoContext(ctx, "attachment bucket retention set", "bucket", b.ID, "retention", ret.String())
	return ret, nil
}

// Delete deletes the bucket and wipes its objects. If the object store
// fails, the bucket is still gone for every client and Sweep finishes the
// wipe.
func (s *Service) Delete(ctx context.Context, p accounts.Principal, bucket string, adminSecret []byte) error {
	b, err := s.open(ctx, p, bucket, adminSecret, true)
	if err != nil {
		return err
	}
	if err := s.store.DeleteBucket(ctx, b.ID, s.now()); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "attachment bucket deleted", "bucket", b.ID)
	if err := s.backend.DeleteBucket(ctx, b.ID); err != nil {
		s.log.WarnContext(ctx, "wipe deleted bucket; the sweeper retries", "bucket", b.ID, "err", err)
	}
	return nil
}

// Sweep deletes objects past their bucket's retention and wipes deleted
// buckets; a deleted bucket is wiped again once every URL issued before its
// deletion has expired (an upload may have landed meanwhile), then
// forgotten. It returns how many objects and buckets it removed.
func (s *Service) Sweep(ctx context.Context) (objects, buckets int, err error) {
	const batch = 500
	now := s.now()
	for {
		objs, err := s.store.ExpiredObjects(ctx, now, batch)
		if err != nil {
			return objects, buckets, fmt.Errorf("list expired objects: %w", err)
		}
		if len(objs) == 0 {
			break
		}
		if err := s.backend.Delete(ctx, objs); err != nil {
			return objects, buckets, fmt.Errorf("delete expired objects: %w", err)
		}
		if err := s.store.DeleteObjects(ctx, objs); err != nil {
			return objects, buckets, fmt.Errorf("forget expired objects: %w", err)
		}
		objects += len(objs)
		if len(objs) < batch {
			break
		}
	}
	deleted, err := s.store.DeletedBuckets(ctx, batch)
	if err != nil {
		return objects, buckets, fmt.Errorf("list deleted buckets: %w", err)
	}
	for _, b := range deleted {
		if err := s.backend.DeleteBucket(ctx, b.ID); err != nil {
			return objects, buckets, fmt.Errorf("wipe deleted bucket: %w", err)
		}
		// Wait a minute past the URL lifetime: an upload that started just
		// before its URL expired may still be finishing.
		if now.After(b.Deleted.Add(s.cfg.URLTTL + time.Minute)) {
			if err := s.store.ForgetBucket(ctx, b.ID); err != nil {
				return objects, buckets, fmt.Errorf("forget deleted bucket: %w", err)
			}
			buckets++
		}
	}
	// Last, and never in the way of the rest: a failing object store is
	// tried again at the next interval, not at every sweep.
	if now.Sub(s.reconciled) >= s.cfg.ReconcileEvery {
		s.reconciled = now
		n, err := s.reconcile(ctx)
		if err != nil {
			s.log.WarnContext(ctx, "reconciling the object store with the database failed; retried at the next interval", "err", err)
		}
		objects += n
	}
	return objects, buckets, nil
}

// reconcile deletes every stored object that has no row: nothing in the
// object store outlives its row, even an upload made with a URL issued
// before the object expired (S3 cannot revoke a presigned URL). It returns
// how many it deleted.
func (s *Service) reconcile(ctx context.Context) (int, error) {
	stored := map[string][]string{} // bucket → keys
	err := s.backend.List(ctx, func(bucket, key string, _ time.Time) error {
		stored[bucket] = append(stored[bucket], key)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("list stored objects: %w", err)
	}
	var orphans []Object
	for bucket, keys := range stored {
		rows, err := s.store.ObjectKeys(ctx, bucket)
		if err != nil {
			return 0, err
		}
		known := make(map[string]bool, len(rows))
		for _, k := range rows {
			known[k] = true
		}
		for _, k := range keys {
			if !known[k] {
				orphans = append(orphans, Object{Bucket: bucket, Key: k})
			}
		}
	}
	if len(orphans) == 0 {
		return 0, nil
	}
	if err := s.backend.Delete(ctx, orphans); err != nil {
		return 0, fmt.Errorf("delete stored objects without a row: %w", err)
	}
	s.log.InfoContext(ctx, "attachment objects without a row deleted", "objects", len(orphans))
	return len(orphans), nil
}
