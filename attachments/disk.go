package attachments

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

// ObjectPath is where parleyd serves disk-backed objects; the API mounts
// Service.ServeObject there.
const ObjectPath = "/v1/attachments/objects/"

// Disk keeps objects as files under one directory, opened as an os.Root so
// no request can reach outside it, and signs its own URLs, which parleyd
// serves (ServeObject). The URLs name the bucket's member-secret
// generation, so rotating the secret or deleting the bucket revokes them
// at once.
type Disk struct {
	root *os.Root
	key  []byte
}

// NewDisk opens (creating it 0700 if needed) dir as the object store,
// signing URLs with key (at least 32 bytes, from the root secret).
func NewDisk(dir string, key []byte) (*Disk, error) {
	if len(key) < 32 {
		return nil, errors.New("attachments: URL signing key must be at least 32 bytes")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create attachment directory: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open attachment directory: %w", err)
	}
	return &Disk{root: root, key: key}, nil
}

// Close releases the directory.
func (d *Disk) Close() error { return d.root.Close() }

// Name implements Backend.
func (d *Disk) Name() string { return "disk" }

// signature is the MAC over everything a URL grants.
func (d *Disk) signature(method string, o Object, gen int, size int64, expires int64) string {
	m := hmac.New(sha256.New, d.key)
	fmt.Fprintf(m, "parley object url v1\n%s\n%s\n%s\n%d\n%d\n%d", method, o.Bucket, o.Key, gen, size, expires)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (d *Disk) presign(method string, o Object, gen int, size int64, expires time.Time) Request {
	q := url.Values{}
	q.Set("gen", strconv.Itoa(gen))
	if method == http.MethodPut {
		q.Set("size", strconv.FormatInt(size, 10))
	}
	q.Set("expires", strconv.FormatInt(expires.Unix(), 10))
	q.Set("sig", d.signature(method, o, gen, size, expires.Unix()))
	return Request{Method: method, URL: ObjectPath + o.Bucket + "/" + o.Key + "?" + q.Encode(), Expires: expires}
}

// PresignPut implements Backend.
func (d *Disk) PresignPut(_ context.Context, o Object, gen int, size int64, expires time.Time) (Request, error) {
	return d.presign(http.MethodPut, o, gen, size, expires), nil
}

// PresignGet implements Backend.
func (d *Disk) PresignGet(_ context.Context, o Object, gen int, expires time.Time) (Request, error) {
	return d.presign(http.MethodGet, o, gen, 0, expires), nil
}

func objectFile(o Object) string { return o.Bucket + "/" + o.Key }

// Delete implements Backend.
func (d *Disk) Delete(_ context.Context, objs []Object) error {
	var errs []error
	for _, o := range objs {
		if err := d.root.Remove(objectFile(o)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DeleteBucket implements Backend.
func (d *Disk) DeleteBucket(_ context.Context, bucket string) error {
	if !ValidID(bucket) {
		return fmt.Errorf("%w: malformed bucket id", ErrInvalid)
	}
	return d.root.RemoveAll(bucket)
}

// List implements Backend: every object file under each bucket directory
// (uploads in progress, which are hidden temporary files, are skipped).
func (d *Disk) List(_ context.Context, visit func(bucket, key string, modified time.Time) error) error {
	buckets, err := fs.ReadDir(d.root.FS(), ".")
	if err != nil {
		return fmt.Errorf("list buckets: %w", err)
	}
	for _, b := range buckets {
		if !b.IsDir() || !ValidID(b.Name()) {
			continue
		}
		objs, err := fs.ReadDir(d.root.FS(), b.Name())
		if err != nil {
			return fmt.Errorf("list bucket: %w", err)
		}
		for _, o := range objs {
			if o.IsDir() || !ValidID(o.Name()) {
				continue
			}
			info, err := o.Info()
			if err != nil {
				continue // removed meanwhile
			}
			if err := visit(b.Name(), o.Name(), info.ModTime()); err != nil {
				return err
			}
		}
	}
	return nil
}

// signedURL is a parsed, authenticated object URL.
type signedURL struct {
	obj  Object
	gen  int
	size int64
}

// verify checks an object URL's signature and expiry at now.
func (d *Disk) verify(method, bucket, key string, q url.Values, now time.Time) (signedURL, error) {
	var u signedURL
	if !ValidID(bucket) || !ValidID(key) {
		return u, ErrBadURL
	}
	gen, err1 := strconv.Atoi(q.Get("gen"))
	expires, err2 := strconv.ParseInt(q.Get("expires"), 10, 64)
	var err3 error
	if method == http.MethodPut {
		u.size, err3 = strconv.ParseInt(q.Get("size"), 10, 64)
	}
	if err := errors.Join(err1, err2, err3); err != nil || gen < 0 || u.size < 0 {
		return u, ErrBadURL
	}
	u.obj, u.gen = Object{Bucket: bucket, Key: key}, gen
	want := d.signature(method, u.obj, gen, u.size, expires)
	if !hmac.Equal([]byte(want), []byte(q.Get("sig"))) || now.Unix() >= expires {
		return u, ErrBadURL
	}
	return u, nil
}

// ServeObject answers a request to a URL the disk backend signed (PUT
// uploads exactly the signed size, GET downloads, with ranges). It returns
// an error for the caller to answer in the API's error format; nil means
// it answered. It refuses every request when the backend is not Disk.
func (s *Service) ServeObject(w http.ResponseWriter, r *http.Request, bucket, key string) error {
	d, ok := s.backend.(*Disk)
	if !ok {
		return ErrNotFound
	}
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	u, err := d.verify(method, bucket, key, r.URL.Query(), s.now())
	if err != nil {
		return err
	}
	b, err := s.store.Bucket(r.Context(), bucket)
	if err != nil {
		return err
	}
	if b.Generation != u.gen {
		return ErrBadURL // the member secret was rotated since
	}
	rc := http.NewResponseController(w)
	if r.Method == http.MethodPut {
		// A URL is good only while its object's reservation lives: once the
		// sweeper has removed the row (the object expired), the URL cannot
		// store a file that no row accounts for.
		if _, err := s.store.Object(r.Context(), bucket, key, s.now()); err != nil {
			return err
		}
		// Large files on slow links outlast the server's default timeouts.
		_ = rc.SetReadDeadline(time.Now().Add(s.cfg.URLTTL + 10*time.Minute))
		return d.put(w, r, u)
	}
	if _, err := s.store.Object(r.Context(), bucket, key, s.now()); err != nil {
		return err
	}
	_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.URLTTL + 10*time.Minute))
	f, err := d.root.Open(objectFile(u.obj))
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound // reserved but not uploaded (yet)
	}
	if err != nil {
		return fmt.Errorf("open object: %w", err)
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "private, no-store")
	http.ServeContent(w, r, "", time.Time{}, f)
	return nil
}

// ErrExists reports an upload to an object that was already uploaded.
var ErrExists = errors.New("the object was already uploaded")

// put writes the body to a temporary file and links it into place only when
// exactly the signed number of bytes arrived, so a failed or oversized
// upload leaves nothing behind and an object is never replaced.
func (d *Disk) put(w http.ResponseWriter, r *http.Request, u signedURL) error {
	if r.ContentLength != u.size {
		if r.ContentLength > u.size || r.ContentLength < 0 {
			return fmt.Errorf("%w: the upload must be exactly %d bytes, with Content-Length", ErrTooLarge, u.size)
		}
		return fmt.Errorf("%w: the upload must be exactly %d bytes", ErrInvalid, u.size)
	}
	if err := d.root.Mkdir(u.obj.Bucket, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create bucket directory: %w", err)
	}
	final := objectFile(u.obj)
	if _, err := d.root.Lstat(final); err == nil {
		return ErrExists
	}
	tmp := u.obj.Bucket + "/." + u.obj.Key + "." + NewID() + ".part"
	f, err := d.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create object: %w", err)
	}
	defer d.root.Remove(tmp)
	n, err := io.Copy(f, http.MaxBytesReader(w, r.Body, u.size))
	if err == nil && n != u.size {
		err = fmt.Errorf("%w: the body ended after %d of %d bytes", ErrInvalid, n, u.size)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return fmt.Errorf("%w: the upload must be exactly %d bytes", ErrTooLarge, u.size)
	case err != nil:
		return fmt.Errorf("%w: upload failed: %v", ErrInvalid, err)
	}
	if err := d.root.Link(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return ErrExists
		}
		return fmt.Errorf("store object: %w", err)
	}
	w.WriteHeader(http.StatusOK)
	return nil
}
