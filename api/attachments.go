package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/attachments"
	"github.com/parleyhq/parley/audit"
)

type createBucketRequest struct {
	MemberSecretHash Bytes `json:"member_secret_hash"`
	AdminSecretHash  Bytes `json:"admin_secret_hash"`
	RetentionSeconds int64 `json:"retention_seconds,omitzero"`
}

type bucketResponse struct {
	BucketID         string `json:"bucket_id"`
	RetentionSeconds int64  `json:"retention_seconds"`
	QuotaBytes       int64  `json:"quota_bytes"`
	MaxObjectBytes   int64  `json:"max_object_bytes"`
}

type objectUploadRequest struct {
	MemberSecret Bytes `json:"member_secret"`
	Size         int64 `json:"size"`
}

type presignedJSON struct {
	Method    string            `json:"method"`
	URL       string            `json:"url"`
	Headers   map[string]string `json:"headers"`
	ExpiresAt int64             `json:"expires_at"` // Unix ms
}

type uploadResponse struct {
	ObjectKey string        `json:"object_key"`
	Upload    presignedJSON `json:"upload"`
}

type downloadRequest struct {
	MemberSecret Bytes  `json:"member_secret"`
	ObjectKey    string `json:"object_key"`
}

type rotateRequest struct {
	AdminSecret      Bytes `json:"admin_secret"`
	MemberSecretHash Bytes `json:"member_secret_hash"`
}

type retentionRequest struct {
	AdminSecret      Bytes `json:"admin_secret"`
	RetentionSeconds int64 `json:"retention_seconds"`
}

type retentionResponse struct {
	RetentionSeconds int64 `json:"retention_seconds"`
}

type adminRequest struct {
	AdminSecret Bytes `json:"admin_secret"`
}

func presigned(r attachments.Request) presignedJSON {
	h := r.Headers
	if h == nil {
		h = map[string]string{}
	}
	return presignedJSON{Method: r.Method, URL: r.URL, Headers: h, ExpiresAt: r.Expires.UnixMilli()}
}

func (s *Server) createBucket(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	var req createBucketRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	b, err := s.Attachments.Create(r.Context(), p, req.MemberSecretHash, req.AdminSecretHash, req.RetentionSeconds)
	if err != nil {
		return err
	}
	s.audit(r, audit.BucketCreated, p.Account, p.Device, map[string]string{"bucket": b.ID})
	cfg := s.Attachments.Config()
	writeJSON(w, http.StatusCreated, bucketResponse{BucketID: b.ID, RetentionSeconds: int64(b.Retention / time.Second),
		QuotaBytes: cfg.QuotaBytes, MaxObjectBytes: cfg.MaxObjectBytes})
	return nil
}

func (s *Server) uploadObject(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	var req objectUploadRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	key, up, err := s.Attachments.Upload(r.Context(), p, r.PathValue("bucket"), req.MemberSecret, req.Size)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, uploadResponse{ObjectKey: key, Upload: presigned(up)})
	return nil
}

func (s *Server) downloadObject(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	var req downloadRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	down, err := s.Attachments.Download(r.Context(), p, r.PathValue("bucket"), req.MemberSecret, req.ObjectKey)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, presigned(down))
	return nil
}

func (s *Server) rotateMemberSecret(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	var req rotateRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := s.Attachments.RotateMemberSecret(r.Context(), p, r.PathValue("bucket"), req.AdminSecret, req.MemberSecretHash); err != nil {
		return err
	}
	s.audit(r, audit.BucketSecretRotated, p.Account, p.Device, map[string]string{"bucket": r.PathValue("bucket")})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) setBucketRetention(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	var req retentionRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	ret, err := s.Attachments.SetRetention(r.Context(), p, r.PathValue("bucket"), req.AdminSecret, req.RetentionSeconds)
	if err != nil {
		return err
	}
	s.audit(r, audit.BucketRetentionSet, p.Account, p.Device, map[string]string{"bucket": r.PathValue("bucket"), "retention_seconds": strconv.FormatInt(int64(ret/time.Second), 10)})
	writeJSON(w, http.StatusOK, retentionResponse{RetentionSeconds: int64(ret / time.Second)})
	return nil
}

func (s *Server) deleteBucket(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	var req adminRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := s.Attachments.Delete(r.Context(), p, r.PathValue("bucket"), req.AdminSecret); err != nil {
		return err
	}
	s.audit(r, audit.BucketDeleted, p.Account, p.Device, map[string]string{"bucket": r.PathValue("bucket")})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// serveObject answers the disk backend's signed object URLs; the URL is
// the credential, so it is not device-authenticated.
func (s *Server) serveObject(w http.ResponseWriter, r *http.Request) error {
	return s.Attachments.ServeObject(w, r, r.PathValue("bucket"), r.PathValue("key"))
}
