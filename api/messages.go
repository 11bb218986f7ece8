package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/relay"
)

// MaxSendBodyBytes bounds a send request: room for about 30 envelopes of
// relay.MaxContentBytes each in base64.
const MaxSendBodyBytes = 4 << 20

// maxExpiresIn bounds expires_in; the relay's retention caps it anyway.
const maxExpiresIn = 10 * 365 * 24 * 3600

func (s *Server) sendMessages(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	dest, err := uuid.Parse(r.PathValue("account"))
	if err != nil || len(r.PathValue("account")) != 36 {
		return errorf(http.StatusBadRequest, "invalid_account_id", "account id must be a UUID")
	}
	var req sendRequest
	if err := decodeLimit(w, r, &req, MaxSendBodyBytes); err != nil {
		return err
	}
	if req.ExpiresIn < 0 || req.ExpiresIn > maxExpiresIn {
		return errorf(http.StatusUnprocessableEntity, "invalid_message", "expires_in must be 0 to 315360000 seconds")
	}
	send := relay.Send{
		Sender: p, Destination: dest, Timestamp: req.Timestamp, IdempotencyKey: r.Header.Get("Idempotency-Key"),
		ExpiresIn: time.Duration(req.ExpiresIn) * time.Second, Online: req.Online, Urgent: req.Urgent,
	}
	if _, ok := r.Header["Idempotency-Key"]; ok && send.IdempotencyKey == "" {
		return errorf(http.StatusUnprocessableEntity, "invalid_message", "Idempotency-Key must not be empty")
	}
	for _, m := range req.Messages {
		send.Envelopes = append(send.Envelopes, relay.Outgoing{Device: m.DeviceID, RegistrationID: m.RegistrationID, Type: m.Type, Content: m.Content})
	}
	rc, err := s.Relay.Send(r.Context(), send)
	return answerSent(w, rc, err)
}

func (s *Server) websocket(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	if err := requireUpgrade(w, r); err != nil {
		return err
	}
	if err := s.Relay.AdmitConnection(p); err != nil {
		return err
	}
	s.Relay.Accept(w, r, p, func(status int, reason error) {
		if errors.Is(reason, relay.ErrShuttingDown) {
			writeError(w, r, s.Log, reason)
			return
		}
		writeError(w, r, s.Log, &Error{Status: status, Code: "websocket_handshake_failed", Message: reason.Error()})
	})
	return nil
}

type multiSendRequest struct {
	Timestamp  int64                `json:"timestamp"`
	ExpiresIn  int64                `json:"expires_in,omitzero"`
	Urgent     bool                 `json:"urgent,omitzero"`
	Type       int                  `json:"type"`
	Content    Bytes                `json:"content"`
	Recipients []multiRecipientJSON `json:"recipients"`
}

type multiRecipientJSON struct {
	AccountID string          `json:"account_id"`
	Devices   []deviceRefJSON `json:"devices"`
}

type deviceRefJSON struct {
	DeviceID       int `json:"device_id"`
	RegistrationID int `json:"registration_id"`
}

// sendMulti stores one shared ciphertext for the listed devices of many
// accounts (a group message encrypted once with a sender key).
func (s *Server) sendMulti(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	var req multiSendRequest
	if err := decodeLimit(w, r, &req, MaxSendBodyBytes); err != nil {
		return err
	}
	if req.ExpiresIn < 0 || req.ExpiresIn > maxExpiresIn {
		return errorf(http.StatusUnprocessableEntity, "invalid_message", "expires_in must be 0 to 315360000 seconds")
	}
	send := relay.MultiSend{
		Sender: p, Timestamp: req.Timestamp, IdempotencyKey: r.Header.Get("Idempotency-Key"),
		ExpiresIn: time.Duration(req.ExpiresIn) * time.Second, Urgent: req.Urgent, Type: req.Type, Content: req.Content,
	}
	if _, ok := r.Header["Idempotency-Key"]; ok && send.IdempotencyKey == "" {
		return errorf(http.StatusUnprocessableEntity, "invalid_message", "Idempotency-Key must not be empty")
	}
	for i, rc := range req.Recipients {
		account, err := uuid.Parse(rc.AccountID)
		if err != nil || len(rc.AccountID) != 36 {
			return errorf(http.StatusBadRequest, "invalid_account_id", fmt.Sprintf("recipient %d: account_id must be a UUID", i))
		}
		to := relay.Recipient{Account: account}
		for _, d := range rc.Devices {
			to.Devices = append(to.Devices, relay.DeviceRef{Device: d.DeviceID, RegistrationID: d.RegistrationID})
		}
		send.Recipients = append(send.Recipients, to)
	}
	rc, err := s.Relay.SendMulti(r.Context(), send)
	return answerSent(w, rc, err)
}

// answerSent answers an accepted send, marking a replayed one and naming
// the devices it skipped.
func answerSent(w http.ResponseWriter, rc relay.Receipt, err error) error {
	if err != nil {
		return err
	}
	if rc.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	out := sendResponse{ServerTimestamp: rc.ServerTimestamp.UnixMilli()}
	for _, sk := range rc.Skipped {
		out.SkippedDevices = append(out.SkippedDevices, skippedJSON{AccountID: sk.Account.String(), DeviceID: sk.Device, Reason: string(sk.Reason)})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// requireUpgrade answers 426 to a request to a WebSocket endpoint that
// does not ask for the upgrade.
func requireUpgrade(w http.ResponseWriter, r *http.Request) error {
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		return errorf(http.StatusUpgradeRequired, "upgrade_required", "this endpoint speaks WebSocket only")
	}
	return nil
}
