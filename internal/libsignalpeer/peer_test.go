package libsignalpeer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	aliceAddr = Address{Name: "alice", DeviceID: 1}
	bobAddr   = Address{Name: "bob", DeviceID: 1}
	carolAddr = Address{Name: "carol", DeviceID: 2}
)

// pair starts a peer with official clients alice (registration id 1111) and
// bob (2222), and returns bob's freshly generated keys.
func pair(t *testing.T, count int) (*Peer, *KeyMaterial) {
	t.Helper()
	p := Start(t)
	if _, err := p.NewClient("alice", 1111, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := p.NewClient("bob", 2222, 1); err != nil {
		t.Fatal(err)
	}
	keys, err := p.GenerateKeys("bob", count)
	if err != nil {
		t.Fatal(err)
	}
	return p, keys
}

func send(t *testing.T, p *Peer, from, to string, fromAddr, toAddr Address, msg string, wantType int) {
	t.Helper()
	typ, body, err := p.Encrypt(from, toAddr, []byte(msg))
	if err != nil {
		t.Fatalf("%s encrypt: %v", from, err)
	}
	if typ != wantType {
		t.Fatalf("%s -> %s %q: type %d, want %d", from, to, msg, typ, wantType)
	}
	got, err := p.Decrypt(to, fromAddr, typ, body)
	if err != nil {
		t.Fatalf("%s decrypt of %q: %v", to, msg, err)
	}
	if string(got) != msg {
		t.Fatalf("%s got %q, want %q", to, got, msg)
	}
}

func TestVersion(t *testing.T) {
	p := Start(t)
	if p.Version() != WantVersion {
		t.Fatalf("Version() = %q, want %q", p.Version(), WantVersion)
	}
	v, err := p.Ping()
	if err != nil || v != WantVersion {
		t.Fatalf("Ping() = %q, %v", v, err)
	}
}

func TestGenerateKeys(t *testing.T) {
	p, k := pair(t, 3)
	ik, _ := p.Identity("alice", bobAddr)
	if ik.IdentityKey != nil {
		t.Fatalf("alice knows bob's identity before any bundle: %x", ik.IdentityKey)
	}
	if len(k.IdentityKey) != 33 || k.IdentityKey[0] != 0x05 {
		t.Fatalf("identity key %x: want 33 bytes starting 05", k.IdentityKey)
	}
	if k.RegistrationID != 2222 || k.DeviceID != 1 {
		t.Fatalf("registration id %d device %d", k.RegistrationID, k.DeviceID)
	}
	if k.SignedPreKey.ID != 1 || len(k.SignedPreKey.PublicKey) != 33 || len(k.SignedPreKey.Signature) != 64 {
		t.Fatalf("signed pre-key %+v", k.SignedPreKey)
	}
	// Kyber1024: type byte 0x08 and 1568 bytes of key.
	kem := func(what string, s SignedKey) {
		if len(s.PublicKey) != 1569 || s.PublicKey[0] != 0x08 || len(s.Signature) != 64 {
			t.Fatalf("%s: %d-byte key starting %x, %d-byte signature", what, len(s.PublicKey), s.PublicKey[:1], len(s.Signature))
		}
	}
	kem("last resort", k.LastResortKyberPreKey)
	if len(k.PreKeys) != 3 || len(k.KyberPreKeys) != 3 {
		t.Fatalf("%d pre-keys, %d kyber pre-keys", len(k.PreKeys), len(k.KyberPreKeys))
	}
	for i, pk := range k.PreKeys {
		if pk.ID != uint32(i+1) || len(pk.PublicKey) != 33 {
			t.Fatalf("pre-key %d: %+v", i, pk)
		}
	}
	ids := []uint32{k.LastResortKyberPreKey.ID}
	for i, kk := range k.KyberPreKeys {
		kem(fmt.Sprint("kyber ", i), kk)
		ids = append(ids, kk.ID)
	}
	if !slices.Equal(ids, []uint32{1, 2, 3, 4}) {
		t.Fatalf("kyber ids %v", ids)
	}
	// Ids keep increasing across calls.
	k2, err := p.GenerateKeys("bob", 1)
	if err != nil {
		t.Fatal(err)
	}
	if k2.SignedPreKey.ID != 2 || k2.PreKeys[0].ID != 4 || k2.LastResortKyberPreKey.ID != 5 || k2.KyberPreKeys[0].ID != 6 {
		t.Fatalf("second batch ids: spk %d pk %d lr %d kyber %d", k2.SignedPreKey.ID, k2.PreKeys[0].ID,
			k2.LastResortKyberPreKey.ID, k2.KyberPreKeys[0].ID)
	}
	st, err := p.KeyState("bob")
	if err != nil {
		t.Fatal(err)
	}
	want := KeyState{
		PreKeyIDs: []uint32{1, 2, 3, 4}, SignedPreKeyIDs: []uint32{1, 2},
		KyberPreKeyIDs: []uint32{2, 3, 4, 6}, LastResortKyberPreKeyIDs: []uint32{1, 5}, KyberUsed: []uint32{},
	}
	if fmt.Sprint(st) != fmt.Sprint(want) {
		t.Fatalf("key state %+v, want %+v", st, want)
	}
}

func TestSessionConversation(t *testing.T) {
	p, k := pair(t, 2)
	if info, err := p.SessionInfo("alice", bobAddr); err != nil || info.Exists {
		t.Fatalf("session before bundle: %+v, %v", info, err)
	}
	if err := p.ProcessBundle("alice", bobAddr, k.Bundle(0, 0)); err != nil {
		t.Fatal(err)
	}
	info, err := p.SessionInfo("alice", bobAddr)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Exists || !info.HasCurrentState || info.Version != 4 || info.RemoteRegistrationID != 2222 ||
		info.LocalRegistrationID != 1111 {
		t.Fatalf("alice's session after bundle: %+v", info)
	}
	id, _ := p.Identity("alice", bobAddr)
	if !bytes.Equal(id.IdentityKey, k.IdentityKey) || id.Changed {
		t.Fatalf("alice's record of bob: %+v", id)
	}

	// Until bob answers, everything alice sends is a PreKey message.
	send(t, p, "alice", "bob", aliceAddr, bobAddr, "hello bob", TypePreKey)
	send(t, p, "alice", "bob", aliceAddr, bobAddr, "are you there?", TypePreKey)
	binfo, _ := p.SessionInfo("bob", aliceAddr)
	if !binfo.HasCurrentState || binfo.Version != 4 || binfo.RemoteRegistrationID != 1111 {
		t.Fatalf("bob's session: %+v", binfo)
	}
	if aid, _ := p.Identity("bob", aliceAddr); aid.IdentityKey == nil || aid.Changed {
		t.Fatalf("bob's record of alice: %+v", aid)
	}
	// bob used one-time pre-key 1 and Kyber key 2: both gone; the last-resort key stays.
	st, _ := p.KeyState("bob")
	if !slices.Equal(st.PreKeyIDs, []uint32{2}) || !slices.Equal(st.KyberPreKeyIDs, []uint32{3}) ||
		!slices.Equal(st.LastResortKyberPreKeyIDs, []uint32{1}) || !slices.Equal(st.KyberUsed, []uint32{2}) {
		t.Fatalf("bob's keys after the first message: %+v", st)
	}

	send(t, p, "bob", "alice", bobAddr, aliceAddr, "yes, hi alice", TypeWhisper)
	for i := range 6 {
		send(t, p, "alice", "bob", aliceAddr, bobAddr, fmt.Sprint("a", i), TypeWhisper)
		send(t, p, "alice", "bob", aliceAddr, bobAddr, fmt.Sprint("a", i, "'"), TypeWhisper)
		send(t, p, "bob", "alice", bobAddr, aliceAddr, fmt.Sprint("b", i), TypeWhisper)
	}
	send(t, p, "alice", "bob", aliceAddr, bobAddr, "", TypeWhisper) // empty plaintext
	info, _ = p.SessionInfo("alice", bobAddr)
	if info.Version != 4 || !info.PQRatchet {
		t.Fatalf("alice's session after the conversation: %+v", info)
	}

	// Archiving the session leaves a record that cannot send.
	if err := p.ArchiveSession("alice", bobAddr); err != nil {
		t.Fatal(err)
	}
	info, _ = p.SessionInfo("alice", bobAddr)
	if !info.Exists || info.HasCurrentState || info.Version != 0 || info.PreviousSessions != 1 {
		t.Fatalf("alice's session after archiving: %+v", info)
	}
	if _, _, err := p.Encrypt("alice", bobAddr, []byte("x")); err == nil {
		t.Fatal("encrypt on an archived session")
	}
	// bob can still send on his state; alice finds it among the archived ones.
	send(t, p, "bob", "alice", bobAddr, aliceAddr, "still here", TypeWhisper)
	if err := p.DeleteSession("alice", bobAddr); err != nil {
		t.Fatal(err)
	}
	if info, _ := p.SessionInfo("alice", bobAddr); info.Exists {
		t.Fatalf("session after delete: %+v", info)
	}
}

func TestOutOfOrderAndReplay(t *testing.T) {
	p, k := pair(t, 1)
	if err := p.ProcessBundle("alice", bobAddr, k.Bundle(0, 0)); err != nil {
		t.Fatal(err)
	}
	send(t, p, "alice", "bob", aliceAddr, bobAddr, "first", TypePreKey)
	send(t, p, "bob", "alice", bobAddr, aliceAddr, "ack", TypeWhisper)

	type msg struct {
		typ  int
		body []byte
	}
	var msgs []msg
	for i := range 6 {
		typ, body, err := p.Encrypt("alice", bobAddr, []byte(fmt.Sprint("m", i)))
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, msg{typ, body})
	}
	for _, i := range []int{5, 0, 3, 1, 4, 2} {
		got, err := p.Decrypt("bob", aliceAddr, msgs[i].typ, msgs[i].body)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(got) != fmt.Sprint("m", i) {
			t.Fatalf("message %d: got %q", i, got)
		}
	}
	_, err := p.Decrypt("bob", aliceAddr, msgs[3].typ, msgs[3].body)
	if !HasCode(err, "DuplicatedMessage") {
		t.Fatalf("replayed message: %v, want DuplicatedMessage", err)
	}
	// A tampered message fails and leaves the session usable.
	bad := slices.Clone(msgs[0].body)
	bad[len(bad)-1] ^= 1
	if _, err := p.Decrypt("bob", aliceAddr, TypeWhisper, bad); err == nil {
		t.Fatal("tampered message decrypted")
	}
	send(t, p, "alice", "bob", aliceAddr, bobAddr, "still fine", TypeWhisper)
}

func TestLastResortKyberAndNoOneTimeKey(t *testing.T) {
	p, k := pair(t, 0)
	if _, err := p.NewClient("carol", 3333, 2); err != nil {
		t.Fatal(err)
	}
	// Two senders use bob's bundle without one-time keys: the last-resort
	// Kyber key serves both and stays.
	for _, c := range []struct {
		name string
		addr Address
	}{{"alice", aliceAddr}, {"carol", carolAddr}} {
		if err := p.ProcessBundle(c.name, bobAddr, k.Bundle(-1, -1)); err != nil {
			t.Fatal(err)
		}
		send(t, p, c.name, "bob", c.addr, bobAddr, "hi from "+c.name, TypePreKey)
		send(t, p, "bob", c.name, bobAddr, c.addr, "hi "+c.name, TypeWhisper)
	}
	st, _ := p.KeyState("bob")
	if !slices.Equal(st.LastResortKyberPreKeyIDs, []uint32{1}) || !slices.Equal(st.KyberUsed, []uint32{1, 1}) {
		t.Fatalf("bob's keys: %+v", st)
	}
}

func TestBundleChecks(t *testing.T) {
	p, k := pair(t, 1)
	b := k.Bundle(0, 0)
	b.SignedPreKeySignature = slices.Clone(b.SignedPreKeySignature)
	b.SignedPreKeySignature[0] ^= 1
	if err := p.ProcessBundle("alice", bobAddr, b); err == nil {
		t.Fatal("bundle with a bad signed pre-key signature accepted")
	}
	b = k.Bundle(0, 0)
	b.KyberPreKeySignature = slices.Clone(b.KyberPreKeySignature)
	b.KyberPreKeySignature[5] ^= 1
	if err := p.ProcessBundle("alice", bobAddr, b); err == nil {
		t.Fatal("bundle with a bad kyber pre-key signature accepted")
	}
	b = k.Bundle(0, 0)
	b.KyberPreKey = nil // 0.103 requires Kyber
	if err := p.ProcessBundle("alice", bobAddr, b); !HasCode(err, "BadRequest") {
		t.Fatalf("bundle without kyber: %v", err)
	}
	if info, _ := p.SessionInfo("alice", bobAddr); info.Exists {
		t.Fatalf("session after rejected bundles: %+v", info)
	}
}

func TestGroup(t *testing.T) {
	p, _ := pair(t, 0)
	if _, err := p.NewClient("carol", 3333, 2); err != nil {
		t.Fatal(err)
	}
	const dist = "d3b07384-d113-4ec6-a8f3-5c4e8f6d1a2b"
	skdm, err := p.CreateDistribution("alice", aliceAddr, dist)
	if err != nil {
		t.Fatal(err)
	}
	again, err := p.CreateDistribution("alice", aliceAddr, dist)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(skdm, again) {
		t.Fatal("second distribution message for the same id differs before any message was sent")
	}
	for _, r := range []string{"bob", "carol"} {
		if err := p.ProcessDistribution(r, aliceAddr, skdm); err != nil {
			t.Fatal(err)
		}
	}
	var bodies [][]byte
	for i := range 5 {
		body, err := p.GroupEncrypt("alice", aliceAddr, dist, []byte(fmt.Sprint("group ", i)))
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, body)
	}
	for _, r := range []string{"bob", "carol"} {
		order := []int{0, 1, 2, 3, 4}
		if r == "carol" {
			order = []int{4, 2, 0, 3, 1}
		}
		for _, i := range order {
			got, err := p.GroupDecrypt(r, aliceAddr, bodies[i])
			if err != nil {
				t.Fatalf("%s message %d: %v", r, i, err)
			}
			if string(got) != fmt.Sprint("group ", i) {
				t.Fatalf("%s message %d: %q", r, i, got)
			}
		}
	}
	if _, err := p.GroupDecrypt("bob", aliceAddr, bodies[0]); !HasCode(err, "DuplicatedMessage") {
		t.Fatalf("replayed group message: %v", err)
	}
	// Without alice's distribution message carol cannot read bob's messages.
	bskdm, err := p.CreateDistribution("bob", bobAddr, dist)
	if err != nil {
		t.Fatal(err)
	}
	body, err := p.GroupEncrypt("bob", bobAddr, dist, []byte("from bob"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.GroupDecrypt("carol", bobAddr, body); err == nil {
		t.Fatal("carol decrypted bob's group message without his sender key")
	}
	if err := p.ProcessDistribution("carol", bobAddr, bskdm); err != nil {
		t.Fatal(err)
	}
	if got, err := p.GroupDecrypt("carol", bobAddr, body); err != nil || string(got) != "from bob" {
		t.Fatalf("carol: %q, %v", got, err)
	}
}

func TestFingerprint(t *testing.T) {
	p, _ := pair(t, 0)
	k, err := p.GenerateKeys("alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	aliceKey := k.IdentityKey
	kb, _ := p.GenerateKeys("bob", 0)
	aliceID, bobID := []byte("+14152222222"), []byte("+14153333333")
	da, sa, err := p.Fingerprint(FingerprintInput{Version: 2, Iterations: 5200, LocalID: aliceID, LocalKey: aliceKey, RemoteID: bobID, RemoteKey: kb.IdentityKey})
	if err != nil {
		t.Fatal(err)
	}
	db, sb, err := p.Fingerprint(FingerprintInput{Version: 2, Iterations: 5200, LocalID: bobID, LocalKey: kb.IdentityKey, RemoteID: aliceID, RemoteKey: aliceKey})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9]{60}$`).MatchString(da) || da != db {
		t.Fatalf("displayable %q and %q: want the same 60 digits", da, db)
	}
	if len(sa) == 0 || bytes.Equal(sa, sb) {
		t.Fatalf("scannable forms %x, %x: want non-empty, different per side", sa, sb)
	}
	if _, _, err := p.Fingerprint(FingerprintInput{Version: 2, Iterations: 5200, LocalID: aliceID, LocalKey: []byte{1, 2}, RemoteID: bobID, RemoteKey: kb.IdentityKey}); err == nil {
		t.Fatal("fingerprint of a bad key")
	}
}

func TestReinstallChangesIdentity(t *testing.T) {
	p, k := pair(t, 2)
	if err := p.ProcessBundle("alice", bobAddr, k.Bundle(0, 0)); err != nil {
		t.Fatal(err)
	}
	send(t, p, "alice", "bob", aliceAddr, bobAddr, "before", TypePreKey)
	send(t, p, "bob", "alice", bobAddr, aliceAddr, "ok", TypeWhisper)

	// alice's old session does not work with the reinstalled bob.
	typ, oldBody, err := p.Encrypt("alice", bobAddr, []byte("lost"))
	if err != nil {
		t.Fatal(err)
	}
	newKey, err := p.Reinstall("bob")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(newKey, k.IdentityKey) {
		t.Fatal("reinstall kept the identity key")
	}
	if _, err := p.Decrypt("bob", aliceAddr, typ, oldBody); err == nil {
		t.Fatal("reinstalled bob decrypted a message of the old session")
	} else {
		t.Logf("old-session message to reinstalled bob: %v", err)
	}
	if info, _ := p.SessionInfo("bob", aliceAddr); info.Exists {
		t.Fatalf("reinstalled bob has a session: %+v", info)
	}

	k2, err := p.GenerateKeys("bob", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ProcessBundle("alice", bobAddr, k2.Bundle(0, 0)); err != nil {
		t.Fatal(err)
	}
	id, err := p.Identity("alice", bobAddr)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Changed || !bytes.Equal(id.IdentityKey, newKey) || id.Saves < 2 {
		t.Fatalf("alice's record of the reinstalled bob: %+v", id)
	}
	send(t, p, "alice", "bob", aliceAddr, bobAddr, "after", TypePreKey)
	send(t, p, "bob", "alice", bobAddr, aliceAddr, "welcome back", TypeWhisper)
	info, _ := p.SessionInfo("alice", bobAddr)
	if info.PreviousSessions != 1 || info.Version != 4 {
		t.Fatalf("alice's session with the new bob: %+v", info)
	}
	// A further save of the same key is not a change.
	if changed, err := p.SaveIdentity("alice", bobAddr, newKey); err != nil || changed {
		t.Fatalf("SaveIdentity same key: %v, %v", changed, err)
	}
	if id, _ := p.Identity("alice", bobAddr); id.Changed {
		t.Fatalf("after re-saving the same key: %+v", id)
	}
}

func TestTrustOnFirstUse(t *testing.T) {
	p, k := pair(t, 2)
	if err := p.SetTrust("alice", TrustTOFU); err != nil {
		t.Fatal(err)
	}
	if err := p.ProcessBundle("alice", bobAddr, k.Bundle(0, 0)); err != nil {
		t.Fatal(err)
	}
	send(t, p, "alice", "bob", aliceAddr, bobAddr, "hi", TypePreKey)
	newKey, _ := p.Reinstall("bob")
	k2, _ := p.GenerateKeys("bob", 1)
	err := p.ProcessBundle("alice", bobAddr, k2.Bundle(0, 0))
	if !HasCode(err, "UntrustedIdentity") {
		t.Fatalf("bundle with a changed identity under TOFU: %v", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != 3 {
		t.Fatalf("error %#v: want code 3", err)
	}
	// The old session still names the old key, which is still trusted.
	if _, _, err := p.Encrypt("alice", bobAddr, []byte("x")); err != nil {
		t.Fatalf("encrypt on the old session: %v", err)
	}
	changed, err := p.SaveIdentity("alice", bobAddr, newKey)
	if err != nil || !changed {
		t.Fatalf("SaveIdentity: %v, %v", changed, err)
	}
	if err := p.ProcessBundle("alice", bobAddr, k2.Bundle(0, 0)); err != nil {
		t.Fatal(err)
	}
	send(t, p, "alice", "bob", aliceAddr, bobAddr, "hi again", TypePreKey)
}

func TestBadInput(t *testing.T) {
	p, k := pair(t, 1)
	checks := []struct {
		name string
		err  error
	}{}
	add := func(name string, err error) {
		checks = append(checks, struct {
			name string
			err  error
		}{name, err})
	}
	add("unknown op", p.Call("noSuchOp", nil, nil))
	add("unknown client", p.Call("encrypt", map[string]any{"client": "zed", "address": bobAddr, "plaintext": ""}, nil))
	add("bad base64", p.Call("encrypt", map[string]any{"client": "alice", "address": bobAddr, "plaintext": "!!"}, nil))
	add("bad device", p.Call("encrypt", map[string]any{"client": "alice", "address": Address{"bob", 500}, "plaintext": ""}, nil))
	add("missing address", p.Call("encrypt", map[string]any{"client": "alice", "plaintext": ""}, nil))
	_, err := p.NewClient("alice", 1, 1)
	add("duplicate client", err)
	_, _, err = p.Encrypt("alice", bobAddr, []byte("no session"))
	add("no session", err)
	_, err = p.Decrypt("bob", aliceAddr, TypeWhisper, []byte("garbage"))
	add("garbage whisper", err)
	_, err = p.Decrypt("bob", aliceAddr, TypePreKey, []byte{0x44, 1, 2, 3})
	add("garbage prekey", err)
	_, err = p.Decrypt("bob", aliceAddr, 9, []byte{1})
	add("bad type", err)
	b := k.Bundle(0, 0)
	b.KyberPreKey = []byte{8, 1, 2}
	add("short kyber key", p.ProcessBundle("alice", bobAddr, b))
	_, err = p.GroupDecrypt("bob", aliceAddr, []byte{1, 2, 3})
	add("garbage group message", err)
	_, err = p.CreateDistribution("alice", aliceAddr, "not-a-uuid")
	add("bad distribution id", err)
	for _, c := range checks {
		var e *Error
		if !errors.As(c.err, &e) {
			t.Errorf("%s: %v, want an *Error", c.name, c.err)
			continue
		}
		t.Logf("%s: %v (code %d)", c.name, e, e.Code)
	}
	// Lines that are not requests get an answer with a null id, which is skipped.
	p.mu.Lock()
	_, werr := p.stdin.Write([]byte("this is not json\n[1,2]\nnull\n\"x\"\n"))
	p.mu.Unlock()
	if werr != nil {
		t.Fatal(werr)
	}
	if v, err := p.Ping(); err != nil || v != WantVersion {
		t.Fatalf("peer after bad input: %q, %v\n%s", v, err, p.Stderr())
	}
	// And the clients still work.
	if err := p.ProcessBundle("alice", bobAddr, k.Bundle(0, 0)); err != nil {
		t.Fatal(err)
	}
	send(t, p, "alice", "bob", aliceAddr, bobAddr, "after the noise", TypePreKey)
}

func TestClosedPeer(t *testing.T) {
	p := Start(t)
	p.Close()
	if _, err := p.Ping(); err == nil {
		t.Fatal("ping on a closed peer")
	}
	p.Close() // twice is fine
}

// TestPeerLoadFailure checks that a peer that cannot load libsignal is
// reported with node's stderr.
func TestPeerLoadFailure(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not found")
	}
	script := filepath.Join(t.TempDir(), "peer.cjs")
	if err := os.WriteFile(script, peerScript, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := start(node, script, filepath.Join(t.TempDir(), "nowhere"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, err = p.Ping()
	if err == nil || !strings.Contains(err.Error(), "cannot load @signalapp/libsignal-client") {
		t.Fatalf("ping of a peer without libsignal: %v", err)
	}
	if _, err2 := p.Ping(); err2 == nil {
		t.Fatal("second ping of a dead peer")
	}
}

// TestTimeout checks that a peer that does not answer is killed after the
// call timeout and reported with its stderr.
func TestTimeout(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not found")
	}
	script := filepath.Join(t.TempDir(), "mute.cjs")
	if err := os.WriteFile(script, []byte("process.stderr.write('mute peer here\\n'); setInterval(() => {}, 1000);\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := start(node, script, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// Wait until node runs the script: on a loaded machine its start alone
	// can take longer than the short timeout below.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(p.Stderr(), "mute peer here"); {
		if time.Now().After(deadline) {
			t.Fatal("the mute peer never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.timeout = 300 * time.Millisecond
	_, err = p.Ping()
	if err == nil || !strings.Contains(err.Error(), "no answer within") || !strings.Contains(err.Error(), "mute peer here") {
		t.Fatalf("ping of a mute peer: %v", err)
	}
	if _, err := p.Ping(); err == nil || !strings.Contains(err.Error(), "peer unusable") {
		t.Fatalf("second ping: %v", err)
	}
}

func TestAddressName(t *testing.T) {
	p, k := pair(t, 1)
	dev := Address{Name: "9d0652a3-dcc3-4d11-975f-74d61598733f", DeviceID: 3}
	if _, err := p.NewClientWith("dave", ClientOptions{AddressName: dev.Name, RegistrationID: 4444, DeviceID: 3, Trust: TrustTOFU}); err != nil {
		t.Fatal(err)
	}
	if err := p.ProcessBundle("dave", bobAddr, k.Bundle(0, 0)); err != nil {
		t.Fatal(err)
	}
	send(t, p, "dave", "bob", dev, bobAddr, "from dave", TypePreKey)
	send(t, p, "bob", "dave", bobAddr, dev, "hi dave", TypeWhisper)
	if info, _ := p.SessionInfo("bob", dev); info.RemoteRegistrationID != 4444 {
		t.Fatalf("bob's session with dave: %+v", info)
	}
}

// TestSetAddressName: a client that generated its keys under a temporary
// name and then takes its account id as its address name keeps its
// identity and keys, and the messages it sends afterwards bind the new name
// as their sender (libsignal refuses them from another address).
func TestSetAddressName(t *testing.T) {
	p := Start(t)
	erin := Address{Name: "4a0d8f53-8f3e-4b8e-9d43-1b0a2c6f7e11", DeviceID: 1}
	frank := Address{Name: "c3e4f5a6-1b2c-4d3e-8f4a-5b6c7d8e9f00", DeviceID: 1}
	other := Address{Name: "0f1e2d3c-4b5a-4968-8776-655443322110", DeviceID: 1}
	ik, err := p.NewClient("erin", 5555, 1)
	if err != nil {
		t.Fatal(err)
	}
	ke, err := p.GenerateKeys("erin", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetAddressName("erin", erin.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := p.NewClientWith("frank", ClientOptions{AddressName: frank.Name, RegistrationID: 6666, DeviceID: 1}); err != nil {
		t.Fatal(err)
	}
	kf, err := p.GenerateKeys("frank", 1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ke.IdentityKey, ik) {
		t.Fatal("generateKeys reported another identity key than newClient")
	}
	// Keys generated before the rename still open sessions.
	if err := p.ProcessBundle("frank", erin, ke.Bundle(0, 0)); err != nil {
		t.Fatal(err)
	}
	send(t, p, "frank", "erin", frank, erin, "to the renamed erin", TypePreKey)
	send(t, p, "erin", "frank", erin, frank, "erin answers", TypeWhisper)
	if id, _ := p.Identity("frank", erin); !bytes.Equal(id.IdentityKey, ik) {
		t.Fatalf("frank holds %x for erin, want %x", id.IdentityKey, ik)
	}

	// erin's first message to a new contact names her new address: taken
	// as coming from another address, libsignal refuses it.
	if err := p.ProcessBundle("erin", frank, kf.Bundle(0, 0)); err != nil {
		t.Fatal(err)
	}
	typ, body, err := p.Encrypt("erin", frank, []byte("bound to my account id"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Decrypt("frank", other, typ, body); err == nil {
		t.Fatal("frank accepted erin's message as coming from another address")
	}
	if got, err := p.Decrypt("frank", erin, typ, body); err != nil || string(got) != "bound to my account id" {
		t.Fatalf("frank's decrypt from erin: %q, %v", got, err)
	}

	if err := p.SetAddressName("erin", ""); !HasCode(err, "BadRequest") {
		t.Fatalf("empty name: %v", err)
	}
	if err := p.SetAddressName("nobody", erin.Name); !HasCode(err, "BadRequest") {
		t.Fatalf("unknown client: %v", err)
	}
}
