package protocol

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"

	"github.com/google/uuid"
	tinksubtle "github.com/tink-crypto/tink-go/v2/aead/subtle"
	"google.golang.org/protobuf/encoding/protowire"
)

// Sealed sender v2 sends one message to many recipients: one AES-GCM-SIV
// ciphertext of the content, and per recipient a 32-byte encrypted key
// (C) and a 16-byte tag (AT) that authenticates the sender. The server
// splits the sent form into one received form per recipient device
// without learning anything else (MultiRecipientMessage.ReceivedBy).

const (
	v2LabelR    = "Sealed Sender v2: r (2023-08)"
	v2LabelK    = "Sealed Sender v2: K"
	v2LabelDH   = "Sealed Sender v2: DH"
	v2LabelDHS  = "Sealed Sender v2: DH-sender"
	v2KeySize   = 32 // C
	v2TagSize   = 16 // AT
	v2PublicKey = 32 // E.pub, raw Curve25519
	// gcmSIVNonceSize is AES-GCM-SIV's nonce; sealed sender v2 uses a
	// zero nonce, its key being single-use.
	gcmSIVNonceSize = 12
)

func v2Expand(secret []byte, label string, n int) []byte {
	out, err := hkdf.Key(sha256.New, secret, nil, label, n)
	if err != nil {
		panic("protocol: HKDF failed: " + err.Error())
	}
	return out
}

// unsealV2 decrypts a received v2 message: C || AT || E.pub || ciphertext.
func unsealV2(ours IdentityKeyPair, b []byte) (*UnidentifiedContent, error) {
	if len(b) < v2KeySize+v2TagSize+v2PublicKey {
		return nil, fmt.Errorf("%w: v2 message too short", ErrSealedSender)
	}
	c, at, ephRaw, ciphertext := b[:v2KeySize], b[v2KeySize:v2KeySize+v2TagSize], b[v2KeySize+v2TagSize:v2KeySize+v2TagSize+v2PublicKey],
		b[v2KeySize+v2TagSize+v2PublicKey:]
	eph, err := PublicKeyFromBytes(ephRaw)
	if err != nil {
		return nil, fmt.Errorf("%w: ephemeral key: %w", ErrSealedSender, err)
	}
	shared, err := ours.Private.Agree(eph)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSealedSender, err)
	}
	m := v2Expand(bytes.Join([][]byte{shared, eph.Bytes(), ours.Public.Bytes()}, nil), v2LabelDH, v2KeySize)
	for i := range m {
		m[i] ^= c[i]
	}
	r, err := NewPrivateKey(v2Expand(m, v2LabelR, 32))
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(r.Public().Raw(), ephRaw) != 1 {
		return nil, fmt.Errorf("%w: derived ephemeral key does not match the message's", ErrSealedSender)
	}
	aead, err := tinksubtle.NewAESGCMSIV(v2Expand(m, v2LabelK, 32))
	if err != nil {
		return nil, err
	}
	plain, err := aead.Decrypt(append(make([]byte, gcmSIVNonceSize, gcmSIVNonceSize+len(ciphertext)), ciphertext...), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: inner message: %v", ErrSealedSender, err)
	}
	u, err := ParseUnidentifiedContent(plain)
	if err != nil {
		return nil, err
	}
	senderShared, err := ours.Private.Agree(u.Sender.IdentityKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSealedSender, err)
	}
	want := v2Expand(bytes.Join([][]byte{senderShared, eph.Bytes(), c, u.Sender.IdentityKey.Bytes(), ours.Public.Bytes()}, nil),
		v2LabelDHS, v2TagSize)
	if subtle.ConstantTimeCompare(want, at) != 1 {
		return nil, fmt.Errorf("%w: sender certificate key does not match the authentication tag", ErrSealedSender)
	}
	return u, nil
}

// MultiRecipientMessage is a sealed sender v2 message as its sender gives
// it to the server: who gets it (service ids, devices and registration
// ids) and the shared ciphertext, parsed only as far as routing needs.
type MultiRecipientMessage struct {
	Recipients []MultiRecipient
	// Excluded are recipients listed with no devices: the sender leaves
	// them out on purpose (a server may check that the list is complete).
	Excluded []string

	version byte
	shared  []byte // E.pub || ciphertext
}

// MultiRecipient is one recipient of a MultiRecipientMessage.
type MultiRecipient struct {
	ServiceID string // an ACI UUID, or "PNI:" and a UUID
	Devices   []MultiRecipientDevice
	keys      []byte // C || AT
}

// MultiRecipientDevice is one device a MultiRecipientMessage names.
type MultiRecipientDevice struct {
	DeviceID       uint32
	RegistrationID uint32 // 14 bits
}

// ParseMultiRecipientMessage reads the sent form (version 0x22 or 0x23)
// as libsignal's SealedSenderV2SentMessage does: a recipient listed twice
// has its devices merged; one listed both with and without devices is an
// error.
func ParseMultiRecipientMessage(b []byte) (*MultiRecipientMessage, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrSealedSender)
	}
	m := &MultiRecipientMessage{version: b[0]}
	if m.version != sealedV2UUID && m.version != sealedV2Service {
		return nil, fmt.Errorf("%w: version byte %#x is not a multi-recipient message", ErrSealedSender, m.version)
	}
	rest := b[1:]
	count, n := protowire.ConsumeVarint(rest)
	if n < 0 || count > uint64(len(rest)) { // every recipient takes at least 17 bytes
		return nil, fmt.Errorf("%w: bad recipient count", ErrSealedSender)
	}
	rest = rest[n:]
	take := func(k int) ([]byte, error) {
		if len(rest) < k {
			return nil, fmt.Errorf("%w: truncated recipient list", ErrSealedSender)
		}
		v := rest[:k]
		rest = rest[k:]
		return v, nil
	}
	index := map[string]int{}
	var all []MultiRecipient
	for range count {
		var id string
		if m.version == sealedV2UUID {
			raw, err := take(16)
			if err != nil {
				return nil, err
			}
			id = uuid.UUID(raw).String()
		} else {
			raw, err := take(17)
			if err != nil {
				return nil, err
			}
			u := uuid.UUID(raw[1:]).String()
			switch raw[0] {
			case 0:
				id = u
			case 1:
				id = "PNI:" + u
			default:
				return nil, fmt.Errorf("%w: unknown service id kind %d", ErrSealedSender, raw[0])
			}
		}
		var devices []MultiRecipientDevice
		for {
			d, err := take(1)
			if err != nil {
				return nil, err
			}
			if d[0] == 0 {
				if len(devices) > 0 {
					return nil, fmt.Errorf("%w: device id 0", ErrSealedSender)
				}
				break
			}
			if d[0] > 127 {
				return nil, fmt.Errorf("%w: device id %d", ErrSealedSender, d[0])
			}
			reg, err := take(2)
			if err != nil {
				return nil, err
			}
			v := uint32(reg[0])<<8 | uint32(reg[1])
			devices = append(devices, MultiRecipientDevice{DeviceID: uint32(d[0]), RegistrationID: v & 0x3FFF})
			if v&0x8000 == 0 {
				break
			}
		}
		var keys []byte
		if len(devices) > 0 {
			var err error
			if keys, err = take(v2KeySize + v2TagSize); err != nil {
				return nil, err
			}
		}
		if i, seen := index[id]; seen {
			if len(devices) == 0 || len(all[i].Devices) == 0 {
				return nil, fmt.Errorf("%w: recipient %s redundantly encoded as empty", ErrSealedSender, id)
			}
			// The server checks devices against the account's own list,
			// so duplicates are not removed here (as libsignal).
			all[i].Devices = append(all[i].Devices, devices...)
			continue
		}
		index[id] = len(all)
		all = append(all, MultiRecipient{ServiceID: id, Devices: devices, keys: keys})
	}
	for _, r := range all {
		if len(r.Devices) == 0 {
			m.Excluded = append(m.Excluded, r.ServiceID)
		} else {
			m.Recipients = append(m.Recipients, r)
		}
	}
	if len(rest) < v2PublicKey {
		return nil, fmt.Errorf("%w: no ephemeral key", ErrSealedSender)
	}
	m.shared = rest
	return m, nil
}

// ReceivedSize is the size of each recipient's copy (ReceivedBy).
func (m *MultiRecipientMessage) ReceivedSize() int { return 1 + v2KeySize + v2TagSize + len(m.shared) }

// ReceivedBy is the message as recipient r receives it (the same for each
// of r's devices): the v2 version byte, r's C and AT, then the shared part.
func (m *MultiRecipientMessage) ReceivedBy(r MultiRecipient) []byte {
	out := make([]byte, 0, 1+len(r.keys)+len(m.shared))
	out = append(out, sealedV2UUID)
	out = append(out, r.keys...)
	return append(out, m.shared...)
}
