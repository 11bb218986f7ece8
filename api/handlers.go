package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/audit"
	"github.com/parleyhq/parley/keys"
	"github.com/parleyhq/parley/prekeys"
	"github.com/parleyhq/parley/ratelimit"
	"github.com/parleyhq/parley/verify"
)

// maxSessionIDLen bounds session ids before they are hashed (real ones are 43).
const maxSessionIDLen = 64

func checkSessionID(id string) error {
	if id == "" || len(id) > maxSessionIDLen {
		return errorf(http.StatusBadRequest, "invalid_session_id", "session_id is missing or too long")
	}
	return nil
}

func sessionJSON(id string, st verify.State) sessionResponse {
	r := sessionResponse{SessionID: id, Verified: st.Verified, ExpiresAt: st.Expires.UnixMilli(), AttemptsLeft: st.AttemptsLeft}
	if !st.NextSend.IsZero() {
		ms := st.NextSend.UnixMilli()
		r.NextSendAt = &ms
	}
	return r
}

func (s *Server) startVerification(w http.ResponseWriter, r *http.Request) error {
	var req startVerificationRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	id, st, err := s.Verify.Start(r.Context(), req.Number, s.clientIP(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sessionJSON(id, st))
	return nil
}

func (s *Server) verificationStatus(w http.ResponseWriter, r *http.Request) error {
	var req sessionRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkSessionID(req.SessionID); err != nil {
		return err
	}
	st, err := s.Verify.State(r.Context(), req.SessionID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sessionJSON("", st))
	return nil
}

func (s *Server) resendCode(w http.ResponseWriter, r *http.Request) error {
	var req resendRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkSessionID(req.SessionID); err != nil {
		return err
	}
	st, err := s.Verify.Resend(r.Context(), req.SessionID, req.Number, s.clientIP(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sessionJSON("", st))
	return nil
}

func (s *Server) checkCode(w http.ResponseWriter, r *http.Request) error {
	var req checkCodeRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkSessionID(req.SessionID); err != nil {
		return err
	}
	st, err := s.Verify.Check(r.Context(), req.SessionID, req.Code)
	if errors.Is(err, verify.ErrWrongCode) {
		return &Error{Status: http.StatusForbidden, Code: "wrong_code", Message: err.Error(),
			Extra: map[string]any{"attempts_left": st.AttemptsLeft}}
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sessionJSON("", st))
	return nil
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) error {
	var req registerRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkSessionID(req.SessionID); err != nil {
		return err
	}
	identity, err := keys.ParseECPublicKey(req.IdentityKey)
	if err != nil {
		return fmt.Errorf("identity_key: %w", err)
	}
	spk, lr, pks, pqs, err := parseDeviceKeys(req.SignedPreKey, req.PQLastResortKey, req.PreKeys, req.PQPreKeys)
	if err != nil {
		return err
	}
	id, err := s.Accounts.Register(r.Context(), accounts.Registration{
		SessionID: req.SessionID, Credential: req.Credential, RegistrationID: req.RegistrationID,
		IdentityKey: identity, SignedPreKey: spk, LastResort: lr, PreKeys: pks, KEMPreKeys: pqs,
		LockToken: req.RegistrationLock,
	})
	var locked *accounts.LockedError
	if errors.As(err, &locked) && locked.Guessed {
		s.audit(r, audit.LockFailed, locked.Account, 0, map[string]string{"attempts_left": strconv.Itoa(locked.AttemptsLeft)})
	}
	if err != nil {
		return err
	}
	s.audit(r, audit.AccountRegistered, id, accounts.PrimaryDevice, nil)
	writeJSON(w, http.StatusOK, registerResponse{AccountID: id.String(), DeviceID: accounts.PrimaryDevice})
	return nil
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	a, err := s.Accounts.Account(r.Context(), p.Account)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, whoamiResponse{AccountID: p.Account.String(), DeviceID: p.Device, RegistrationLock: a.LockHash != nil})
	return nil
}

func (s *Server) deleteAccount(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	if err := s.Accounts.DeleteAccount(r.Context(), p); err != nil {
		return err
	}
	s.audit(r, audit.AccountDeleted, p.Account, p.Device, nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// allowLockChange takes one registration-lock change from the account's
// budget.
func (s *Server) allowLockChange(p accounts.Principal) error {
	if ok, wait := s.LockChanges.Allow(p.Account.String()); !ok {
		return &ratelimit.Error{RetryAfter: wait}
	}
	return nil
}

func (s *Server) setLock(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	if p.Device != accounts.PrimaryDevice {
		return accounts.ErrForbidden // before the budget: a linked device cannot spend the primary's
	}
	var req lockRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := s.allowLockChange(p); err != nil {
		return err
	}
	if req.Token == nil { // nil would mean "clear the lock" to the service
		req.Token = Bytes{}
	}
	if err := s.Accounts.SetRegistrationLock(r.Context(), p, req.Token); err != nil {
		return err
	}
	s.audit(r, audit.LockSet, p.Account, p.Device, nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) removeLock(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	if p.Device != accounts.PrimaryDevice {
		return accounts.ErrForbidden
	}
	if err := s.allowLockChange(p); err != nil {
		return err
	}
	if err := s.Accounts.SetRegistrationLock(r.Context(), p, nil); err != nil {
		return err
	}
	s.audit(r, audit.LockRemoved, p.Account, p.Device, nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	ds, err := s.Accounts.Devices(r.Context(), p)
	if err != nil {
		return err
	}
	resp := devicesResponse{Devices: make([]deviceJSON, len(ds))}
	for i, d := range ds {
		resp.Devices[i] = deviceJSON{DeviceID: d.ID, RegistrationID: d.RegistrationID, Created: dayString(d.CreatedDay), LastSeen: dayString(d.LastSeenDay)}
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) removeDevice(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	d, err := pathDevice(r.PathValue("device"))
	if err != nil {
		return err
	}
	if err := s.Accounts.RemoveDevice(r.Context(), p, d); err != nil {
		return err
	}
	s.audit(r, audit.DeviceRemoved, p.Account, d, map[string]string{"by_device": strconv.Itoa(p.Device)})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) uploadKeys(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	var req uploadRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	var up keys.Upload
	var err error
	if req.SignedPreKey != nil {
		k, err := req.SignedPreKey.ec()
		if err != nil {
			return fmt.Errorf("signed_prekey: %w", err)
		}
		up.SignedPreKey = &k
	}
	if req.PQLastResortKey != nil {
		k, err := req.PQLastResortKey.kem()
		if err != nil {
			return fmt.Errorf("pq_last_resort_prekey: %w", err)
		}
		up.LastResort = &k
	}
	if up.PreKeys, err = parsePreKeys(req.PreKeys); err != nil {
		return fmt.Errorf("prekeys: %w", err)
	}
	if up.KEMPreKeys, err = parseKEMPreKeys(req.PQPreKeys); err != nil {
		return fmt.Errorf("pq_prekeys: %w", err)
	}
	up.ReplaceKEMPreKeys = req.ReplacePQPreKeys
	a, err := s.Accounts.Account(r.Context(), p.Account)
	if err != nil {
		return err
	}
	if err := up.Validate(a.IdentityKey); err != nil {
		return err
	}
	if err := s.Keys.StoreKeys(r.Context(), p.Account, p.Device, up); err != nil {
		return err
	}
	s.audit(r, audit.KeysUploaded, p.Account, p.Device, map[string]string{
		"signed_prekey": strconv.FormatBool(up.SignedPreKey != nil), "pq_last_resort": strconv.FormatBool(up.LastResort != nil),
		"prekeys": strconv.Itoa(len(up.PreKeys)), "pq_prekeys": strconv.Itoa(len(up.KEMPreKeys)),
		"pq_prekeys_replaced": strconv.FormatBool(up.ReplaceKEMPreKeys)})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) countKeys(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	c, err := s.PreKeys.Count(r.Context(), p.Account, p.Device)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, countResponse{EC: c.EC, PQ: c.KEM, LowWater: prekeys.LowWater})
	return nil
}

func (s *Server) fetchBundle(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	target, err := uuid.Parse(r.PathValue("account"))
	if err != nil || len(r.PathValue("account")) != 36 {
		return errorf(http.StatusBadRequest, "invalid_account_id", "account id must be a UUID")
	}
	device := prekeys.AllDevices
	if d := r.PathValue("device"); d != "*" {
		if device, err = pathDevice(d); err != nil {
			return err
		}
	}
	b, err := s.PreKeys.Claim(r.Context(), p.Account, target, device)
	if err != nil {
		return err
	}
	resp := bundleResponse{IdentityKey: b.IdentityKey[:], Devices: make([]deviceBundleJSON, len(b.Devices))}
	for i, d := range b.Devices {
		dj := deviceBundleJSON{
			DeviceID: d.DeviceID, RegistrationID: d.RegistrationID, SignedPreKey: ecJSON(d.SignedPreKey),
			PQPreKey: kemJSON(d.KEMPreKey), PQLastResort: d.LastResort,
		}
		if d.PreKey != nil {
			dj.PreKey = &preKeyJSON{KeyID: d.PreKey.ID, PublicKey: d.PreKey.PublicKey[:]}
		}
		resp.Devices[i] = dj
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) lookupNumber(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	var req lookupRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	id, err := s.Directory.Lookup(r.Context(), p, s.clientIP(r), req.Number)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, lookupResponse{AccountID: id.String()})
	return nil
}

// parseDeviceKeys parses a new device's keys (registration or linking).
func parseDeviceKeys(spkJ, lrJ signedPreKeyJSON, pksJ []preKeyJSON, pqsJ []signedPreKeyJSON) (
	spk keys.SignedPreKey, lr keys.KEMPreKey, pks []keys.PreKey, pqs []keys.KEMPreKey, err error) {
	if spk, err = spkJ.ec(); err != nil {
		return spk, lr, nil, nil, fmt.Errorf("signed_prekey: %w", err)
	}
	if lr, err = lrJ.kem(); err != nil {
		return spk, lr, nil, nil, fmt.Errorf("pq_last_resort_prekey: %w", err)
	}
	if pks, err = parsePreKeys(pksJ); err != nil {
		return spk, lr, nil, nil, fmt.Errorf("prekeys: %w", err)
	}
	if pqs, err = parseKEMPreKeys(pqsJ); err != nil {
		return spk, lr, nil, nil, fmt.Errorf("pq_prekeys: %w", err)
	}
	return spk, lr, pks, pqs, nil
}
