package api

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/relay"
)

// UnidentifiedAccessHeader carries a sealed send's unidentified-access key
// (base64) in place of device credentials.
const UnidentifiedAccessHeader = "Unidentified-Access-Key"

// MultiRecipientMediaType is the body type of a sealed sender v2 send.
const MultiRecipientMediaType = "application/vnd.signal-messenger.mrm"

// sendMessagesOrSealed is PUT /v1/messages/{account}: with device
// credentials an ordinary send, with an Unidentified-Access-Key header
// (and no credentials) a sealed one.
func (s *Server) sendMessagesOrSealed(w http.ResponseWriter, r *http.Request) error {
	_, hasKey := r.Header[UnidentifiedAccessHeader]
	if r.Header.Get("Authorization") != "" || !hasKey {
		if hasKey {
			return errorf(http.StatusBadRequest, "ambiguous_credentials", "give device credentials or an Unidentified-Access-Key, not both")
		}
		p, err := s.authenticate(r)
		if err != nil {
			return err
		}
		return s.sendMessages(w, r, p)
	}
	dest, err := destination(r)
	if err != nil {
		return err
	}
	if err := s.checkAccessKey(r, []uuid.UUID{dest}); err != nil {
		return err
	}
	send, err := decodeSend(w, r, dest)
	if err != nil {
		return err
	}
	send.Sealed, send.ClientAddress = true, s.clientIP(r)
	rc, err := s.Relay.Send(r.Context(), send)
	return answerSent(w, rc, err)
}

// checkAccessKey admits a sealed send to the accounts in to by the
// request's Unidentified-Access-Key (for several accounts, the XOR of
// theirs). A missing, malformed or wrong key and an unknown account all
// answer the same 401.
func (s *Server) checkAccessKey(r *http.Request, to []uuid.UUID) error {
	key, err := base64.StdEncoding.DecodeString(r.Header.Get(UnidentifiedAccessHeader))
	if err != nil {
		key = nil // compared anyway, so a malformed key takes as long as a wrong one
	}
	return s.Accounts.CheckUnidentifiedAccess(r.Context(), to, key)
}

// sendMultiRecipientSealed is PUT /v1/messages/multi_recipient: a sealed
// sender v2 message for many accounts (Signal's format, parsed only as far
// as its routing headers), admitted by the XOR of the recipients'
// unidentified-access keys. Each recipient's devices get the recipient's
// own copy, stored without a source.
func (s *Server) sendMultiRecipientSealed(w http.ResponseWriter, r *http.Request) error {
	if r.Header.Get("Authorization") != "" {
		return errorf(http.StatusBadRequest, "ambiguous_credentials", "a multi-recipient sealed send takes an Unidentified-Access-Key, not device credentials")
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, MultiRecipientMediaType) {
		return errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "request body must be "+MultiRecipientMediaType)
	}
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts <= 0 {
		return errorf(http.StatusUnprocessableEntity, "invalid_message", "ts must be the message's timestamp, Unix ms")
	}
	flag := func(name string) (bool, error) {
		switch q.Get(name) {
		case "", "false":
			return false, nil
		case "true":
			return true, nil
		}
		return false, errorf(http.StatusUnprocessableEntity, "invalid_message", name+" must be true or false")
	}
	online, err := flag("online")
	if err != nil {
		return err
	}
	urgent, err := flag("urgent")
	if err != nil {
		return err
	}
	if online {
		return errorf(http.StatusUnprocessableEntity, "invalid_message", "online-only multi-recipient sends are not supported; send them one by one")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxSendBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body exceeds %d KiB", MaxSendBodyBytes>>10))
		}
		return errorf(http.StatusBadRequest, "bad_body", "could not read request body")
	}
	m, err := protocol.ParseMultiRecipientMessage(body)
	if err != nil {
		return errorf(http.StatusBadRequest, "invalid_multi_recipient_message", "body is not a sealed sender v2 message: "+err.Error())
	}
	send := relay.MultiSend{Sealed: true, ClientAddress: s.clientIP(r), Timestamp: ts, Urgent: urgent,
		IdempotencyKey: r.Header.Get("Idempotency-Key"), Type: relay.TypeUnidentifiedSender}
	if _, ok := r.Header["Idempotency-Key"]; ok && send.IdempotencyKey == "" {
		return errorf(http.StatusUnprocessableEntity, "invalid_message", "Idempotency-Key must not be empty")
	}
	// Bounded before anything is looked up or copied: each recipient gets
	// a copy of the shared part.
	if len(m.Recipients) == 0 || len(m.Recipients) > relay.MaxRecipients {
		return errorf(http.StatusUnprocessableEntity, "invalid_message", fmt.Sprintf("a multi-recipient send has 1 to %d recipients", relay.MaxRecipients))
	}
	if m.ReceivedSize() > relay.MaxContentBytes {
		return errorf(http.StatusUnprocessableEntity, "invalid_message", fmt.Sprintf("each recipient's copy would exceed %d bytes", relay.MaxContentBytes))
	}
	to := make([]uuid.UUID, len(m.Recipients))
	for i, rc := range m.Recipients {
		account, err := uuid.Parse(rc.ServiceID)
		if err != nil || len(rc.ServiceID) != 36 {
			return errorf(http.StatusBadRequest, "invalid_account_id", fmt.Sprintf("recipient %d: only account ids (ACIs) receive here", i))
		}
		to[i] = account
	}
	if err := s.checkAccessKey(r, to); err != nil {
		return err
	}
	for i, rc := range m.Recipients {
		rcpt := relay.Recipient{Account: to[i], Content: m.ReceivedBy(rc)}
		for _, d := range rc.Devices {
			rcpt.Devices = append(rcpt.Devices, relay.DeviceRef{Device: int(d.DeviceID), RegistrationID: int(d.RegistrationID)})
		}
		send.Recipients = append(send.Recipients, rcpt)
	}
	rc, err := s.Relay.SendMulti(r.Context(), send)
	return answerSent(w, rc, err)
}

type unidentifiedAccessRequest struct {
	Key          *Bytes `json:"unidentified_access_key"`
	Unrestricted bool   `json:"unrestricted"`
}

// setUnidentifiedAccess is PUT /v1/accounts/me/unidentified-access.
func (s *Server) setUnidentifiedAccess(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	var req unidentifiedAccessRequest
	if err := decodeLimit(w, r, &req, 1<<10); err != nil {
		return err
	}
	a := accounts.UnidentifiedAccess{Unrestricted: req.Unrestricted}
	if req.Key != nil {
		a.Key = []byte(*req.Key)
	}
	if err := s.Accounts.SetUnidentifiedAccess(r.Context(), p, a); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
