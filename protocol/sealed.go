package protocol

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protowire"
)

// Sealed sender hides who sent a message from the server that carries it:
// the sender's identity travels inside the encryption, vouched for by a
// short-lived sender certificate that the server signed with a key
// certified by an operator trust root. This is libsignal's
// sealed_sender.rs: certificates and UnidentifiedSenderMessageContent in
// sealed_sender.proto, version 1 (one recipient, 0x11) for sending, and
// versions 1 and 2 (multi-recipient, 0x22/0x23) for receiving.

// ErrSealedSender reports a sealed-sender message or certificate that is
// malformed, fails its MAC, or does not validate.
var ErrSealedSender = errors.New("invalid sealed sender message")

// ErrSealedSenderSelfSend reports a sealed message that claims to come
// from this very device.
var ErrSealedSenderSelfSend = errors.New("sealed sender message from this device")

// TypePlaintextContent is libsignal's PlaintextContent (decryption-error
// messages), which can travel sealed.
const TypePlaintextContent MessageType = 8

// revokedServerCertificateIDs are the server certificate ids libsignal
// refuses whatever signs them.
var revokedServerCertificateIDs = []uint32{0xDEADC357}

// ServerCertificate certifies a server's signing key under an operator
// trust root.
type ServerCertificate struct {
	KeyID uint32
	Key   PublicKey

	serialized, certificate, signature []byte
}

// NewServerCertificate signs key (with its id) with the trust root's
// private key.
func NewServerCertificate(rand io.Reader, keyID uint32, key PublicKey, trustRoot PrivateKey) (*ServerCertificate, error) {
	cert := appendVarintField(nil, 1, keyID)
	cert = appendBytesField(cert, 2, key.Bytes())
	sig, err := trustRoot.Sign(rand, cert)
	if err != nil {
		return nil, err
	}
	return &ServerCertificate{KeyID: keyID, Key: key, certificate: cert, signature: sig,
		serialized: appendBytesField(appendBytesField(nil, 1, cert), 2, sig)}, nil
}

// ParseServerCertificate reads a serialized server certificate; it does
// not validate it.
func ParseServerCertificate(b []byte) (*ServerCertificate, error) {
	outer, err := parseFields(b, nil, []protowire.Number{1, 2})
	if err != nil {
		return nil, fmt.Errorf("%w: server certificate: %w", ErrSealedSender, err)
	}
	cert, ok1 := outer.byt(1)
	sig, ok2 := outer.byt(2)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%w: server certificate without certificate or signature", ErrSealedSender)
	}
	inner, err := parseFields(cert, []protowire.Number{1}, []protowire.Number{2})
	if err != nil {
		return nil, fmt.Errorf("%w: server certificate: %w", ErrSealedSender, err)
	}
	id, ok1 := inner.num(1)
	keyBytes, ok2 := inner.byt(2)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%w: server certificate without id or key", ErrSealedSender)
	}
	key, err := ParsePublicKey(keyBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: server certificate key: %w", ErrSealedSender, err)
	}
	return &ServerCertificate{KeyID: id, Key: key, serialized: bytes.Clone(b), certificate: cert, signature: sig}, nil
}

// Validate reports whether trustRoot signed c and c's id is not revoked.
func (c *ServerCertificate) Validate(trustRoot PublicKey) bool {
	for _, id := range revokedServerCertificateIDs {
		if c.KeyID == id {
			return false
		}
	}
	return trustRoot.Verify(c.signature, c.certificate)
}

// Bytes is the serialized certificate.
func (c *ServerCertificate) Bytes() []byte { return bytes.Clone(c.serialized) }

// SenderCertificate vouches, for a limited time, that an account's device
// has an identity key; a server signs it with its certified key.
type SenderCertificate struct {
	SenderUUID   string // the sender's ACI
	SenderE164   string // "" when not disclosed
	SenderDevice uint32
	Expires      time.Time // millisecond precision
	IdentityKey  PublicKey
	Signer       *ServerCertificate

	serialized, certificate, signature []byte
}

// NewSenderCertificate fills in the signature of c (whose Signer must be
// set) with the server's private key.
func NewSenderCertificate(rand io.Reader, c SenderCertificate, serverKey PrivateKey) (*SenderCertificate, error) {
	if c.Signer == nil || c.SenderDevice == 0 || c.SenderDevice > 127 {
		return nil, fmt.Errorf("%w: a sender certificate needs a signer and a device id 1 to 127", ErrSealedSender)
	}
	var cert []byte
	if c.SenderE164 != "" {
		cert = appendBytesField(cert, 1, []byte(c.SenderE164))
	}
	cert = appendVarintField(cert, 2, c.SenderDevice)
	cert = protowire.AppendTag(cert, 3, protowire.Fixed64Type)
	cert = protowire.AppendFixed64(cert, uint64(c.Expires.UnixMilli()))
	cert = appendBytesField(cert, 4, c.IdentityKey.Bytes())
	cert = appendBytesField(cert, 5, c.Signer.serialized)
	cert = appendBytesField(cert, 6, []byte(c.SenderUUID))
	sig, err := serverKey.Sign(rand, cert)
	if err != nil {
		return nil, err
	}
	c.certificate, c.signature = cert, sig
	c.serialized = appendBytesField(appendBytesField(nil, 1, cert), 2, sig)
	c.Expires = time.UnixMilli(c.Expires.UnixMilli())
	return &c, nil
}

// ParseSenderCertificate reads a serialized sender certificate; it does
// not validate it. A certificate naming its server certificate only by id
// (Signal's own servers do that for their well-known certificates) is
// refused: this package knows no such certificates.
func ParseSenderCertificate(b []byte) (*SenderCertificate, error) {
	outer, err := parseFields(b, nil, []protowire.Number{1, 2})
	if err != nil {
		return nil, fmt.Errorf("%w: sender certificate: %w", ErrSealedSender, err)
	}
	cert, ok1 := outer.byt(1)
	sig, ok2 := outer.byt(2)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%w: sender certificate without certificate or signature", ErrSealedSender)
	}
	c := &SenderCertificate{serialized: bytes.Clone(b), certificate: cert, signature: sig}
	var haveDevice, haveExpires, haveKey, haveUUID bool
	var signer []byte
	for rest := cert; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return nil, fmt.Errorf("%w: sender certificate: bad tag", ErrSealedSender)
		}
		rest = rest[n:]
		want := map[protowire.Number]protowire.Type{1: protowire.BytesType, 2: protowire.VarintType, 3: protowire.Fixed64Type,
			4: protowire.BytesType, 5: protowire.BytesType, 6: protowire.BytesType, 7: protowire.BytesType, 8: protowire.VarintType}
		if w, known := want[num]; known && w != typ {
			return nil, fmt.Errorf("%w: sender certificate field %d has wire type %d", ErrSealedSender, num, typ)
		}
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(rest)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(rest)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(rest)
		default:
			n = protowire.ConsumeFieldValue(num, typ, rest)
		}
		if n < 0 {
			return nil, fmt.Errorf("%w: sender certificate field %d malformed", ErrSealedSender, num)
		}
		rest = rest[n:]
		switch num {
		case 1:
			c.SenderE164 = string(v)
		case 2:
			if x == 0 || x > 127 {
				return nil, fmt.Errorf("%w: sender certificate device id %d", ErrSealedSender, x)
			}
			c.SenderDevice, haveDevice = uint32(x), true
		case 3:
			if x > 1<<62 {
				return nil, fmt.Errorf("%w: sender certificate expiry out of range", ErrSealedSender)
			}
			c.Expires, haveExpires = time.UnixMilli(int64(x)), true
		case 4:
			if c.IdentityKey, err = ParsePublicKey(v); err != nil {
				return nil, fmt.Errorf("%w: sender certificate identity key: %w", ErrSealedSender, err)
			}
			haveKey = true
		case 5:
			signer = v
		case 6:
			c.SenderUUID, haveUUID = string(v), true
		case 7:
			id, err := uuid.FromBytes(v)
			if err != nil {
				return nil, fmt.Errorf("%w: sender certificate uuid bytes", ErrSealedSender)
			}
			c.SenderUUID, haveUUID = id.String(), true
		case 8:
			signer = nil
			return nil, fmt.Errorf("%w: sender certificate names its server certificate by id %d, which this package does not know", ErrSealedSender, x)
		}
	}
	if !haveDevice || !haveExpires || !haveKey || !haveUUID || signer == nil {
		return nil, fmt.Errorf("%w: sender certificate lacks a field", ErrSealedSender)
	}
	if c.Signer, err = ParseServerCertificate(signer); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate reports whether c's server certificate validates under
// trustRoot, c is signed by that server key, and c has not expired at now.
func (c *SenderCertificate) Validate(trustRoot PublicKey, now time.Time) bool {
	if !c.Signer.Validate(trustRoot) {
		return false
	}
	if !c.Signer.Key.Verify(c.signature, c.certificate) {
		return false
	}
	return !now.After(c.Expires)
}

// Bytes is the serialized certificate.
func (c *SenderCertificate) Bytes() []byte { return bytes.Clone(c.serialized) }

// ContentHint tells the recipient what to do when a sealed message fails
// to decrypt (libsignal's ContentHint).
type ContentHint uint32

// Content hints.
const (
	HintDefault    ContentHint = 0 // show an error at once
	HintResendable ContentHint = 1 // the sender will resend; delay the error
	HintImplicit   ContentHint = 2 // show nothing (typing, receipts)
)

// UnidentifiedContent is what a sealed message carries: the inner
// ciphertext, its type, the sender's certificate, and for group messages
// the group id (libsignal's UnidentifiedSenderMessageContent).
type UnidentifiedContent struct {
	Type        MessageType
	Sender      *SenderCertificate
	Contents    []byte
	ContentHint ContentHint
	GroupID     []byte

	serialized []byte
}

// proto enum values of UnidentifiedSenderMessage.Message.Type.
var usmcTypes = map[MessageType]uint32{TypePreKey: 1, TypeSignal: 2, TypeSenderKey: 7, TypePlaintextContent: 8}

// NewUnidentifiedContent wraps an encrypted message with its sender's
// certificate.
func NewUnidentifiedContent(m CiphertextMessage, sender *SenderCertificate, hint ContentHint, groupID []byte) (*UnidentifiedContent, error) {
	t, ok := usmcTypes[m.Type]
	if !ok {
		return nil, fmt.Errorf("%w: message type %d cannot be sealed", ErrSealedSender, m.Type)
	}
	b := appendVarintField(nil, 1, t)
	b = appendBytesField(b, 2, sender.serialized)
	b = appendBytesField(b, 3, m.Bytes)
	if hint != HintDefault {
		b = appendVarintField(b, 4, uint32(hint))
	}
	if len(groupID) > 0 {
		b = appendBytesField(b, 5, groupID)
	}
	return &UnidentifiedContent{Type: m.Type, Sender: sender, Contents: bytes.Clone(m.Bytes), ContentHint: hint,
		GroupID: bytes.Clone(groupID), serialized: b}, nil
}

// ParseUnidentifiedContent reads a decrypted UnidentifiedSenderMessageContent.
func ParseUnidentifiedContent(b []byte) (*UnidentifiedContent, error) {
	f, err := parseFields(b, []protowire.Number{1, 4}, []protowire.Number{2, 3, 5})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSealedSender, err)
	}
	t, ok := f.num(1)
	certBytes, ok2 := f.byt(2)
	contents, ok3 := f.byt(3)
	if !ok || !ok2 || !ok3 {
		return nil, fmt.Errorf("%w: content lacks type, certificate or contents", ErrSealedSender)
	}
	u := &UnidentifiedContent{Contents: contents, serialized: bytes.Clone(b)}
	for mt, pt := range usmcTypes {
		if pt == t {
			u.Type = mt
		}
	}
	if u.Type == 0 {
		return nil, fmt.Errorf("%w: unknown message type %d", ErrSealedSender, t)
	}
	if h, ok := f.num(4); ok {
		u.ContentHint = ContentHint(h)
	}
	u.GroupID, _ = f.byt(5)
	if u.Sender, err = ParseSenderCertificate(certBytes); err != nil {
		return nil, err
	}
	return u, nil
}

// Bytes is the serialized content (the plaintext of the sealing).
func (u *UnidentifiedContent) Bytes() []byte { return bytes.Clone(u.serialized) }

// Sealed sender message versions (first byte: required<<4 | current).
const (
	sealedV1         = 0x11
	sealedV2UUID     = 0x22
	sealedV2Service  = 0x23
	sealedMACSize    = 10
	sealedV1SaltName = "UnidentifiedDelivery"
)

// ctrHMAC is libsignal's aes256_ctr_hmacsha256: AES-256-CTR with a zero
// counter block, then the first 10 bytes of HMAC-SHA256 of the ciphertext.
func ctrHMACEncrypt(cipherKey, macKey, plaintext []byte) []byte {
	block, err := aes.NewCipher(cipherKey)
	if err != nil {
		panic("protocol: AES key of derived length refused: " + err.Error())
	}
	out := make([]byte, len(plaintext), len(plaintext)+sealedMACSize)
	cipher.NewCTR(block, make([]byte, aes.BlockSize)).XORKeyStream(out, plaintext)
	return append(out, hmacSHA256(macKey, out)[:sealedMACSize]...)
}

func ctrHMACDecrypt(cipherKey, macKey, ciphertext []byte) ([]byte, error) {
	if len(ciphertext) < sealedMACSize {
		return nil, fmt.Errorf("%w: truncated ciphertext", ErrSealedSender)
	}
	body, mac := ciphertext[:len(ciphertext)-sealedMACSize], ciphertext[len(ciphertext)-sealedMACSize:]
	if subtle.ConstantTimeCompare(hmacSHA256(macKey, body)[:sealedMACSize], mac) != 1 {
		return nil, fmt.Errorf("%w: MAC verification failed", ErrSealedSender)
	}
	block, err := aes.NewCipher(cipherKey)
	if err != nil {
		panic("protocol: AES key of derived length refused: " + err.Error())
	}
	out := make([]byte, len(body))
	cipher.NewCTR(block, make([]byte, aes.BlockSize)).XORKeyStream(out, body)
	return out, nil
}

// v1Keys derives a key set with HKDF-SHA256 (empty info) as sealed
// sender v1 does: chain (or discarded), cipher and MAC keys.
func v1Keys(secret, salt []byte) (chain, cipherKey, macKey []byte) {
	okm, err := hkdf.Key(sha256.New, secret, salt, "", 96)
	if err != nil {
		panic("protocol: HKDF of 96 bytes failed: " + err.Error())
	}
	return okm[:32], okm[32:64], okm[64:]
}

// SealV1 encrypts u to the holder of theirIdentity as sealed sender v1:
// an ephemeral key agreement hides our identity key, and a second one
// with our identity key encrypts u.
func SealV1(rand io.Reader, ours IdentityKeyPair, theirIdentity PublicKey, u *UnidentifiedContent) ([]byte, error) {
	eph, err := GenerateKeyPair(rand)
	if err != nil {
		return nil, err
	}
	shared, err := eph.Private.Agree(theirIdentity)
	if err != nil {
		return nil, err
	}
	salt := bytes.Join([][]byte{[]byte(sealedV1SaltName), theirIdentity.Bytes(), eph.Public.Bytes()}, nil)
	chain, ck, mk := v1Keys(shared, salt)
	encryptedStatic := ctrHMACEncrypt(ck, mk, ours.Public.Bytes())

	static, err := ours.Private.Agree(theirIdentity)
	if err != nil {
		return nil, err
	}
	_, ck, mk = v1Keys(static, append(bytes.Clone(chain), encryptedStatic...))
	encryptedMessage := ctrHMACEncrypt(ck, mk, u.serialized)

	out := []byte{sealedV1}
	out = appendBytesField(out, 1, eph.Public.Bytes())
	out = appendBytesField(out, 2, encryptedStatic)
	return appendBytesField(out, 3, encryptedMessage), nil
}

// Unseal decrypts a sealed message (v1, or a v2 message as one recipient
// receives it) with our identity and returns its content, whose sender
// certificate is not yet validated (SealedSenderDecrypt does that). The
// certificate's identity key is checked to be the one the sealing used.
func Unseal(ours IdentityKeyPair, body []byte) (*UnidentifiedContent, error) {
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrSealedSender)
	}
	switch body[0] >> 4 {
	case 0, 1:
		return unsealV1(ours, body[1:])
	case 2:
		return unsealV2(ours, body[1:])
	}
	return nil, fmt.Errorf("%w: unknown version %d", ErrSealedSender, body[0]>>4)
}

func unsealV1(ours IdentityKeyPair, b []byte) (*UnidentifiedContent, error) {
	f, err := parseFields(b, nil, []protowire.Number{1, 2, 3})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSealedSender, err)
	}
	ephBytes, ok1 := f.byt(1)
	encryptedStatic, ok2 := f.byt(2)
	encryptedMessage, ok3 := f.byt(3)
	if !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("%w: v1 message lacks a field", ErrSealedSender)
	}
	eph, err := ParsePublicKey(ephBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: ephemeral key: %w", ErrSealedSender, err)
	}
	shared, err := ours.Private.Agree(eph)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSealedSender, err)
	}
	salt := bytes.Join([][]byte{[]byte(sealedV1SaltName), ours.Public.Bytes(), eph.Bytes()}, nil)
	chain, ck, mk := v1Keys(shared, salt)
	staticBytes, err := ctrHMACDecrypt(ck, mk, encryptedStatic)
	if err != nil {
		return nil, err
	}
	static, err := ParsePublicKey(staticBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: sender key: %w", ErrSealedSender, err)
	}
	staticShared, err := ours.Private.Agree(static)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSealedSender, err)
	}
	_, ck, mk = v1Keys(staticShared, append(bytes.Clone(chain), encryptedStatic...))
	plain, err := ctrHMACDecrypt(ck, mk, encryptedMessage)
	if err != nil {
		return nil, err
	}
	u, err := ParseUnidentifiedContent(plain)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(staticBytes, u.Sender.IdentityKey.Bytes()) != 1 {
		return nil, fmt.Errorf("%w: sender certificate key does not match message key", ErrSealedSender)
	}
	return u, nil
}

// SealedSenderEncrypt encrypts plaintext for remote with the session (as
// Encrypt) and seals it (v1) with our sender certificate, whose account
// and device are our address. It is the sealed counterpart of Encrypt.
func SealedSenderEncrypt(ctx context.Context, rand io.Reader, store interface {
	IdentityStore
	SessionStore
}, remote Address, cert *SenderCertificate, plaintext []byte, now time.Time) ([]byte, error) {
	local := Address{Name: cert.SenderUUID, DeviceID: cert.SenderDevice}
	record, err := store.LoadSession(ctx, remote)
	if err != nil {
		return nil, fmt.Errorf("load session: %w", err)
	}
	if record == nil {
		return nil, fmt.Errorf("%w with %s", ErrNoSession, remote)
	}
	theirs, ok := record.RemoteIdentity()
	if !ok {
		return nil, fmt.Errorf("%w with %s", ErrNoSession, remote)
	}
	m, err := Encrypt(ctx, rand, store, local, remote, plaintext, now)
	if err != nil {
		return nil, err
	}
	u, err := NewUnidentifiedContent(m, cert, HintDefault, nil)
	if err != nil {
		return nil, err
	}
	ours, err := store.IdentityKeyPair(ctx)
	if err != nil {
		return nil, err
	}
	return SealV1(rand, ours, theirs, u)
}

// CheckSealedIdentity checks, before a sealed one-to-one message is
// decrypted, that the identity key its certificate vouches for is the one
// the inner message uses: the key a PreKey message carries, or the key of
// the session a message continues. (Unseal already checked that the
// sealing used that key.) Other message types are refused.
func CheckSealedIdentity(ctx context.Context, store SessionStore, u *UnidentifiedContent) error {
	sender := Address{Name: u.Sender.SenderUUID, DeviceID: u.Sender.SenderDevice}
	switch u.Type {
	case TypePreKey:
		m, err := ParsePreKeySignalMessage(u.Contents)
		if err != nil {
			return err
		}
		if !m.IdentityKey.Equal(u.Sender.IdentityKey) {
			return fmt.Errorf("%w: the certificate's identity key is not the message's", ErrSealedSender)
		}
	case TypeSignal:
		rec, err := store.LoadSession(ctx, sender)
		if err != nil {
			return fmt.Errorf("load session: %w", err)
		}
		if k, ok := rec.RemoteIdentity(); ok && !k.Equal(u.Sender.IdentityKey) {
			return fmt.Errorf("%w: the certificate's identity key is not the session's", ErrSealedSender)
		}
	default:
		return fmt.Errorf("%w: message type %d is not one-to-one", ErrSealedSender, u.Type)
	}
	return nil
}

// SealedResult is a decrypted sealed message and who sent it.
type SealedResult struct {
	Sender     Address // the certificate's account (UUID) and device
	SenderE164 string
	Plaintext  []byte
	// Content is the unsealed content, certificate included.
	Content *UnidentifiedContent
}

// SealedSenderDecrypt unseals body, validates the sender certificate
// against trustRoot at now, refuses a message from our own device, and
// decrypts the inner one-to-one message with the session (as Decrypt). A
// sealed group message (TypeSenderKey) is refused here: unseal it with
// Unseal, validate its certificate, and give its contents to GroupDecrypt.
func SealedSenderDecrypt(ctx context.Context, rand io.Reader, store Store, body []byte, trustRoot PublicKey, now time.Time,
	local Address, localE164 string) (*SealedResult, error) {
	ours, err := store.IdentityKeyPair(ctx)
	if err != nil {
		return nil, err
	}
	u, err := Unseal(ours, body)
	if err != nil {
		return nil, err
	}
	if !u.Sender.Validate(trustRoot, now) {
		return nil, fmt.Errorf("%w: trust root validation failed", ErrSealedSender)
	}
	sender := Address{Name: u.Sender.SenderUUID, DeviceID: u.Sender.SenderDevice}
	self := sender.Name == local.Name || (localE164 != "" && u.Sender.SenderE164 == localE164)
	if self && sender.DeviceID == local.DeviceID {
		return nil, ErrSealedSenderSelfSend
	}
	if err := CheckSealedIdentity(ctx, store, u); err != nil {
		return nil, err
	}
	plain, err := Decrypt(ctx, rand, store, local, sender, u.Type, u.Contents)
	if err != nil {
		return nil, err
	}
	return &SealedResult{Sender: sender, SenderE164: u.Sender.SenderE164, Plaintext: plain, Content: u}, nil
}

// ProfileKeySize is the size of a Signal profile key.
const ProfileKeySize = 32

// DeriveAccessKey derives the unidentified-access key (16 bytes) a
// profile key grants, as Signal's zkgroup ProfileKey.deriveAccessKey does:
// the first 16 bytes of AES-256-GCM of 16 zero bytes under the profile key
// with a zero nonce.
func DeriveAccessKey(profileKey []byte) ([]byte, error) {
	if len(profileKey) != ProfileKeySize {
		return nil, fmt.Errorf("%w: profile key is %d bytes, want %d", ErrInvalidKey, len(profileKey), ProfileKeySize)
	}
	block, err := aes.NewCipher(profileKey)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return gcm.Seal(nil, make([]byte, gcm.NonceSize()), make([]byte, 16), nil)[:16], nil
}
