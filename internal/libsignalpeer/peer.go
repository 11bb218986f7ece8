// Package libsignalpeer lets Go tests talk to Signal's official libsignal
// (the npm package @signalapp/libsignal-client, pinned at WantVersion) through
// a Node.js child process, so that our own protocol code can be checked
// against the reference implementation byte for byte.
//
// The peer hosts any number of named clients, each with its own in-memory
// identity, session, pre-key, signed pre-key, Kyber pre-key and sender-key
// stores. Everything crosses the boundary as raw bytes (serialized keys,
// messages and records exactly as libsignal produces them); this package
// depends on nothing else in the repository.
//
// Tests get a peer with [Start], which skips the test when the package is not
// installed, unless PARLEY_LIBSIGNAL_REQUIRED=1, and then fails it. Run them
// through scripts/with-libsignal, which installs the package once into a cache
// directory and sets PARLEY_LIBSIGNAL_NODE_MODULES and PARLEY_LIBSIGNAL_REQUIRED:
//
//	scripts/with-libsignal go test ./internal/libsignalpeer/
//
// The wire protocol (peer.cjs) is JSON lines: a request {"id":1,"op":"...",...}
// on the peer's stdin is answered by {"id":1,"result":{...}} or
// {"id":1,"error":"text","code":N,"codeName":"..."} on its stdout, with every
// byte value as standard base64. [Peer.Call] sends any op; the typed methods
// cover each op the peer knows. An address is {"name":"...","deviceId":N}.
//
//	ping                                          -> {version, node}
//	newClient {client, registrationId, deviceId, name?, trust?}
//	                                              -> {identityKey}
//	reinstall {client, registrationId?}           -> {identityKey}
//	setAddressName {client, name}                 -> {}
//	setTrust {client, trust}                      -> {}
//	generateKeys {client, count}                  -> {identityKey, registrationId, deviceId,
//	                                                  signedPreKey:{id,publicKey,signature},
//	                                                  lastResortKyberPreKey:{id,publicKey,signature},
//	                                                  preKeys:[{id,publicKey}],
//	                                                  kyberPreKeys:[{id,publicKey,signature}]}
//	keyState {client}                             -> {preKeyIds, signedPreKeyIds, kyberPreKeyIds,
//	                                                  lastResortKyberPreKeyIds, kyberUsed}
//	processBundle {client, address, bundle:{registrationId, deviceId?, identityKey,
//	               preKeyId?, preKey?, signedPreKeyId, signedPreKey, signedPreKeySignature,
//	               kyberPreKeyId, kyberPreKey, kyberPreKeySignature}}
//	                                              -> {}
//	encrypt {client, address, plaintext}          -> {type, body}
//	decrypt {client, address, type, body}         -> {plaintext}
//	sessionInfo {client, address}                 -> {exists, version, remoteRegistrationId,
//	                                                  localRegistrationId, hasCurrentState,
//	                                                  previousSessions, pqRatchet}
//	archiveSession {client, address}              -> {}
//	deleteSession {client, address}               -> {}
//	identity {client, address}                    -> {identityKey|null, changed, saves}
//	saveIdentity {client, address, identityKey}   -> {changed}
//	createDistribution {client, sender, distributionId}
//	                                              -> {message, distributionId, chainId, iteration}
//	processDistribution {client, sender, message} -> {distributionId}
//	groupEncrypt {client, sender, distributionId, plaintext}
//	                                              -> {type, body}
//	groupDecrypt {client, sender, body}           -> {plaintext}
//	fingerprint {version, iterations, localId, localKey, remoteId, remoteKey}
//	                                              -> {displayable, scannable}
//	newKeyPair                                    -> {publicKey, privateKey}
//	newServerCertificate {keyId, serverKey, trustRootPrivate}
//	                                              -> {certificate}
//	newSenderCertificate {senderUuid, senderE164|null, senderDeviceId, senderKey, expiration,
//	               serverCertificate, serverPrivate}
//	                                              -> {certificate}
//	validateSenderCertificate {certificate, trustRoot, time}
//	                                              -> {valid, senderUuid, senderE164|null, senderDeviceId,
//	                                                  expiration, key, serverKeyId, serverKey}
//	sealedEncrypt {client, address, senderCertificate, plaintext}
//	                                              -> {body}
//	sealedDecrypt {client, body, trustRoot, timestamp, localE164|null, localUuid, localDeviceId}
//	                                              -> {senderUuid, senderE164|null, deviceId, plaintext}
//	sealedDecryptToUsmc {client, body}            -> {type, contents, senderCertificate, contentHint,
//	                                                  groupId|null}
//	sealedEncryptUsmc {client, address, type, contents, senderCertificate, contentHint, groupId|null}
//	                                              -> {body}
//	multiRecipientEncrypt {client, recipients:[address], excluded?:[serviceId], senderCertificate,
//	               distributionId, plaintext, contentHint, groupId|null}
//	                                              -> {body}
//	multiRecipientParse {body}                    -> {recipients:[{serviceId, devices:[{deviceId,
//	                                                  registrationId}], message}], excluded:[serviceId]}
//	multiRecipientForSingle {body}                -> {message}
//	deriveAccessKey {profileKey}                  -> {accessKey}
//
// Times (expiration, time, timestamp) are milliseconds since 1970 as JSON
// numbers. Sealed sender addresses and service ids are service id strings
// (an ACI's bare UUID, "PNI:" and a UUID for a PNI): multiRecipientEncrypt
// refuses recipients whose address name is not one.
package libsignalpeer

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// WantVersion is the version of @signalapp/libsignal-client the harness is
// pinned to; [Start] refuses a peer that reports another one.
const WantVersion = "0.103.0"

// CallTimeout bounds one call to the peer. A call that takes longer kills
// the peer, since its state is then unknown; later calls fail at once.
const CallTimeout = 30 * time.Second

// Ciphertext message types, as libsignal's CiphertextMessageType numbers them.
const (
	// TypeWhisper is a SignalMessage (a message on an established session).
	TypeWhisper = 2
	// TypePreKey is a PreKeySignalMessage (a message that also sets up the session).
	TypePreKey = 3
	// TypeSenderKey is a SenderKeyMessage (a group message).
	TypeSenderKey = 7
	// TypePlaintext is a PlaintextContent.
	TypePlaintext = 8
)

// Content hints of an UnidentifiedSenderMessageContent, as libsignal's
// ContentHint numbers them.
const (
	// ContentHintDefault: the sender will not resend; show an error at once.
	ContentHintDefault = 0
	// ContentHintResendable: the sender will try to resend; delay any error.
	ContentHintResendable = 1
	// ContentHintImplicit: show no error at all (typing messages, receipts).
	ContentHintImplicit = 2
)

// Trust policies for a client's identity store, see [Peer.SetTrust].
const (
	// TrustAlways trusts any identity key, also one that replaces a stored
	// key; the replacement is saved and reported by [Peer.Identity]. This is
	// the default.
	TrustAlways = "always"
	// TrustTOFU trusts an address's first key and then only that key, like
	// libsignal's own in-memory test stores: a changed key fails with an
	// UntrustedIdentity error until [Peer.SaveIdentity] stores it.
	TrustTOFU = "tofu"
)

//go:embed peer.cjs
var peerScript []byte

// Address names one device of a remote (or local) user: libsignal's
// ProtocolAddress.
type Address struct {
	// Name is the user's name, usually a service ID string.
	Name string `json:"name"`
	// DeviceID is the device number, 1 to 127.
	DeviceID uint32 `json:"deviceId"`
}

// String returns the address as libsignal prints it, "name.deviceId".
func (a Address) String() string { return fmt.Sprintf("%s.%d", a.Name, a.DeviceID) }

// PreKey is a one-time EC pre-key as uploaded to a server.
type PreKey struct {
	// ID is the key's id in its owner's pre-key store.
	ID uint32 `json:"id"`
	// PublicKey is the serialized public key (33 bytes, type byte 0x05 first).
	PublicKey []byte `json:"publicKey"`
}

// SignedKey is a pre-key signed by its owner's identity key: a signed EC
// pre-key or a Kyber (KEM) pre-key.
type SignedKey struct {
	// ID is the key's id in its owner's store.
	ID uint32 `json:"id"`
	// PublicKey is the serialized public key, type byte first (for Kyber1024,
	// 0x08 followed by 1568 bytes).
	PublicKey []byte `json:"publicKey"`
	// Signature is the XEdDSA signature of PublicKey by the identity key.
	Signature []byte `json:"signature"`
}

// KeyMaterial is what a client uploads to a server: its identity, a new
// signed pre-key, a new last-resort Kyber pre-key and fresh one-time keys.
type KeyMaterial struct {
	// IdentityKey is the serialized identity public key (33 bytes).
	IdentityKey []byte `json:"identityKey"`
	// RegistrationID is the client's registration id.
	RegistrationID uint32 `json:"registrationId"`
	// DeviceID is the client's own device id.
	DeviceID uint32 `json:"deviceId"`
	// SignedPreKey is the new signed EC pre-key.
	SignedPreKey SignedKey `json:"signedPreKey"`
	// LastResortKyberPreKey is the new last-resort Kyber pre-key, which the
	// client keeps after use.
	LastResortKyberPreKey SignedKey `json:"lastResortKyberPreKey"`
	// PreKeys are the new one-time EC pre-keys.
	PreKeys []PreKey `json:"preKeys"`
	// KyberPreKeys are the new one-time Kyber pre-keys.
	KyberPreKeys []SignedKey `json:"kyberPreKeys"`
}

// Bundle returns a pre-key bundle built from k as a server would hand it out:
// one-time EC pre-key preKey (an index into k.PreKeys, or -1 for none) and
// Kyber pre-key kyber (an index into k.KyberPreKeys, or -1 for the last-resort
// key). It panics on an index out of range.
func (k *KeyMaterial) Bundle(preKey, kyber int) Bundle {
	b := Bundle{
		RegistrationID:        k.RegistrationID,
		DeviceID:              k.DeviceID,
		IdentityKey:           k.IdentityKey,
		SignedPreKeyID:        k.SignedPreKey.ID,
		SignedPreKey:          k.SignedPreKey.PublicKey,
		SignedPreKeySignature: k.SignedPreKey.Signature,
	}
	if preKey >= 0 {
		b.PreKeyID, b.PreKey = k.PreKeys[preKey].ID, k.PreKeys[preKey].PublicKey
	}
	kk := k.LastResortKyberPreKey
	if kyber >= 0 {
		kk = k.KyberPreKeys[kyber]
	}
	b.KyberPreKeyID, b.KyberPreKey, b.KyberPreKeySignature = kk.ID, kk.PublicKey, kk.Signature
	return b
}

// Bundle is a pre-key bundle of one remote device: libsignal's PreKeyBundle.
// In 0.103 the Kyber fields are required; the one-time EC pre-key is optional.
type Bundle struct {
	// RegistrationID is the remote device's registration id.
	RegistrationID uint32
	// DeviceID is the remote device id; 0 means the address's.
	DeviceID uint32
	// IdentityKey is the remote identity public key, serialized.
	IdentityKey []byte
	// PreKeyID is the one-time EC pre-key's id; sent only when PreKey is not nil.
	PreKeyID uint32
	// PreKey is the one-time EC pre-key, or nil for a bundle without one.
	PreKey []byte
	// SignedPreKeyID is the signed EC pre-key's id.
	SignedPreKeyID uint32
	// SignedPreKey is the signed EC pre-key, serialized.
	SignedPreKey []byte
	// SignedPreKeySignature is its signature by the identity key.
	SignedPreKeySignature []byte
	// KyberPreKeyID is the Kyber pre-key's id.
	KyberPreKeyID uint32
	// KyberPreKey is the Kyber pre-key, serialized with its type byte.
	KyberPreKey []byte
	// KyberPreKeySignature is its signature by the identity key.
	KyberPreKeySignature []byte
}

// MarshalJSON encodes b in the peer's wire form, leaving out the one-time
// pre-key when PreKey is nil and the device id when it is 0.
func (b Bundle) MarshalJSON() ([]byte, error) {
	type wire struct {
		RegistrationID        uint32  `json:"registrationId"`
		DeviceID              *uint32 `json:"deviceId,omitempty"`
		IdentityKey           []byte  `json:"identityKey"`
		PreKeyID              *uint32 `json:"preKeyId,omitempty"`
		PreKey                []byte  `json:"preKey,omitempty"`
		SignedPreKeyID        uint32  `json:"signedPreKeyId"`
		SignedPreKey          []byte  `json:"signedPreKey"`
		SignedPreKeySignature []byte  `json:"signedPreKeySignature"`
		KyberPreKeyID         uint32  `json:"kyberPreKeyId"`
		KyberPreKey           []byte  `json:"kyberPreKey"`
		KyberPreKeySignature  []byte  `json:"kyberPreKeySignature"`
	}
	w := wire{
		RegistrationID: b.RegistrationID, IdentityKey: b.IdentityKey,
		SignedPreKeyID: b.SignedPreKeyID, SignedPreKey: b.SignedPreKey, SignedPreKeySignature: b.SignedPreKeySignature,
		KyberPreKeyID: b.KyberPreKeyID, KyberPreKey: b.KyberPreKey, KyberPreKeySignature: b.KyberPreKeySignature,
	}
	if b.DeviceID != 0 {
		w.DeviceID = &b.DeviceID
	}
	if b.PreKey != nil {
		w.PreKeyID, w.PreKey = &b.PreKeyID, b.PreKey
	}
	return json.Marshal(w)
}

// SessionInfo describes a client's session record for one address.
type SessionInfo struct {
	// Exists tells whether any record is stored (perhaps with only archived states).
	Exists bool `json:"exists"`
	// Version is the current state's session version, read from the
	// serialized record (0.103 has no accessor for it): 4 for a PQXDH session,
	// 0 when there is no current state.
	Version int `json:"version"`
	// RemoteRegistrationID is the remote registration id of the current state.
	RemoteRegistrationID uint32 `json:"remoteRegistrationId"`
	// LocalRegistrationID is the local registration id of the current state.
	LocalRegistrationID uint32 `json:"localRegistrationId"`
	// HasCurrentState is SessionRecord.hasCurrentState(): whether the current
	// state can be used to send.
	HasCurrentState bool `json:"hasCurrentState"`
	// PreviousSessions counts the archived states kept in the record.
	PreviousSessions int `json:"previousSessions"`
	// PQRatchet tells whether the current state carries SPQR (post-quantum
	// ratchet) state.
	PQRatchet bool `json:"pqRatchet"`
}

// IdentityInfo is what a client's identity store holds for one address.
type IdentityInfo struct {
	// IdentityKey is the stored remote identity key, or nil if none.
	IdentityKey []byte `json:"identityKey"`
	// Changed tells whether the last save replaced a different key
	// (libsignal's IdentityChange.ReplacedExisting).
	Changed bool `json:"changed"`
	// Saves counts the saves of a key for the address.
	Saves int `json:"saves"`
}

// KeyState lists the key ids a client still holds, to check which keys
// libsignal consumed.
type KeyState struct {
	// PreKeyIDs are the one-time EC pre-keys left.
	PreKeyIDs []uint32 `json:"preKeyIds"`
	// SignedPreKeyIDs are the signed EC pre-keys (never removed).
	SignedPreKeyIDs []uint32 `json:"signedPreKeyIds"`
	// KyberPreKeyIDs are the one-time Kyber pre-keys left.
	KyberPreKeyIDs []uint32 `json:"kyberPreKeyIds"`
	// LastResortKyberPreKeyIDs are the last-resort Kyber pre-keys (never removed).
	LastResortKyberPreKeyIDs []uint32 `json:"lastResortKyberPreKeyIds"`
	// KyberUsed lists, in order, the Kyber pre-key ids that libsignal marked used.
	KyberUsed []uint32 `json:"kyberUsed"`
}

// FingerprintInput are the arguments of libsignal's Fingerprint.new.
type FingerprintInput struct {
	// Version is the fingerprint version (2 for service-id based ones).
	Version int `json:"version"`
	// Iterations is the hash iteration count (Signal uses 5200).
	Iterations int `json:"iterations"`
	// LocalID is the local stable identifier bytes.
	LocalID []byte `json:"localId"`
	// LocalKey is the local identity key, serialized.
	LocalKey []byte `json:"localKey"`
	// RemoteID is the remote stable identifier bytes.
	RemoteID []byte `json:"remoteId"`
	// RemoteKey is the remote identity key, serialized.
	RemoteKey []byte `json:"remoteKey"`
}

// Error is an error answered by the peer: a libsignal error (Code and
// CodeName from its ErrorCode enum, Operation naming the native call), a bad
// request (CodeName "BadRequest"), or another JavaScript error.
type Error struct {
	// Op is the peer op that failed.
	Op string
	// Message is the error's message.
	Message string
	// Code is libsignal's ErrorCode number, or -1 when not a libsignal error.
	Code int
	// CodeName is the ErrorCode name ("UntrustedIdentity", "DuplicatedMessage",
	// ...), "BadRequest", a JavaScript error name, or "".
	CodeName string
	// Operation is the libsignal native operation that failed, if known.
	Operation string
}

// Error formats the error with its op and code name.
func (e *Error) Error() string {
	s := "libsignal peer: " + e.Op + ": " + e.Message
	if e.CodeName != "" {
		s += " [" + e.CodeName + "]"
	}
	return s
}

// HasCode tells whether err is (or wraps) an *Error with the given CodeName.
func HasCode(err error, codeName string) bool {
	var e *Error
	return errors.As(err, &e) && e.CodeName == codeName
}

// Peer is a running Node process hosting official libsignal clients. Its
// methods are safe for concurrent use; calls are served one at a time.
type Peer struct {
	mu      sync.Mutex // serializes calls
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	answers chan answer // closed when node's stdout closes
	stderr  *tailBuffer
	nextID  int64
	broken  error
	version string
	timeout time.Duration // CallTimeout; shorter in tests
}

type answer struct {
	ID       *int64          `json:"id"`
	Result   json.RawMessage `json:"result"`
	Error    *string         `json:"error"`
	Code     *int            `json:"code"`
	CodeName string          `json:"codeName"`
	Op       string          `json:"operation"`
	raw      []byte
}

// Start launches the peer for t and stops it when t ends. It skips t when
// PARLEY_LIBSIGNAL_NODE_MODULES is unset (or node is missing), unless
// PARLEY_LIBSIGNAL_REQUIRED=1, when it fails t instead. It fails t if the
// peer cannot start or reports a version other than [WantVersion].
func Start(t testing.TB) *Peer {
	t.Helper()
	required := os.Getenv("PARLEY_LIBSIGNAL_REQUIRED") == "1"
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if required {
			t.Fatalf("%s (PARLEY_LIBSIGNAL_REQUIRED=1; run the tests via scripts/with-libsignal)", msg)
		}
		t.Skipf("%s; run via scripts/with-libsignal to test against official libsignal", msg)
	}
	nm := os.Getenv("PARLEY_LIBSIGNAL_NODE_MODULES")
	if nm == "" {
		unavailable("PARLEY_LIBSIGNAL_NODE_MODULES is not set")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable("node not found: %v", err)
	}
	script := filepath.Join(t.TempDir(), "peer.cjs")
	if err := os.WriteFile(script, peerScript, 0o644); err != nil {
		t.Fatalf("libsignalpeer: %v", err)
	}
	p, err := start(node, script, nm)
	if err != nil {
		t.Fatalf("libsignalpeer: %v", err)
	}
	t.Cleanup(p.Close)
	v, err := p.Ping()
	if err != nil {
		t.Fatalf("libsignalpeer: %v", err)
	}
	if v != WantVersion {
		t.Fatalf("libsignalpeer: %s in %s is version %s, want %s (scripts/with-libsignal installs it)",
			"@signalapp/libsignal-client", nm, v, WantVersion)
	}
	p.version = v
	return p
}

func start(node, script, nodeModules string) (*Peer, error) {
	cmd := exec.Command(node, script)
	cmd.Env = append(os.Environ(), "PARLEY_LIBSIGNAL_NODE_MODULES="+nodeModules)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &Peer{
		cmd:     cmd,
		stdin:   stdin,
		answers: make(chan answer, 1),
		stderr:  &tailBuffer{max: 64 << 10},
		timeout: CallTimeout,
	}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", node, err)
	}
	go p.read(stdout)
	return p, nil
}

// read delivers the peer's answers, one per line, until its stdout closes.
func (p *Peer) read(stdout io.Reader) {
	defer close(p.answers)
	r := bufio.NewReaderSize(stdout, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var a answer
			if jerr := json.Unmarshal(line, &a); jerr != nil {
				a = answer{raw: line}
			}
			p.answers <- a
		}
		if err != nil {
			return
		}
	}
}

// Close stops the peer process. Calls after Close fail.
func (p *Peer) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.kill(errors.New("peer closed"))
}

// kill ends the process; p.mu is held.
func (p *Peer) kill(why error) {
	if p.broken == nil {
		p.broken = why
	}
	if p.cmd.ProcessState == nil {
		p.stdin.Close()
		p.cmd.Process.Kill()
		for range p.answers { // let read reach the end of stdout
		}
		p.cmd.Wait()
	}
}

// Stderr returns the last 64 KiB the peer wrote to its stderr.
func (p *Peer) Stderr() string { return p.stderr.String() }

// Version returns the version of @signalapp/libsignal-client the peer runs.
func (p *Peer) Version() string { return p.version }

// Call sends op with args (a struct or map marshalled to JSON, whose fields
// join "id" and "op" in the request; nil for none) and decodes the result
// into result (nil to ignore it). A peer-side failure is an *Error.
func (p *Peer) Call(op string, args, result any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken != nil {
		return fmt.Errorf("libsignal peer: %s: peer unusable: %w", op, p.broken)
	}
	p.nextID++
	id := p.nextID
	req := map[string]json.RawMessage{}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return fmt.Errorf("libsignal peer: %s: encoding args: %w", op, err)
		}
		if err := json.Unmarshal(b, &req); err != nil {
			return fmt.Errorf("libsignal peer: %s: args must encode to a JSON object: %w", op, err)
		}
	}
	req["id"], _ = json.Marshal(id)
	req["op"], _ = json.Marshal(op)
	line, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("libsignal peer: %s: %w", op, err)
	}
	if _, err := p.stdin.Write(append(line, '\n')); err != nil {
		p.kill(fmt.Errorf("writing to node: %w", err))
		return p.failure(op, p.broken)
	}
	timer := time.NewTimer(p.timeout)
	defer timer.Stop()
	for {
		select {
		case a, ok := <-p.answers:
			if !ok {
				p.kill(errors.New("node exited"))
				return p.failure(op, p.broken)
			}
			if a.raw != nil {
				p.kill(fmt.Errorf("unparsable answer %q", truncate(a.raw, 200)))
				return p.failure(op, p.broken)
			}
			if a.ID == nil || *a.ID != id {
				continue // an answer to a bad line or to a call that timed out
			}
			if a.Error != nil {
				e := &Error{Op: op, Message: *a.Error, Code: -1, CodeName: a.CodeName, Operation: a.Op}
				if a.Code != nil {
					e.Code = *a.Code
				}
				return e
			}
			if result != nil {
				if err := json.Unmarshal(a.Result, result); err != nil {
					return fmt.Errorf("libsignal peer: %s: decoding result %s: %w", op, truncate(a.Result, 200), err)
				}
			}
			return nil
		case <-timer.C:
			p.kill(fmt.Errorf("no answer within %v", p.timeout))
			return p.failure(op, p.broken)
		}
	}
}

func (p *Peer) failure(op string, err error) error {
	msg := fmt.Sprintf("libsignal peer: %s: %v", op, err)
	if st := p.cmd.ProcessState; st != nil {
		msg += " (" + st.String() + ")"
	}
	if s := strings.TrimSpace(p.stderr.String()); s != "" {
		msg += "\nnode stderr:\n" + s
	}
	return errors.New(msg)
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

// Write keeps the last max bytes written.
func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

// String is what the buffer holds.
func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// ---- typed ops

type clientArgs struct {
	Client string `json:"client"`
}

type addrArgs struct {
	Client  string  `json:"client"`
	Address Address `json:"address"`
}

// Ping asks the peer for the package version it loaded.
func (p *Peer) Ping() (version string, err error) {
	var r struct {
		Version string `json:"version"`
	}
	err = p.Call("ping", nil, &r)
	return r.Version, err
}

// NewClient creates a client with a fresh identity key pair and empty
// stores, whose own address is {client, deviceID}, trusting identities as
// [TrustAlways]. It returns the serialized identity public key (33 bytes).
func (p *Peer) NewClient(client string, registrationID, deviceID uint32) (identityKey []byte, err error) {
	return p.NewClientWith(client, ClientOptions{RegistrationID: registrationID, DeviceID: deviceID})
}

// ClientOptions configure [Peer.NewClientWith].
type ClientOptions struct {
	// AddressName is the name of the client's own address (libsignal's local
	// ProtocolAddress); empty means the client's name.
	AddressName string `json:"name,omitempty"`
	// RegistrationID is the client's registration id, 1 to 16383.
	RegistrationID uint32 `json:"registrationId"`
	// DeviceID is the client's device id, 1 to 127.
	DeviceID uint32 `json:"deviceId"`
	// Trust is TrustAlways (the default when empty) or TrustTOFU.
	Trust string `json:"trust,omitempty"`
}

// NewClientWith is [Peer.NewClient] with all options.
func (p *Peer) NewClientWith(client string, o ClientOptions) (identityKey []byte, err error) {
	var r struct {
		IdentityKey []byte `json:"identityKey"`
	}
	err = p.Call("newClient", struct {
		Client string `json:"client"`
		ClientOptions
	}{client, o}, &r)
	return r.IdentityKey, err
}

// Reinstall gives client a new identity key pair and wipes all its stores
// (sessions, identities, pre-keys, sender keys), as a reinstalled app would
// be. Key ids keep counting up. It returns the new identity public key.
func (p *Peer) Reinstall(client string) (identityKey []byte, err error) {
	var r struct {
		IdentityKey []byte `json:"identityKey"`
	}
	err = p.Call("reinstall", clientArgs{client}, &r)
	return r.IdentityKey, err
}

// SetAddressName renames client's own address (libsignal's local
// ProtocolAddress) to name, keeping its identity key and all its stores: an
// app generates its keys before registering and learns its account id, the
// name others address it by, only from the registration's answer. Sessions
// and pre-keys made before stay valid; the messages it encrypts afterwards
// bind name as their sender.
func (p *Peer) SetAddressName(client, name string) error {
	return p.Call("setAddressName", struct {
		Client string `json:"client"`
		Name   string `json:"name"`
	}{client, name}, nil)
}

// SetTrust sets client's trust policy, [TrustAlways] or [TrustTOFU].
func (p *Peer) SetTrust(client, policy string) error {
	return p.Call("setTrust", struct {
		Client string `json:"client"`
		Trust  string `json:"trust"`
	}{client, policy}, nil)
}

// GenerateKeys makes a new signed pre-key, a new last-resort Kyber pre-key,
// and count one-time EC and count one-time Kyber1024 pre-keys, stores their
// private halves in client's stores and returns the public material. Ids
// start at 1 and keep increasing across calls (Kyber one-time and last-resort
// keys share one id sequence, as they share a store).
func (p *Peer) GenerateKeys(client string, count int) (*KeyMaterial, error) {
	var k KeyMaterial
	err := p.Call("generateKeys", struct {
		Client string `json:"client"`
		Count  int    `json:"count"`
	}{client, count}, &k)
	if err != nil {
		return nil, err
	}
	return &k, nil
}

// KeyState lists the key ids client still holds and the Kyber keys used.
func (p *Peer) KeyState(client string) (KeyState, error) {
	var k KeyState
	err := p.Call("keyState", clientArgs{client}, &k)
	return k, err
}

// ProcessBundle makes client start a session with addr from bundle
// (libsignal's processPreKeyBundle): it checks the signatures and trust,
// saves the identity, and the next [Peer.Encrypt] to addr yields a PreKey message.
func (p *Peer) ProcessBundle(client string, addr Address, bundle Bundle) error {
	return p.Call("processBundle", struct {
		Client  string  `json:"client"`
		Address Address `json:"address"`
		Bundle  Bundle  `json:"bundle"`
	}{client, addr, bundle}, nil)
}

// Encrypt encrypts plaintext from client to addr (signalEncrypt) and returns
// the ciphertext message type ([TypePreKey] or [TypeWhisper]) and serialized body.
func (p *Peer) Encrypt(client string, addr Address, plaintext []byte) (typ int, body []byte, err error) {
	var r struct {
		Type int    `json:"type"`
		Body []byte `json:"body"`
	}
	err = p.Call("encrypt", struct {
		Client    string  `json:"client"`
		Address   Address `json:"address"`
		Plaintext []byte  `json:"plaintext"`
	}{client, addr, nonNil(plaintext)}, &r)
	return r.Type, r.Body, err
}

// Decrypt decrypts body of type typ ([TypePreKey]: signalDecryptPreKey,
// [TypeWhisper]: signalDecrypt) that client received from addr.
func (p *Peer) Decrypt(client string, addr Address, typ int, body []byte) (plaintext []byte, err error) {
	var r struct {
		Plaintext []byte `json:"plaintext"`
	}
	err = p.Call("decrypt", struct {
		Client  string  `json:"client"`
		Address Address `json:"address"`
		Type    int     `json:"type"`
		Body    []byte  `json:"body"`
	}{client, addr, typ, nonNil(body)}, &r)
	return nonNil(r.Plaintext), err
}

// SessionInfo describes client's session record for addr.
func (p *Peer) SessionInfo(client string, addr Address) (SessionInfo, error) {
	var s SessionInfo
	err := p.Call("sessionInfo", addrArgs{client, addr}, &s)
	return s, err
}

// ArchiveSession archives client's current session state for addr
// (SessionRecord.archiveCurrentState), as a session reset does.
func (p *Peer) ArchiveSession(client string, addr Address) error {
	return p.Call("archiveSession", addrArgs{client, addr}, nil)
}

// DeleteSession removes client's session record for addr.
func (p *Peer) DeleteSession(client string, addr Address) error {
	return p.Call("deleteSession", addrArgs{client, addr}, nil)
}

// Identity returns what client's identity store holds for addr.
func (p *Peer) Identity(client string, addr Address) (IdentityInfo, error) {
	var r IdentityInfo
	err := p.Call("identity", addrArgs{client, addr}, &r)
	return r, err
}

// SaveIdentity stores identityKey for addr in client's identity store, as
// accepting a safety-number change does, and tells whether it replaced
// another key.
func (p *Peer) SaveIdentity(client string, addr Address, identityKey []byte) (changed bool, err error) {
	var r struct {
		Changed bool `json:"changed"`
	}
	err = p.Call("saveIdentity", struct {
		Client      string  `json:"client"`
		Address     Address `json:"address"`
		IdentityKey []byte  `json:"identityKey"`
	}{client, addr, nonNil(identityKey)}, &r)
	return r.Changed, err
}

type senderArgs struct {
	Client         string  `json:"client"`
	Sender         Address `json:"sender"`
	DistributionID string  `json:"distributionId,omitempty"`
}

// CreateDistribution makes client, sending as sender (its own address), a
// sender key for distributionID (a UUID string) if it has none, and returns
// the serialized SenderKeyDistributionMessage.
func (p *Peer) CreateDistribution(client string, sender Address, distributionID string) (message []byte, err error) {
	var r struct {
		Message []byte `json:"message"`
	}
	err = p.Call("createDistribution", senderArgs{Client: client, Sender: sender, DistributionID: distributionID}, &r)
	return r.Message, err
}

// ProcessDistribution stores sender's SenderKeyDistributionMessage in
// client's sender-key store.
func (p *Peer) ProcessDistribution(client string, sender Address, message []byte) error {
	return p.Call("processDistribution", struct {
		senderArgs
		Message []byte `json:"message"`
	}{senderArgs{Client: client, Sender: sender}, nonNil(message)}, nil)
}

// GroupEncrypt encrypts plaintext with client's sender key for
// distributionID (sending as sender) and returns the serialized SenderKeyMessage.
func (p *Peer) GroupEncrypt(client string, sender Address, distributionID string, plaintext []byte) (body []byte, err error) {
	var r struct {
		Body []byte `json:"body"`
	}
	err = p.Call("groupEncrypt", struct {
		senderArgs
		Plaintext []byte `json:"plaintext"`
	}{senderArgs{client, sender, distributionID}, nonNil(plaintext)}, &r)
	return r.Body, err
}

// GroupDecrypt decrypts a SenderKeyMessage that client received from sender.
func (p *Peer) GroupDecrypt(client string, sender Address, body []byte) (plaintext []byte, err error) {
	var r struct {
		Plaintext []byte `json:"plaintext"`
	}
	err = p.Call("groupDecrypt", struct {
		senderArgs
		Body []byte `json:"body"`
	}{senderArgs{Client: client, Sender: sender}, nonNil(body)}, &r)
	return nonNil(r.Plaintext), err
}

// Fingerprint computes a safety number (Fingerprint.new) and returns its
// displayable digits and its serialized scannable form.
func (p *Peer) Fingerprint(in FingerprintInput) (displayable string, scannable []byte, err error) {
	in.LocalID, in.LocalKey, in.RemoteID, in.RemoteKey = nonNil(in.LocalID), nonNil(in.LocalKey), nonNil(in.RemoteID), nonNil(in.RemoteKey)
	var r struct {
		Displayable string `json:"displayable"`
		Scannable   []byte `json:"scannable"`
	}
	err = p.Call("fingerprint", in, &r)
	return r.Displayable, r.Scannable, err
}

// ---- sealed sender

// KeyPair is an EC (Curve25519) key pair, serialized as libsignal does.
type KeyPair struct {
	// PublicKey is the serialized public key (33 bytes, type byte 0x05 first).
	PublicKey []byte `json:"publicKey"`
	// PrivateKey is the serialized private key (32 bytes).
	PrivateKey []byte `json:"privateKey"`
}

// NewKeyPair generates an EC key pair (PrivateKey.generate), for a trust
// root or a server certificate's key.
func (p *Peer) NewKeyPair() (KeyPair, error) {
	var k KeyPair
	err := p.Call("newKeyPair", nil, &k)
	return k, err
}

// NewServerCertificate makes a server certificate for serverKey (a
// serialized public key) with id keyID, signed by the trust root's private
// key (ServerCertificate.new), and returns it serialized.
func (p *Peer) NewServerCertificate(keyID uint32, serverKey, trustRootPrivate []byte) (certificate []byte, err error) {
	var r struct {
		Certificate []byte `json:"certificate"`
	}
	err = p.Call("newServerCertificate", struct {
		KeyID            uint32 `json:"keyId"`
		ServerKey        []byte `json:"serverKey"`
		TrustRootPrivate []byte `json:"trustRootPrivate"`
	}{keyID, nonNil(serverKey), nonNil(trustRootPrivate)}, &r)
	return r.Certificate, err
}

// SenderCertificateInput are the arguments of libsignal's SenderCertificate.new.
type SenderCertificateInput struct {
	// SenderUUID is the sender's ACI (a UUID string).
	SenderUUID string
	// SenderE164 is the sender's phone number, or "" for none.
	SenderE164 string
	// SenderDeviceID is the sender's device id.
	SenderDeviceID uint32
	// SenderKey is the sender's identity public key, serialized.
	SenderKey []byte
	// Expiration is when the certificate expires, in milliseconds since 1970.
	Expiration uint64
	// ServerCertificate is the signing server certificate, serialized.
	ServerCertificate []byte
	// ServerPrivate is the private key of the server certificate's key.
	ServerPrivate []byte
}

// NewSenderCertificate makes a sender certificate signed by the server key
// (SenderCertificate.new) and returns it serialized.
func (p *Peer) NewSenderCertificate(in SenderCertificateInput) (certificate []byte, err error) {
	var r struct {
		Certificate []byte `json:"certificate"`
	}
	err = p.Call("newSenderCertificate", struct {
		SenderUUID        string  `json:"senderUuid"`
		SenderE164        *string `json:"senderE164"`
		SenderDeviceID    uint32  `json:"senderDeviceId"`
		SenderKey         []byte  `json:"senderKey"`
		Expiration        uint64  `json:"expiration"`
		ServerCertificate []byte  `json:"serverCertificate"`
		ServerPrivate     []byte  `json:"serverPrivate"`
	}{in.SenderUUID, optString(in.SenderE164), in.SenderDeviceID, nonNil(in.SenderKey), in.Expiration,
		nonNil(in.ServerCertificate), nonNil(in.ServerPrivate)}, &r)
	return r.Certificate, err
}

// SenderCertificateInfo is what libsignal reads from a sender certificate.
type SenderCertificateInfo struct {
	// Valid is SenderCertificate.validate(trustRoot, time): the server
	// certificate is signed by the trust root, the sender certificate by the
	// server key, and time is not after the expiration.
	Valid bool `json:"valid"`
	// SenderUUID is the sender's ACI string.
	SenderUUID string `json:"senderUuid"`
	// SenderE164 is the sender's phone number, or "" for none.
	SenderE164 string `json:"senderE164"`
	// SenderDeviceID is the sender's device id.
	SenderDeviceID uint32 `json:"senderDeviceId"`
	// Expiration is the expiration in milliseconds since 1970.
	Expiration uint64 `json:"expiration"`
	// Key is the sender's identity public key, serialized.
	Key []byte `json:"key"`
	// ServerKeyID is the id of the signing server certificate.
	ServerKeyID uint32 `json:"serverKeyId"`
	// ServerKey is the server certificate's public key, serialized.
	ServerKey []byte `json:"serverKey"`
}

// ValidateSenderCertificate parses certificate and validates it against the
// serialized trust root public key at time (milliseconds since 1970). A
// certificate that does not parse is an error; one that parses but does not
// validate has Valid false.
func (p *Peer) ValidateSenderCertificate(certificate, trustRoot []byte, time uint64) (SenderCertificateInfo, error) {
	var r SenderCertificateInfo
	err := p.Call("validateSenderCertificate", struct {
		Certificate []byte `json:"certificate"`
		TrustRoot   []byte `json:"trustRoot"`
		Time        uint64 `json:"time"`
	}{nonNil(certificate), nonNil(trustRoot), time}, &r)
	return r, err
}

// SealedEncrypt encrypts plaintext from client to addr on their session and
// seals it with senderCertificate (sealedSenderEncryptMessage), returning
// the sealed sender (v1) message. client needs a session with addr, as for
// [Peer.Encrypt].
func (p *Peer) SealedEncrypt(client string, addr Address, senderCertificate, plaintext []byte) (body []byte, err error) {
	var r struct {
		Body []byte `json:"body"`
	}
	err = p.Call("sealedEncrypt", struct {
		Client            string  `json:"client"`
		Address           Address `json:"address"`
		SenderCertificate []byte  `json:"senderCertificate"`
		Plaintext         []byte  `json:"plaintext"`
	}{client, addr, nonNil(senderCertificate), nonNil(plaintext)}, &r)
	return r.Body, err
}

// SealedDecryptInput are the arguments of [Peer.SealedDecrypt] besides the client.
type SealedDecryptInput struct {
	// Body is the sealed sender message (v1, or a v2 received message).
	Body []byte
	// TrustRoot is the trust root public key the sender certificate must chain to.
	TrustRoot []byte
	// Timestamp is the time the certificate is checked at, in milliseconds since 1970.
	Timestamp uint64
	// LocalE164 is the recipient's phone number, or "" for none.
	LocalE164 string
	// LocalUUID is the recipient's ACI string.
	LocalUUID string
	// LocalDeviceID is the recipient's device id.
	LocalDeviceID uint32
}

// SealedDecryptResult is the outcome of [Peer.SealedDecrypt].
type SealedDecryptResult struct {
	// SenderUUID is the sender's ACI string from its certificate.
	SenderUUID string `json:"senderUuid"`
	// SenderE164 is the sender's phone number, or "" for none.
	SenderE164 string `json:"senderE164"`
	// DeviceID is the sender's device id.
	DeviceID uint32 `json:"deviceId"`
	// Plaintext is the decrypted message.
	Plaintext []byte `json:"plaintext"`
}

// SealedDecrypt unseals and decrypts a sealed sender message that client
// received (sealedSenderDecryptMessage, with client's stores): it validates
// the sender certificate and decrypts the Signal or PreKey message inside.
func (p *Peer) SealedDecrypt(client string, in SealedDecryptInput) (SealedDecryptResult, error) {
	var r SealedDecryptResult
	err := p.Call("sealedDecrypt", struct {
		Client        string  `json:"client"`
		Body          []byte  `json:"body"`
		TrustRoot     []byte  `json:"trustRoot"`
		Timestamp     uint64  `json:"timestamp"`
		LocalE164     *string `json:"localE164"`
		LocalUUID     string  `json:"localUuid"`
		LocalDeviceID uint32  `json:"localDeviceId"`
	}{client, nonNil(in.Body), nonNil(in.TrustRoot), in.Timestamp, optString(in.LocalE164), in.LocalUUID, in.LocalDeviceID}, &r)
	r.Plaintext = nonNil(r.Plaintext)
	return r, err
}

// USMC is an UnidentifiedSenderMessageContent: the inner layer of a sealed
// sender message.
type USMC struct {
	// Type is the ciphertext message type of Contents ([TypeWhisper],
	// [TypePreKey], [TypeSenderKey] or [TypePlaintext]).
	Type int `json:"type"`
	// Contents is the serialized message of that type.
	Contents []byte `json:"contents"`
	// SenderCertificate is the serialized sender certificate.
	SenderCertificate []byte `json:"senderCertificate"`
	// ContentHint is a ContentHint* value.
	ContentHint int `json:"contentHint"`
	// GroupID is the group id, or nil for none.
	GroupID []byte `json:"groupId"`
}

// SealedDecryptToUSMC unseals a sealed sender message (v1, or a v2
// received message) that client received (sealedSenderDecryptToUsmc, with
// client's identity store) without decrypting its contents or validating
// the sender certificate.
func (p *Peer) SealedDecryptToUSMC(client string, body []byte) (USMC, error) {
	var r USMC
	err := p.Call("sealedDecryptToUsmc", struct {
		Client string `json:"client"`
		Body   []byte `json:"body"`
	}{client, nonNil(body)}, &r)
	r.Contents = nonNil(r.Contents)
	return r, err
}

// SealedEncryptUSMC seals u for addr (UnidentifiedSenderMessageContent.new,
// then sealedSenderEncrypt with client's identity store) and returns the
// sealed sender (v1) message: to send a message encrypted beforehand, such
// as a group SenderKeyMessage, sealed. u.Contents must parse as a message of
// u.Type. client needs addr's identity key, not a session.
func (p *Peer) SealedEncryptUSMC(client string, addr Address, u USMC) (body []byte, err error) {
	var r struct {
		Body []byte `json:"body"`
	}
	u.Contents, u.SenderCertificate = nonNil(u.Contents), nonNil(u.SenderCertificate)
	err = p.Call("sealedEncryptUsmc", struct {
		Client  string  `json:"client"`
		Address Address `json:"address"`
		USMC
	}{client, addr, u}, &r)
	return r.Body, err
}

// MultiRecipientInput are the arguments of [Peer.MultiRecipientEncrypt]
// besides the client.
type MultiRecipientInput struct {
	// Recipients are the recipient devices; client needs a session with
	// each, and each name must be a service id string.
	Recipients []Address
	// Excluded are service id strings of recipients deliberately left out.
	Excluded []string
	// SenderCertificate is the serialized sender certificate.
	SenderCertificate []byte
	// DistributionID is the sender key's distribution id (a UUID string).
	DistributionID string
	// Plaintext is the group message.
	Plaintext []byte
	// ContentHint is a ContentHint* value.
	ContentHint int
	// GroupID is the group id, or nil for none.
	GroupID []byte
}

// MultiRecipientEncrypt encrypts plaintext with client's sender key for
// in.DistributionID (groupEncrypt, sending as client's own address), wraps
// it in an UnidentifiedSenderMessageContent and seals it for all recipients
// at once (sealedSenderMultiRecipientEncrypt). It returns the Sealed Sender
// v2 "sent message" a client uploads to the server.
func (p *Peer) MultiRecipientEncrypt(client string, in MultiRecipientInput) (body []byte, err error) {
	var r struct {
		Body []byte `json:"body"`
	}
	if in.Recipients == nil {
		in.Recipients = []Address{}
	}
	err = p.Call("multiRecipientEncrypt", struct {
		Client            string    `json:"client"`
		Recipients        []Address `json:"recipients"`
		Excluded          []string  `json:"excluded,omitempty"`
		SenderCertificate []byte    `json:"senderCertificate"`
		DistributionID    string    `json:"distributionId"`
		Plaintext         []byte    `json:"plaintext"`
		ContentHint       int       `json:"contentHint"`
		GroupID           []byte    `json:"groupId"`
	}{client, in.Recipients, in.Excluded, nonNil(in.SenderCertificate), in.DistributionID, nonNil(in.Plaintext),
		in.ContentHint, in.GroupID}, &r)
	return r.Body, err
}

// RecipientDevice is one device of a recipient of a Sealed Sender v2 message.
type RecipientDevice struct {
	// DeviceID is the device id.
	DeviceID uint32 `json:"deviceId"`
	// RegistrationID is the registration id the sender's session names.
	RegistrationID uint32 `json:"registrationId"`
}

// MultiRecipient is one recipient of a Sealed Sender v2 message.
type MultiRecipient struct {
	// ServiceID is the recipient's service id string.
	ServiceID string `json:"serviceId"`
	// Devices are the recipient's devices the message is for.
	Devices []RecipientDevice `json:"devices"`
	// Message is the Sealed Sender v2 "received message" the server delivers
	// to each of these devices.
	Message []byte `json:"message"`
}

// MultiRecipientMessage is a parsed Sealed Sender v2 "sent message".
type MultiRecipientMessage struct {
	// Recipients are the recipients, in the order the message lists them.
	Recipients []MultiRecipient `json:"recipients"`
	// Excluded are the service id strings of excluded recipients.
	Excluded []string `json:"excluded"`
}

// MultiRecipientParse parses a Sealed Sender v2 sent message as a server
// does (SealedSenderMultiRecipientMessage) and returns each recipient's
// devices and received message.
func (p *Peer) MultiRecipientParse(body []byte) (MultiRecipientMessage, error) {
	var r MultiRecipientMessage
	err := p.Call("multiRecipientParse", struct {
		Body []byte `json:"body"`
	}{nonNil(body)}, &r)
	return r, err
}

// MultiRecipientForSingle returns the received message for the only
// recipient of a Sealed Sender v2 sent message
// (sealedSenderMultiRecipientMessageForSingleRecipient).
func (p *Peer) MultiRecipientForSingle(body []byte) (message []byte, err error) {
	var r struct {
		Message []byte `json:"message"`
	}
	err = p.Call("multiRecipientForSingle", struct {
		Body []byte `json:"body"`
	}{nonNil(body)}, &r)
	return r.Message, err
}

// optString makes "" encode as null.
func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// nonNil makes nil bytes encode as "" rather than null, so empty inputs
// reach libsignal as empty arrays.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// DeriveAccessKey is official zkgroup's ProfileKey.deriveAccessKey: the
// unidentified-access key a 32-byte profile key grants.
func (p *Peer) DeriveAccessKey(profileKey []byte) (accessKey []byte, err error) {
	var r struct {
		AccessKey []byte `json:"accessKey"`
	}
	err = p.Call("deriveAccessKey", struct {
		ProfileKey []byte `json:"profileKey"`
	}{profileKey}, &r)
	return r.AccessKey, err
}
