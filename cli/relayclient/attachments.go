package relayclient

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// BucketInfo is a new chat bucket and the limits it lives under.
type BucketInfo struct {
	BucketID         string `json:"bucket_id"`
	RetentionSeconds int64  `json:"retention_seconds"`
	QuotaBytes       int64  `json:"quota_bytes"`
	MaxObjectBytes   int64  `json:"max_object_bytes"`
}

// Presigned is a request to make directly against the object store.
type Presigned struct {
	Method    string            `json:"method"`
	URL       string            `json:"url"`
	Headers   map[string]string `json:"headers"`
	ExpiresAt int64             `json:"expires_at"`
}

func secretHash(secret []byte) []byte {
	h := sha256.Sum256(secret)
	return h[:]
}

// CreateBucket creates a chat bucket opened by the two secrets (only their
// hashes are sent) that keeps objects retentionSeconds (0: the relay's
// default).
func (c *Client) CreateBucket(ctx context.Context, memberSecret, adminSecret []byte, retentionSeconds int64) (BucketInfo, error) {
	var out BucketInfo
	_, err := c.do(ctx, "POST", "/v1/attachments/buckets", nil, map[string]any{
		"member_secret_hash": secretHash(memberSecret), "admin_secret_hash": secretHash(adminSecret),
		"retention_seconds": retentionSeconds}, &out)
	return out, err
}

// SetBucketRetention sets how long a bucket keeps objects (admin; 0: the
// relay's default) and returns the retention in force.
func (c *Client) SetBucketRetention(ctx context.Context, bucket string, adminSecret []byte, seconds int64) (int64, error) {
	var out struct {
		RetentionSeconds int64 `json:"retention_seconds"`
	}
	_, err := c.do(ctx, "PUT", "/v1/attachments/buckets/"+url.PathEscape(bucket)+"/retention", nil,
		map[string]any{"admin_secret": adminSecret, "retention_seconds": seconds}, &out)
	return out.RetentionSeconds, err
}

// UploadURL reserves an object of exactly size bytes and returns its key
// and the request that uploads it.
func (c *Client) UploadURL(ctx context.Context, bucket string, memberSecret []byte, size int64) (string, Presigned, error) {
	var out struct {
		ObjectKey string    `json:"object_key"`
		Upload    Presigned `json:"upload"`
	}
	_, err := c.do(ctx, "POST", "/v1/attachments/buckets/"+url.PathEscape(bucket)+"/uploads", nil,
		map[string]any{"member_secret": memberSecret, "size": size}, &out)
	return out.ObjectKey, out.Upload, err
}

// DownloadURL returns the request that downloads an object.
func (c *Client) DownloadURL(ctx context.Context, bucket string, memberSecret []byte, key string) (Presigned, error) {
	var out Presigned
	_, err := c.do(ctx, "POST", "/v1/attachments/buckets/"+url.PathEscape(bucket)+"/downloads", nil,
		map[string]any{"member_secret": memberSecret, "object_key": key}, &out)
	return out, err
}

// RotateMemberSecret replaces a bucket's member secret (admin); the old
// one stops working at once.
func (c *Client) RotateMemberSecret(ctx context.Context, bucket string, adminSecret, newMemberSecret []byte) error {
	_, err := c.do(ctx, "PUT", "/v1/attachments/buckets/"+url.PathEscape(bucket)+"/member-secret", nil,
		map[string]any{"admin_secret": adminSecret, "member_secret_hash": secretHash(newMemberSecret)}, nil)
	return err
}

// objectRequest builds p against the relay's base URL (disk-backend URLs
// are relative), without device credentials: the URL is the credential.
func (c *Client) objectRequest(ctx context.Context, p Presigned, body io.Reader) (*http.Request, error) {
	ref, err := url.Parse(p.URL)
	if err != nil {
		return nil, fmt.Errorf("relay gave an unusable object URL: %w", err)
	}
	u := c.base.ResolveReference(ref)
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("relay gave an object URL with scheme %q", u.Scheme)
	}
	req, err := http.NewRequestWithContext(ctx, p.Method, u.String(), body)
	if err != nil {
		return nil, err
	}
	for k, v := range p.Headers {
		req.Header.Set(k, v)
	}
	return req, nil
}

// Put uploads size bytes from body with p.
func (c *Client) Put(ctx context.Context, p Presigned, body io.Reader, size int64) error {
	req, err := c.objectRequest(ctx, p, body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.objects.Do(req)
	if err != nil {
		return fmt.Errorf("%w: upload: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return objectError(resp)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return nil
}

// Get downloads with p; the caller closes the body.
func (c *Client) Get(ctx context.Context, p Presigned) (io.ReadCloser, int64, error) {
	req, err := c.objectRequest(ctx, p, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.objects.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: download: %w", ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, 0, objectError(resp)
	}
	return resp.Body, resp.ContentLength, nil
}

var s3Code = regexp.MustCompile(`<Code>([A-Za-z]{1,64})</Code>`)

// objectError turns an object store's refusal (parleyd's JSON or S3's XML)
// into an *Error.
func objectError(resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	e := &Error{Status: resp.StatusCode, Code: "object_store_" + strconv.Itoa(resp.StatusCode)}
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	switch {
	case json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "":
		e.Code, e.Message = eb.Error.Code, eb.Error.Message
	case s3Code.Match(raw):
		e.Message = "object store refused: " + string(s3Code.FindSubmatch(raw)[1])
	default:
		e.Message = strings.TrimSpace(string(raw[:min(len(raw), 200)]))
	}
	return e
}
