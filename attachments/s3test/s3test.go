// Package s3test starts a real S3-compatible server for tests: versitygw
// (Apache-2.0) on its posix backend, which checks SigV4 signatures, expiry
// and signed Content-Length the way S3 does, so presigned-URL refusals are
// tested for real.
//
// PARLEY_VERSITYGW names the versitygw binary (scripts/with-s3 installs it
// and sets it). When it is unset the test is skipped, unless
// PARLEY_TEST_S3_REQUIRED is set (as `make test` and CI do): then it fails.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Server is a running versitygw with one empty bucket.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	Bucket    string
	AccessKey string
	SecretKey string
	// Dir is the posix backend's directory: objects are files under
	// Dir/BUCKET/, so tests can see what the store holds.
	Dir string
}

// Env is the environment a process needs to reach the server with the
// standard AWS credential chain.
func (s *Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true"}
}

// Client returns an S3 client for the server.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:                     "us-east-1",
		Credentials:                credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		BaseEndpoint:               aws.String(s.Endpoint),
		UsePathStyle:               true,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// Start runs a fresh server for t, stopped at cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := os.Getenv("PARLEY_VERSITYGW")
	if bin == "" {
		if os.Getenv("PARLEY_TEST_S3_REQUIRED") != "" {
			t.Fatal("PARLEY_VERSITYGW is not set but PARLEY_TEST_S3_REQUIRED is: run the tests with `make test`")
		}
		t.Skip("S3 tests need PARLEY_VERSITYGW (run `make test`, which installs versitygw)")
	}
	key := make([]byte, 16)
	rand.Read(key)
	s := &Server{Bucket: "parley-test", AccessKey: "parleytest", SecretKey: hex.EncodeToString(key), Dir: t.TempDir()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s.Endpoint = "http://" + addr
	cmd := exec.Command(bin, "--access", s.AccessKey, "--secret", s.SecretKey, "--port", addr, "posix", s.Dir)
	logf, err := os.Create(filepath.Join(t.TempDir(), "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("versitygw did not start: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &s.Bucket}); err != nil {
		t.Fatalf("create test bucket: %v", err)
	}
	return s
}

// Objects lists every key in the bucket.
func (s *Server) Objects(t testing.TB) []string {
	t.Helper()
	var keys []string
	pages := s3.NewListObjectsV2Paginator(s.Client(), &s3.ListObjectsV2Input{Bucket: &s.Bucket})
	for pages.HasMorePages() {
		page, err := pages.NextPage(context.Background())
		if err != nil {
			t.Fatal(fmt.Errorf("list objects: %w", err))
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}
