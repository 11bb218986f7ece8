package api

import (
	"net/http"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/audit"
)

type linkCodeResponse struct {
	Code      string `json:"code"`
	ExpiresAt int64  `json:"expires_at"`
}

type linkRequest struct {
	AccountID       string             `json:"account_id"`
	Code            string             `json:"code"`
	Credential      string             `json:"credential"`
	RegistrationID  int                `json:"registration_id"`
	SignedPreKey    signedPreKeyJSON   `json:"signed_prekey"`
	PQLastResortKey signedPreKeyJSON   `json:"pq_last_resort_prekey"`
	PreKeys         []preKeyJSON       `json:"prekeys"`
	PQPreKeys       []signedPreKeyJSON `json:"pq_prekeys"`
}

type provisioningRequest struct {
	Body Bytes `json:"body"`
}

func (s *Server) newLinkCode(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	code, expires, err := s.Accounts.NewLinkCode(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, linkCodeResponse{Code: code, ExpiresAt: expires.UnixMilli()})
	return nil
}

func (s *Server) linkDevice(w http.ResponseWriter, r *http.Request) error {
	var req linkRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	account, err := uuid.Parse(req.AccountID)
	if err != nil || account.String() != req.AccountID {
		return errorf(http.StatusBadRequest, "invalid_account_id", "account_id must be a UUID in canonical form")
	}
	spk, lr, pks, pqs, err := parseDeviceKeys(req.SignedPreKey, req.PQLastResortKey, req.PreKeys, req.PQPreKeys)
	if err != nil {
		return err
	}
	id, err := s.Accounts.LinkDevice(r.Context(), accounts.Link{
		Account: account, Code: req.Code, Credential: req.Credential, RegistrationID: req.RegistrationID,
		SignedPreKey: spk, LastResort: lr, PreKeys: pks, KEMPreKeys: pqs,
	})
	if err != nil {
		return err
	}
	s.audit(r, audit.DeviceLinked, account, id, nil)
	writeJSON(w, http.StatusOK, registerResponse{AccountID: account.String(), DeviceID: id})
	return nil
}

func (s *Server) provisioningSocket(w http.ResponseWriter, r *http.Request) error {
	if err := requireUpgrade(w, r); err != nil {
		return err
	}
	release, err := s.Provisioning.Admit(s.clientIP(r))
	if err != nil {
		return err
	}
	defer release()
	s.Provisioning.Accept(w, r, func(status int, reason error) {
		writeError(w, r, s.Log, &Error{Status: status, Code: "websocket_handshake_failed", Message: reason.Error()})
	})
	return nil
}

func (s *Server) deliverProvisioning(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	var req provisioningRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := s.Provisioning.Deliver(r.Context(), r.PathValue("address"), req.Body); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
