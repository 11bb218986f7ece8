package attachments

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// S3Config says where an S3 backend keeps objects. Credentials come from
// the standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
// AWS_PROFILE, web identity, instance roles), never from flags.
type S3Config struct {
	// Bucket is the S3 bucket holding every chat bucket, as prefixes.
	Bucket string
	// Prefix goes before every object path ("parley/" keeps the relay's
	// objects apart from others in a shared bucket).
	Prefix string
	// Region is the S3 region (default from the AWS chain, else us-east-1).
	Region string
	// Endpoint, if set, is an S3-compatible server's base URL; it implies
	// path-style addressing and checksums only where the API requires them.
	Endpoint string
	// PublicEndpoint, if set, is the base URL clients reach the store at,
	// used in the upload and download URLs they are given, when the relay
	// itself reaches it at another (internal) address: Endpoint.
	PublicEndpoint string
	// SSE is the server-side encryption uploads must request: "AES256",
	// "aws:kms", or "none". The header is part of each upload URL's
	// signature, so an upload without it fails.
	SSE string
}

// S3 keeps objects in an S3 (or S3-compatible) bucket under
// PREFIX/BUCKET/KEY and hands out presigned URLs; clients move the bytes
// directly to and from the store.
type S3 struct {
	client  *s3.Client
	presign *s3.PresignClient
	bucket  string
	prefix  string
	sse     types.ServerSideEncryption
}

// NewS3 returns an S3 backend.
func NewS3(ctx context.Context, c S3Config) (*S3, error) {
	if c.Bucket == "" {
		return nil, errors.New("attachments: an S3 bucket name is required")
	}
	var sse types.ServerSideEncryption
	switch c.SSE {
	case "", "AES256":
		sse = types.ServerSideEncryptionAes256
	case "aws:kms":
		sse = types.ServerSideEncryptionAwsKms
	case "none":
	default:
		return nil, fmt.Errorf("attachments: S3 server-side encryption %q: want AES256, aws:kms or none", c.SSE)
	}
	opts := []func(*config.LoadOptions) error{}
	if c.Region != "" {
		opts = append(opts, config.WithRegion(c.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(cfg, endpoint(c.Endpoint))
	presign := s3.NewPresignClient(client)
	if c.PublicEndpoint != "" {
		// The signatures cover the host clients will send, so the URLs
		// are signed for the public address itself.
		presign = s3.NewPresignClient(s3.NewFromConfig(cfg, endpoint(c.PublicEndpoint)))
	}
	return &S3{client: client, presign: presign, bucket: c.Bucket, prefix: c.Prefix, sse: sse}, nil
}

// endpoint points a client at an S3-compatible server's base URL (none:
// AWS), with path-style addressing and checksums only where required.
func endpoint(url string) func(*s3.Options) {
	return func(o *s3.Options) {
		if url != "" {
			o.BaseEndpoint = aws.String(url)
			o.UsePathStyle = true
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		}
	}
}

// Name implements Backend.
func (b *S3) Name() string { return "s3" }

// Check confirms the bucket is reachable with the configured credentials.
func (b *S3) Check(ctx context.Context) error {
	if _, err := b.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &b.bucket}); err != nil {
		return fmt.Errorf("S3 bucket %q: %w", b.bucket, err)
	}
	return nil
}

func (b *S3) path(o Object) string { return b.prefix + o.Bucket + "/" + o.Key }

func expiresIn(expires time.Time) func(*s3.PresignOptions) {
	ttl := max(time.Until(expires), time.Second)
	return s3.WithPresignExpires(ttl.Round(time.Second))
}

// request turns a presigned request into what clients are told to send,
// leaving out the headers their HTTP library sets itself.
func request(p *v4.PresignedHTTPRequest, expires time.Time) Request {
	h := map[string]string{}
	for k, v := range p.SignedHeader {
		switch http.CanonicalHeaderKey(k) {
		case "Host", "Content-Length":
		default:
			h[http.CanonicalHeaderKey(k)] = strings.Join(v, ",")
		}
	}
	return Request{Method: p.Method, URL: p.URL, Headers: h, Expires: expires}
}

// PresignPut implements Backend: the signature covers Content-Length, so
// the store refuses a body of any other size.
func (b *S3) PresignPut(ctx context.Context, o Object, _ int, size int64, expires time.Time) (Request, error) {
	p, err := b.presign.PresignPutObject(ctx, &s3.PutObjectInput{
		Bucket: &b.bucket, Key: aws.String(b.path(o)), ContentLength: aws.Int64(size),
		ContentType: aws.String("application/octet-stream"), ServerSideEncryption: b.sse,
	}, expiresIn(expires))
	if err != nil {
		return Request{}, err
	}
	return request(p, expires), nil
}

// PresignGet implements Backend.
func (b *S3) PresignGet(ctx context.Context, o Object, _ int, expires time.Time) (Request, error) {
	p, err := b.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &b.bucket, Key: aws.String(b.path(o))}, expiresIn(expires))
	if err != nil {
		return Request{}, err
	}
	return request(p, expires), nil
}

// Delete implements Backend, 1000 objects per request.
func (b *S3) Delete(ctx context.Context, objs []Object) error {
	keys := make([]string, len(objs))
	for i, o := range objs {
		keys[i] = b.path(o)
	}
	return b.deleteKeys(ctx, keys)
}

func (b *S3) deleteKeys(ctx context.Context, keys []string) error {
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		ids := make([]types.ObjectIdentifier, n)
		for i, k := range keys[:n] {
			ids[i] = types.ObjectIdentifier{Key: aws.String(k)}
		}
		out, err := b.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: &b.bucket, Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
		})
		if err != nil {
			return fmt.Errorf("delete objects: %w", err)
		}
		for _, e := range out.Errors {
			if aws.ToString(e.Code) != "NoSuchKey" {
				return fmt.Errorf("delete object: %s: %s", aws.ToString(e.Code), aws.ToString(e.Message))
			}
		}
		keys = keys[n:]
	}
	return nil
}

// List implements Backend: every object under the prefix whose key is
// BUCKET/KEY.
func (b *S3) List(ctx context.Context, visit func(bucket, key string, modified time.Time) error) error {
	pages := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: &b.bucket, Prefix: aws.String(b.prefix)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list objects: %w", err)
		}
		for _, o := range page.Contents {
			bucket, key, ok := strings.Cut(strings.TrimPrefix(aws.ToString(o.Key), b.prefix), "/")
			if !ok || !ValidID(bucket) || !ValidID(key) {
				continue
			}
			if err := visit(bucket, key, aws.ToTime(o.LastModified)); err != nil {
				return err
			}
		}
	}
	return nil
}

// DeleteBucket implements Backend: it lists the bucket's prefix and deletes
// everything under it.
func (b *S3) DeleteBucket(ctx context.Context, bucket string) error {
	if !ValidID(bucket) {
		return fmt.Errorf("%w: malformed bucket id", ErrInvalid)
	}
	pages := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{
		Bucket: &b.bucket, Prefix: aws.String(b.prefix + bucket + "/"),
	})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list bucket objects: %w", err)
		}
		keys := make([]string, 0, len(page.Contents))
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
		if err := b.deleteKeys(ctx, keys); err != nil {
			return err
		}
	}
	return nil
}
