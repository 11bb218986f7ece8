package api

import (
	"net/http"
	"time"

	"github.com/parleyhq/parley/accounts"
)

// senderCertificateResponse is GET /v1/certificate/delivery's answer.
type senderCertificateResponse struct {
	Certificate Bytes `json:"certificate"` // a serialized SenderCertificate
	Expires     int64 `json:"expires"`     // Unix ms
}

// trustRootResponse is GET /v1/certificate/trust-root's answer.
type trustRootResponse struct {
	TrustRoot Bytes  `json:"trust_root"` // 33-byte public key
	KeyID     uint32 `json:"key_id"`     // of the server certificate that signs
}

// sealedSenderDisabled answers the certificate endpoints of a relay
// started without a sender certificate file.
func sealedSenderDisabled() error {
	return errorf(http.StatusNotFound, "sealed_sender_disabled", "sealed sender is not configured on this relay")
}

// senderCertificate issues the calling device a sender certificate: its
// account id, device id and the account's identity key, no phone number.
func (s *Server) senderCertificate(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	if s.SealedSender == nil {
		return sealedSenderDisabled()
	}
	acct, err := s.Accounts.Account(r.Context(), p.Account)
	if err != nil {
		return err
	}
	cert, expires, err := s.SealedSender.Issue(p.Account, p.Device, acct.IdentityKey[:], time.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, senderCertificateResponse{Certificate: cert, Expires: expires.UnixMilli()})
	return nil
}

// trustRoot tells anyone the trust root sender certificates validate under
// and the id of the server certificate that signs them. Clients pin the
// root from a channel they trust; this answer helps set-up and checks.
func (s *Server) trustRoot(w http.ResponseWriter, r *http.Request) error {
	if s.SealedSender == nil {
		return sealedSenderDisabled()
	}
	writeJSON(w, http.StatusOK, trustRootResponse{TrustRoot: s.SealedSender.TrustRoot().Bytes(), KeyID: s.SealedSender.KeyID()})
	return nil
}
