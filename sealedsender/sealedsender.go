// Package sealedsender is the relay's side of Signal's sealed sender: the
// operator's trust root (an offline key pair whose public half clients
// pin), the server certificate it signs for the key the relay signs with
// (one file that every replica shares), and the short-lived sender
// certificates the relay issues to authenticated devices, which senders put
// inside their sealed messages so recipients learn who wrote them while the
// relay does not.
//
// The relay knows no phone numbers in the clear, so its sender certificates
// name only the account (its UUID), the device and the account's identity
// key, never an E.164 number. The certificate formats are package
// protocol's, which official libsignal accepts.
//
// Both files are JSON with standard padded base64 values, mode 0600:
//
//	trust root:  {"private_key": 32 bytes, "public_key": 33 bytes}
//	server key:  {"trust_root": 33 bytes, "key_id": N, "certificate": a serialized
//	             ServerCertificate, "private_key": 32 bytes}
//
// Rotating the server key is a new server key file, with a new key id, from
// the same trust root: clients pin only the root, so nothing changes for
// them. A new trust root must be announced to every client, which refuses a
// changed root.
package sealedsender

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"

	"github.com/parleyhq/parley/protocol"
)

// Sender certificate lifetimes: the default, and the bounds a relay may be
// configured with.
const (
	DefaultLifetime = 24 * time.Hour
	MinLifetime     = time.Minute
	MaxLifetime     = 7 * 24 * time.Hour
)

// maxFileBytes bounds what is read of a key file (real ones are under 400
// bytes).
const maxFileBytes = 64 << 10

// Errors reported for key files, each naming one problem.
var (
	// ErrInsecureFile reports a key file that group or others may access.
	ErrInsecureFile = errors.New("accessible by group or others; chmod 600 it")
	// ErrMalformed reports a key file that is not the expected JSON, or a
	// value in it that does not decode.
	ErrMalformed = errors.New("malformed key file")
	// ErrRootMismatch reports a trust root file whose public_key is not
	// its private key's public half.
	ErrRootMismatch = errors.New("public_key is not the public half of private_key")
	// ErrUntrusted reports a server certificate that does not validate
	// under the trust root in its file: another root signed it, or it was
	// altered.
	ErrUntrusted = errors.New("the server certificate does not validate under the file's trust_root")
	// ErrKeyMismatch reports a server key file whose private key is not the
	// one its certificate certifies.
	ErrKeyMismatch = errors.New("private_key is not the key the server certificate certifies")
	// ErrKeyIDMismatch reports a server key file whose key_id differs from
	// its certificate's key id.
	ErrKeyIDMismatch = errors.New("key_id is not the server certificate's key id")
	// ErrRevokedKeyID reports a key id that libsignal refuses whatever
	// signs it.
	ErrRevokedKeyID = errors.New("libsignal refuses this server certificate key id; choose another")
	// ErrInvalid reports an Issue request that cannot be certified: a
	// device id outside 1–127, a nil account or a malformed identity key.
	ErrInvalid = errors.New("invalid sender certificate request")
)

// TrustRoot is the operator's trust root key pair. Its private half signs
// server certificates and belongs offline; clients pin its public half. It
// cannot be compared with == and never prints its private key.
type TrustRoot struct {
	_    [0]func()
	pair protocol.KeyPair
}

// GenerateTrustRoot makes a new trust root from rand.
func GenerateTrustRoot(rand io.Reader) (*TrustRoot, error) {
	kp, err := protocol.GenerateKeyPair(rand)
	if err != nil {
		return nil, fmt.Errorf("generate trust root: %w", err)
	}
	return &TrustRoot{pair: kp}, nil
}

// Public is the trust root's public key, the one clients pin.
func (r *TrustRoot) Public() protocol.PublicKey { return r.pair.Public }

// String shows only the public key.
func (r *TrustRoot) String() string {
	return "sealedsender.TrustRoot(public " + r.pair.Public.String() + ")"
}

// GoString shows only the public key (%#v).
func (r *TrustRoot) GoString() string { return r.String() }

type trustRootJSON struct {
	PrivateKey string `json:"private_key"`
	PublicKey  string `json:"public_key"`
}

// Marshal is the trust root file's content.
func (r *TrustRoot) Marshal() []byte {
	return marshal(trustRootJSON{PrivateKey: b64(r.pair.Private.Bytes()), PublicKey: b64(r.pair.Public.Bytes())})
}

// ParseTrustRoot reads a trust root file's content, checking that its
// public key is its private key's public half (ErrRootMismatch).
func ParseTrustRoot(b []byte) (*TrustRoot, error) {
	var j trustRootJSON
	if err := unmarshal(b, &j); err != nil {
		return nil, err
	}
	privBytes, err := unb64("private_key", j.PrivateKey, protocol.PrivateKeySize)
	if err != nil {
		return nil, err
	}
	pubBytes, err := unb64("public_key", j.PublicKey, protocol.PublicKeySize)
	if err != nil {
		return nil, err
	}
	priv, err := protocol.NewPrivateKey(privBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: private_key: %w", ErrMalformed, err)
	}
	pub, err := protocol.ParsePublicKey(pubBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: public_key: %w", ErrMalformed, err)
	}
	if !priv.Public().Equal(pub) {
		return nil, ErrRootMismatch
	}
	return &TrustRoot{pair: protocol.KeyPair{Public: pub, Private: priv}}, nil
}

// LoadTrustRoot reads a trust root file (see ParseTrustRoot), which must
// not be accessible by group or others (ErrInsecureFile).
func LoadTrustRoot(path string) (*TrustRoot, error) {
	b, err := readPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("trust root file %s: %w", path, err)
	}
	r, err := ParseTrustRoot(b)
	if err != nil {
		return nil, fmt.Errorf("trust root file %s: %w", path, err)
	}
	return r, nil
}

// WriteFile writes the trust root file at path with mode 0600. It never
// replaces a file: an existing one is an error wrapping fs.ErrExist.
func (r *TrustRoot) WriteFile(path string) error {
	if err := writeNew(path, r.Marshal()); err != nil {
		return fmt.Errorf("write trust root: %w", err)
	}
	return nil
}

// ServerKey is a server certificate, the private key it certifies and the
// trust root that signed it: the content of the file every replica shares.
// It never prints its private key.
type ServerKey struct {
	_         [0]func()
	trustRoot protocol.PublicKey
	cert      *protocol.ServerCertificate
	private   protocol.PrivateKey
}

// NewServerKey makes a new server key pair and its certificate with keyID,
// signed by the trust root.
func (r *TrustRoot) NewServerKey(rand io.Reader, keyID uint32) (*ServerKey, error) {
	kp, err := protocol.GenerateKeyPair(rand)
	if err != nil {
		return nil, fmt.Errorf("generate server key: %w", err)
	}
	cert, err := protocol.NewServerCertificate(rand, keyID, kp.Public, r.pair.Private)
	if err != nil {
		return nil, fmt.Errorf("sign server certificate: %w", err)
	}
	if !cert.Validate(r.pair.Public) { // a fresh signature fails only for a revoked id
		return nil, fmt.Errorf("key id %d: %w", keyID, ErrRevokedKeyID)
	}
	return &ServerKey{trustRoot: r.pair.Public, cert: cert, private: kp.Private}, nil
}

// TrustRoot is the public key of the trust root that signed the certificate.
func (k *ServerKey) TrustRoot() protocol.PublicKey { return k.trustRoot }

// KeyID is the server certificate's key id.
func (k *ServerKey) KeyID() uint32 { return k.cert.KeyID }

// Certificate is the server certificate.
func (k *ServerKey) Certificate() *protocol.ServerCertificate { return k.cert }

// String shows the key id and the trust root, never the private key.
func (k *ServerKey) String() string {
	return fmt.Sprintf("sealedsender.ServerKey(key id %d, trust root %s)", k.cert.KeyID, k.trustRoot)
}

// GoString is String (%#v).
func (k *ServerKey) GoString() string { return k.String() }

type serverKeyJSON struct {
	TrustRoot   string  `json:"trust_root"`
	KeyID       *uint32 `json:"key_id"`
	Certificate string  `json:"certificate"`
	PrivateKey  string  `json:"private_key"`
}

// Marshal is the server key file's content.
func (k *ServerKey) Marshal() []byte {
	id := k.cert.KeyID
	return marshal(serverKeyJSON{TrustRoot: b64(k.trustRoot.Bytes()), KeyID: &id,
		Certificate: b64(k.cert.Bytes()), PrivateKey: b64(k.private.Bytes())})
}

// ParseServerKey reads a server key file's content and checks it: the
// certificate parses and validates under the file's trust root
// (ErrUntrusted; also for a key id libsignal revoked), the private key is the one it
// certifies (ErrKeyMismatch), and key_id is its key id (ErrKeyIDMismatch).
func ParseServerKey(b []byte) (*ServerKey, error) {
	var j serverKeyJSON
	if err := unmarshal(b, &j); err != nil {
		return nil, err
	}
	if j.KeyID == nil {
		return nil, fmt.Errorf("%w: key_id is missing", ErrMalformed)
	}
	rootBytes, err := unb64("trust_root", j.TrustRoot, protocol.PublicKeySize)
	if err != nil {
		return nil, err
	}
	certBytes, err := unb64("certificate", j.Certificate, -1)
	if err != nil {
		return nil, err
	}
	privBytes, err := unb64("private_key", j.PrivateKey, protocol.PrivateKeySize)
	if err != nil {
		return nil, err
	}
	root, err := protocol.ParsePublicKey(rootBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: trust_root: %w", ErrMalformed, err)
	}
	cert, err := protocol.ParseServerCertificate(certBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: %w", ErrMalformed, err)
	}
	priv, err := protocol.NewPrivateKey(privBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: private_key: %w", ErrMalformed, err)
	}
	if !cert.Validate(root) {
		return nil, ErrUntrusted
	}
	if !priv.Public().Equal(cert.Key) {
		return nil, ErrKeyMismatch
	}
	if *j.KeyID != cert.KeyID {
		return nil, fmt.Errorf("%w: key_id %d, certificate %d", ErrKeyIDMismatch, *j.KeyID, cert.KeyID)
	}
	return &ServerKey{trustRoot: root, cert: cert, private: priv}, nil
}

// LoadServerKey reads and checks a server key file (see ParseServerKey),
// which must not be accessible by group or others (ErrInsecureFile).
func LoadServerKey(path string) (*ServerKey, error) {
	b, err := readPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("server certificate file %s: %w", path, err)
	}
	k, err := ParseServerKey(b)
	if err != nil {
		return nil, fmt.Errorf("server certificate file %s: %w", path, err)
	}
	return k, nil
}

// WriteFile writes the server key file at path with mode 0600. It never
// replaces a file: an existing one is an error wrapping fs.ErrExist.
func (k *ServerKey) WriteFile(path string) error {
	if err := writeNew(path, k.Marshal()); err != nil {
		return fmt.Errorf("write server certificate: %w", err)
	}
	return nil
}

// Issuer issues sender certificates under a server key. It is safe for
// concurrent use.
type Issuer struct {
	key      *ServerKey
	lifetime time.Duration
	rand     io.Reader
}

// NewIssuer issues certificates signed by key that expire lifetime after
// they are issued (MinLifetime to MaxLifetime). Signatures take their
// randomness from crypto/rand.
func NewIssuer(key *ServerKey, lifetime time.Duration) (*Issuer, error) {
	if key == nil {
		return nil, errors.New("sender certificate issuer needs a server key")
	}
	if lifetime < MinLifetime || lifetime > MaxLifetime {
		return nil, fmt.Errorf("sender certificate lifetime %v: must be %v to %v", lifetime, MinLifetime, MaxLifetime)
	}
	return &Issuer{key: key, lifetime: lifetime, rand: rand.Reader}, nil
}

// TrustRoot is the public key clients validate certificates under.
func (i *Issuer) TrustRoot() protocol.PublicKey { return i.key.trustRoot }

// KeyID is the id of the server certificate that signs.
func (i *Issuer) KeyID() uint32 { return i.key.cert.KeyID }

// Lifetime is how long an issued certificate is valid.
func (i *Issuer) Lifetime() time.Duration { return i.lifetime }

// Issue certifies that device of account holds identityKey (the account's
// 33-byte serialized identity key) until now plus the lifetime, to the
// millisecond. It returns the serialized certificate and its expiry. The
// certificate carries no phone number. A nil account, a device outside
// 1–127 or a malformed identity key is ErrInvalid.
func (i *Issuer) Issue(account uuid.UUID, device int, identityKey []byte, now time.Time) ([]byte, time.Time, error) {
	if account == uuid.Nil {
		return nil, time.Time{}, fmt.Errorf("%w: no account", ErrInvalid)
	}
	if device < 1 || device > 127 {
		return nil, time.Time{}, fmt.Errorf("%w: device id %d", ErrInvalid, device)
	}
	identity, err := protocol.ParsePublicKey(identityKey)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: identity key: %w", ErrInvalid, err)
	}
	c, err := protocol.NewSenderCertificate(i.rand, protocol.SenderCertificate{
		SenderUUID: account.String(), SenderDevice: uint32(device), Expires: now.Add(i.lifetime),
		IdentityKey: identity, Signer: i.key.cert,
	}, i.key.private)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("issue sender certificate: %w", err)
	}
	return c.Bytes(), c.Expires, nil
}

// readPrivate reads a small key file that group and others must not be
// able to access. The mode is checked on the open file.
func readPrivate(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a regular file", ErrMalformed)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("mode %v: %w", perm, ErrInsecureFile)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("%w: larger than %d KiB", ErrMalformed, maxFileBytes>>10)
	}
	return b, nil
}

// writeNew creates path with mode 0600 and writes b, synced. It never
// replaces an existing file, and removes what it created if writing fails.
func writeNew(path string, b []byte) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; not replacing it: %w", path, fs.ErrExist)
		}
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

var strictB64 = base64.StdEncoding.Strict()

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// unb64 decodes a file's base64 value strictly and checks its length (size
// -1: any non-empty length). Errors name the field, never its value.
func unb64(field, s string, size int) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: %s is missing", ErrMalformed, field)
	}
	b, err := strictB64.DecodeString(s)
	if err != nil || len(s) != base64.StdEncoding.EncodedLen(len(b)) { // no line breaks either
		return nil, fmt.Errorf("%w: %s is not standard padded base64", ErrMalformed, field)
	}
	if size >= 0 && len(b) != size {
		return nil, fmt.Errorf("%w: %s is %d bytes, want %d", ErrMalformed, field, len(b), size)
	}
	return b, nil
}

func marshal(v any) []byte {
	b, err := json.Marshal(v, jsontext.Multiline(true), jsontext.WithIndent("  "))
	if err != nil { // plain strings and a number cannot fail
		panic(fmt.Sprintf("sealedsender: marshal: %v", err))
	}
	return append(b, '\n')
}

// unmarshal decodes one JSON object strictly (unknown and duplicate
// members refused). Errors say where, never echo a value.
func unmarshal(b []byte, v any) error {
	err := json.Unmarshal(b, v, json.RejectUnknownMembers(true))
	if err == nil {
		return nil
	}
	var se *json.SemanticError
	if errors.As(err, &se) && se.JSONPointer != "" {
		return fmt.Errorf("%w: invalid JSON at %s", ErrMalformed, se.JSONPointer)
	}
	var syn *jsontext.SyntacticError
	if errors.As(err, &syn) {
		return fmt.Errorf("%w: invalid JSON at byte %d", ErrMalformed, syn.ByteOffset)
	}
	return fmt.Errorf("%w: not a JSON object of the expected members", ErrMalformed)
}
