package api

import (
	"time"

	"github.com/parleyhq/parley/keys"
)

// Wire types: the JSON bodies of openapi.yaml.

type startVerificationRequest struct {
	Number string `json:"number"`
}

type sessionRequest struct {
	SessionID string `json:"session_id"`
}

type resendRequest struct {
	SessionID string `json:"session_id"`
	Number    string `json:"number"`
}

type checkCodeRequest struct {
	SessionID string `json:"session_id"`
	Code      string `json:"code"`
}

type sessionResponse struct {
	SessionID    string `json:"session_id,omitempty"`
	Verified     bool   `json:"verified"`
	ExpiresAt    int64  `json:"expires_at"`             // Unix ms
	NextSendAt   *int64 `json:"next_send_at,omitempty"` // Unix ms; absent when no more codes may be sent
	AttemptsLeft int    `json:"attempts_left"`
}

type signedPreKeyJSON struct {
	KeyID     uint32 `json:"key_id"`
	PublicKey Bytes  `json:"public_key"`
	Signature Bytes  `json:"signature"`
}

type preKeyJSON struct {
	KeyID     uint32 `json:"key_id"`
	PublicKey Bytes  `json:"public_key"`
}

type registerRequest struct {
	SessionID        string             `json:"session_id"`
	Credential       string             `json:"credential"`
	RegistrationID   int                `json:"registration_id"`
	IdentityKey      Bytes              `json:"identity_key"`
	SignedPreKey     signedPreKeyJSON   `json:"signed_prekey"`
	PQLastResortKey  signedPreKeyJSON   `json:"pq_last_resort_prekey"`
	PreKeys          []preKeyJSON       `json:"prekeys"`
	PQPreKeys        []signedPreKeyJSON `json:"pq_prekeys"`
	RegistrationLock Bytes              `json:"registration_lock,omitzero"`
}

type registerResponse struct {
	AccountID string `json:"account_id"`
	DeviceID  int    `json:"device_id"`
}

type lookupRequest struct {
	Number string `json:"number"`
}

type lookupResponse struct {
	AccountID string `json:"account_id"`
}

type whoamiResponse struct {
	AccountID        string `json:"account_id"`
	DeviceID         int    `json:"device_id"`
	RegistrationLock bool   `json:"registration_lock"`
}

type lockRequest struct {
	Token Bytes `json:"token"`
}

type deviceJSON struct {
	DeviceID       int    `json:"device_id"`
	RegistrationID int    `json:"registration_id"`
	Created        string `json:"created"`   // YYYY-MM-DD
	LastSeen       string `json:"last_seen"` // YYYY-MM-DD
}

type devicesResponse struct {
	Devices []deviceJSON `json:"devices"`
}

type uploadRequest struct {
	SignedPreKey    *signedPreKeyJSON  `json:"signed_prekey,omitzero"`
	PQLastResortKey *signedPreKeyJSON  `json:"pq_last_resort_prekey,omitzero"`
	PreKeys         []preKeyJSON       `json:"prekeys,omitzero"`
	PQPreKeys       []signedPreKeyJSON `json:"pq_prekeys,omitzero"`
	// ReplacePQPreKeys deletes the device's unclaimed one-time PQ prekeys
	// before PQPreKeys are added.
	ReplacePQPreKeys bool `json:"replace_pq_prekeys,omitzero"`
}

type countResponse struct {
	EC       int `json:"ec"`
	PQ       int `json:"pq"`
	LowWater int `json:"low_water"`
}

type bundleResponse struct {
	IdentityKey Bytes              `json:"identity_key"`
	Devices     []deviceBundleJSON `json:"devices"`
}

type deviceBundleJSON struct {
	DeviceID       int              `json:"device_id"`
	RegistrationID int              `json:"registration_id"`
	SignedPreKey   signedPreKeyJSON `json:"signed_prekey"`
	PreKey         *preKeyJSON      `json:"prekey,omitempty"`
	PQPreKey       signedPreKeyJSON `json:"pq_prekey"`
	PQLastResort   bool             `json:"pq_last_resort"`
}

func dayString(d int) string {
	return time.Unix(int64(d)*86400, 0).UTC().Format(time.DateOnly)
}

func (j signedPreKeyJSON) ec() (keys.SignedPreKey, error) {
	pub, err := keys.ParseECPublicKey(j.PublicKey)
	if err != nil {
		return keys.SignedPreKey{}, err
	}
	sig, err := keys.ParseSignature(j.Signature)
	if err != nil {
		return keys.SignedPreKey{}, err
	}
	return keys.SignedPreKey{ID: j.KeyID, PublicKey: pub, Signature: sig}, nil
}

func (j signedPreKeyJSON) kem() (keys.KEMPreKey, error) {
	pub, err := keys.ParseKEMPublicKey(j.PublicKey)
	if err != nil {
		return keys.KEMPreKey{}, err
	}
	sig, err := keys.ParseSignature(j.Signature)
	if err != nil {
		return keys.KEMPreKey{}, err
	}
	return keys.KEMPreKey{ID: j.KeyID, PublicKey: pub, Signature: sig}, nil
}

func parsePreKeys(js []preKeyJSON) ([]keys.PreKey, error) {
	out := make([]keys.PreKey, len(js))
	for i, j := range js {
		pub, err := keys.ParseECPublicKey(j.PublicKey)
		if err != nil {
			return nil, err
		}
		out[i] = keys.PreKey{ID: j.KeyID, PublicKey: pub}
	}
	return out, nil
}

func parseKEMPreKeys(js []signedPreKeyJSON) ([]keys.KEMPreKey, error) {
	out := make([]keys.KEMPreKey, len(js))
	for i, j := range js {
		k, err := j.kem()
		if err != nil {
			return nil, err
		}
		out[i] = k
	}
	return out, nil
}

func ecJSON(k keys.SignedPreKey) signedPreKeyJSON {
	return signedPreKeyJSON{KeyID: k.ID, PublicKey: k.PublicKey[:], Signature: k.Signature[:]}
}

func kemJSON(k keys.KEMPreKey) signedPreKeyJSON {
	return signedPreKeyJSON{KeyID: k.ID, PublicKey: Bytes(k.PublicKey), Signature: k.Signature[:]}
}

type sendRequest struct {
	Timestamp int64          `json:"timestamp"`
	ExpiresIn int64          `json:"expires_in,omitzero"` // seconds
	Online    bool           `json:"online,omitzero"`
	Urgent    bool           `json:"urgent,omitzero"`
	Messages  []outgoingJSON `json:"messages"`
}

type outgoingJSON struct {
	DeviceID       int   `json:"device_id"`
	RegistrationID int   `json:"registration_id"`
	Type           int   `json:"type"`
	Content        Bytes `json:"content"`
}

type sendResponse struct {
	ServerTimestamp int64         `json:"server_timestamp"`
	SkippedDevices  []skippedJSON `json:"skipped_devices,omitempty"`
}

// skippedJSON is a device a send did not reach because its queue had no
// room (reason "queue_full" or "sender_share_full").
type skippedJSON struct {
	AccountID string `json:"account_id"`
	DeviceID  int    `json:"device_id"`
	Reason    string `json:"reason"`
}
