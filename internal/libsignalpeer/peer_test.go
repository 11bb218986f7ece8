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

// ---- sealed sender

const (
	ssAlice = "0c8ad4c4-4e6a-4c8e-9a36-2b6f4f0e7a11"
	ssBob   = "5b2f7e3d-1c9a-4f6b-8e2d-7a4c3b1e9f22"
	ssCarol = "a9e1d2c3-b4f5-4a6b-9c8d-e7f6a5b4c333"
	ssDave  = "d4c3b2a1-9f8e-4d7c-8b6a-5f4e3d2c1b44"

	ssExpiration = uint64(1_900_000_000_000) // ms, in 2030
	ssNow        = ssExpiration - 86_400_000
)

// sealedCerts makes a trust root, a server certificate (id 7) signed by it,
// and a sender certificate for uuid.device with identityKey expiring at
// ssExpiration; it returns the trust root's public key and the sender
// certificate.
func sealedCerts(t *testing.T, p *Peer, uuid string, device uint32, e164 string, identityKey []byte) (trustRoot, cert []byte) {
	t.Helper()
	root, err := p.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	server, err := p.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := p.NewServerCertificate(7, server.PublicKey, root.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err = p.NewSenderCertificate(SenderCertificateInput{
		SenderUUID: uuid, SenderE164: e164, SenderDeviceID: device, SenderKey: identityKey,
		Expiration: ssExpiration, ServerCertificate: sc, ServerPrivate: server.PrivateKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	return root.PublicKey, cert
}

// sealedClient makes client name with address name uuid and generated keys.
func sealedClient(t *testing.T, p *Peer, name, uuid string, registrationID, deviceID uint32) *KeyMaterial {
	t.Helper()
	if _, err := p.NewClientWith(name, ClientOptions{AddressName: uuid, RegistrationID: registrationID, DeviceID: deviceID}); err != nil {
		t.Fatal(err)
	}
	k, err := p.GenerateKeys(name, 1)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSenderCertificate(t *testing.T) {
	p := Start(t)
	root, err := p.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	if len(root.PublicKey) != 33 || root.PublicKey[0] != 0x05 || len(root.PrivateKey) != 32 {
		t.Fatalf("key pair: %d-byte public key starting %x, %d-byte private key", len(root.PublicKey), root.PublicKey[:1], len(root.PrivateKey))
	}
	server, _ := p.NewKeyPair()
	other, _ := p.NewKeyPair()
	sender, _ := p.NewKeyPair()
	sc, err := p.NewServerCertificate(0x1234, server.PublicKey, root.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	in := SenderCertificateInput{
		SenderUUID: ssAlice, SenderE164: "+14155550101", SenderDeviceID: 3, SenderKey: sender.PublicKey,
		Expiration: ssExpiration, ServerCertificate: sc, ServerPrivate: server.PrivateKey,
	}
	cert, err := p.NewSenderCertificate(in)
	if err != nil {
		t.Fatal(err)
	}
	info, err := p.ValidateSenderCertificate(cert, root.PublicKey, ssNow)
	if err != nil {
		t.Fatal(err)
	}
	want := SenderCertificateInfo{
		Valid: true, SenderUUID: ssAlice, SenderE164: "+14155550101", SenderDeviceID: 3, Expiration: ssExpiration,
		Key: sender.PublicKey, ServerKeyID: 0x1234, ServerKey: server.PublicKey,
	}
	if fmt.Sprint(info) != fmt.Sprint(want) {
		t.Fatalf("certificate info %+v, want %+v", info, want)
	}
	for _, c := range []struct {
		name  string
		root  []byte
		time  uint64
		valid bool
	}{
		{"at expiration", root.PublicKey, ssExpiration, true},
		{"after expiration", root.PublicKey, ssExpiration + 1, false},
		{"another trust root", other.PublicKey, ssNow, false},
	} {
		info, err := p.ValidateSenderCertificate(cert, c.root, c.time)
		if err != nil || info.Valid != c.valid {
			t.Errorf("%s: valid %v, %v; want %v", c.name, info.Valid, err, c.valid)
		}
	}
	// A server certificate signed by another root does not validate.
	sc2, _ := p.NewServerCertificate(1, server.PublicKey, other.PrivateKey)
	in.ServerCertificate, in.SenderE164 = sc2, ""
	cert2, err := p.NewSenderCertificate(in)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := p.ValidateSenderCertificate(cert2, root.PublicKey, ssNow); err != nil || info.Valid || info.SenderE164 != "" {
		t.Fatalf("certificate of a foreign server: %+v, %v", info, err)
	}
	if info, _ := p.ValidateSenderCertificate(cert2, other.PublicKey, ssNow); !info.Valid {
		t.Fatalf("certificate against its own root: %+v", info)
	}
	// A certificate signed with another key than the server certificate's does not validate.
	in.ServerCertificate, in.ServerPrivate = sc, other.PrivateKey
	cert3, _ := p.NewSenderCertificate(in)
	if info, err := p.ValidateSenderCertificate(cert3, root.PublicKey, ssNow); err != nil || info.Valid {
		t.Fatalf("certificate signed with the wrong key: %+v, %v", info, err)
	}
	if _, err := p.ValidateSenderCertificate([]byte{1, 2, 3}, root.PublicKey, ssNow); err == nil {
		t.Fatal("garbage certificate parsed")
	} else {
		t.Logf("garbage certificate: %v", err)
	}
}

func TestSealedSender(t *testing.T) {
	p := Start(t)
	alice := Address{Name: ssAlice, DeviceID: 1}
	bob := Address{Name: ssBob, DeviceID: 1}
	ka := sealedClient(t, p, "alice", ssAlice, 1111, 1)
	kb := sealedClient(t, p, "bob", ssBob, 2222, 1)
	if err := p.ProcessBundle("alice", bob, kb.Bundle(0, 0)); err != nil {
		t.Fatal(err)
	}
	root, cert := sealedCerts(t, p, ssAlice, 1, "+14155550101", ka.IdentityKey)
	in := SealedDecryptInput{TrustRoot: root, Timestamp: ssNow, LocalUUID: ssBob, LocalDeviceID: 1}

	body, err := p.SealedEncrypt("alice", bob, cert, []byte("sealed hello"))
	if err != nil {
		t.Fatal(err)
	}
	in.Body = body
	got, err := p.SealedDecrypt("bob", in)
	if err != nil {
		t.Fatal(err)
	}
	if got.SenderUUID != ssAlice || got.SenderE164 != "+14155550101" || got.DeviceID != 1 || string(got.Plaintext) != "sealed hello" {
		t.Fatalf("bob unsealed %+v", got)
	}
	if _, err := p.SealedDecrypt("bob", in); !HasCode(err, "DuplicatedMessage") {
		t.Fatalf("replayed sealed message: %v", err)
	}

	// Unsealed only: until bob answers, alice's messages are PreKey messages.
	body, err = p.SealedEncrypt("alice", bob, cert, []byte("second"))
	if err != nil {
		t.Fatal(err)
	}
	u, err := p.SealedDecryptToUSMC("bob", body)
	if err != nil {
		t.Fatal(err)
	}
	if u.Type != TypePreKey || !bytes.Equal(u.SenderCertificate, cert) || u.ContentHint != ContentHintDefault || u.GroupID != nil {
		t.Fatalf("usmc %+v", u)
	}
	if pt, err := p.Decrypt("bob", alice, u.Type, u.Contents); err != nil || string(pt) != "second" {
		t.Fatalf("bob's decrypt of the unsealed contents: %q, %v", pt, err)
	}

	// Expired certificate, foreign trust root, message for someone else.
	body, _ = p.SealedEncrypt("alice", bob, cert, []byte("third"))
	for _, c := range []struct {
		name string
		mod  func(*SealedDecryptInput)
	}{
		{"expired certificate", func(in *SealedDecryptInput) { in.Timestamp = ssExpiration + 1 }},
		{"foreign trust root", func(in *SealedDecryptInput) { in.TrustRoot = kb.IdentityKey }},
		{"garbage", func(in *SealedDecryptInput) { in.Body = []byte{0x11, 1, 2, 3} }},
	} {
		in2 := in
		in2.Body = body
		c.mod(&in2)
		_, err := p.SealedDecrypt("bob", in2)
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("%s: %v, want an *Error", c.name, err)
		}
		t.Logf("%s: %v (code %d)", c.name, e, e.Code)
	}
	if _, err := p.SealedDecryptToUSMC("alice", body); err == nil {
		t.Fatal("alice unsealed a message sealed for bob")
	}
	in.Body = body
	if got, err := p.SealedDecrypt("bob", in); err != nil || string(got.Plaintext) != "third" {
		t.Fatalf("third: %+v, %v", got, err)
	}

	// A message encrypted beforehand, sealed with a content hint and a group id.
	send(t, p, "bob", "alice", bob, alice, "hi alice", TypeWhisper)
	typ, whisper, err := p.Encrypt("alice", bob, []byte("pre-encrypted"))
	if err != nil || typ != TypeWhisper {
		t.Fatalf("encrypt: %d, %v", typ, err)
	}
	want := USMC{Type: TypeWhisper, Contents: whisper, SenderCertificate: cert, ContentHint: ContentHintResendable, GroupID: []byte("group id")}
	body, err = p.SealedEncryptUSMC("alice", bob, want)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := p.SealedDecryptToUSMC("bob", body); err != nil || fmt.Sprint(u) != fmt.Sprint(want) {
		t.Fatalf("usmc %+v, %v; want %+v", u, err, want)
	}
	in.Body = body
	if got, err := p.SealedDecrypt("bob", in); err != nil || string(got.Plaintext) != "pre-encrypted" {
		t.Fatalf("pre-encrypted: %+v, %v", got, err)
	}
	_, whisper, _ = p.Encrypt("alice", bob, []byte("plain usmc"))
	body, _ = p.SealedEncryptUSMC("alice", bob, USMC{Type: TypeWhisper, Contents: whisper, SenderCertificate: cert})
	in.Body = body
	if got, err := p.SealedDecrypt("bob", in); err != nil || string(got.Plaintext) != "plain usmc" {
		t.Fatalf("plain usmc: %+v, %v", got, err)
	}
	// PlaintextContent (0xC0, a Content protobuf, 0x80 padding) is sealed
	// through libsignal's own UnidentifiedSenderMessageContent.new too, and
	// the peer checks its encoding of the content against it.
	plain := []byte{0xc0, 0x0a, 0x02, 'h', 'i', 0x80}
	for _, w := range []USMC{
		{Type: TypePlaintext, Contents: plain, SenderCertificate: cert},
		{Type: TypePlaintext, Contents: plain, SenderCertificate: cert, ContentHint: ContentHintImplicit, GroupID: []byte{9, 8, 7}},
	} {
		body, err := p.SealedEncryptUSMC("alice", bob, w)
		if err != nil {
			t.Fatal(err)
		}
		if u, err := p.SealedDecryptToUSMC("bob", body); err != nil || fmt.Sprint(u) != fmt.Sprint(w) {
			t.Fatalf("plaintext usmc %+v, %v; want %+v", u, err, w)
		}
	}
	if _, err := p.SealedEncryptUSMC("alice", bob, USMC{Type: TypeSenderKey, Contents: []byte{1, 2, 3}, SenderCertificate: cert}); err == nil {
		t.Fatal("sealed garbage as a SenderKeyMessage")
	}
	if _, err := p.SealedEncryptUSMC("alice", bob, USMC{Type: 5, Contents: whisper, SenderCertificate: cert}); !HasCode(err, "BadRequest") {
		t.Fatalf("type 5: %v", err)
	}
	// Without a session there is nothing to seal.
	if _, err := p.SealedEncrypt("alice", Address{Name: ssCarol, DeviceID: 1}, cert, []byte("x")); err == nil {
		t.Fatal("sealed encrypt without a session")
	}
}

func TestSealedSenderMultiRecipient(t *testing.T) {
	p := Start(t)
	alice := Address{Name: ssAlice, DeviceID: 1}
	bob1 := Address{Name: ssBob, DeviceID: 1}
	bob2 := Address{Name: ssBob, DeviceID: 2}
	carol := Address{Name: ssCarol, DeviceID: 2}
	ka := sealedClient(t, p, "alice", ssAlice, 1111, 1)
	recipients := []struct {
		client string
		addr   Address
		reg    uint32
	}{{"bob", bob1, 2222}, {"bob2", bob2, 2223}, {"carol", carol, 3333}}
	for _, r := range recipients {
		k := sealedClient(t, p, r.client, r.addr.Name, r.reg, r.addr.DeviceID)
		if err := p.ProcessBundle("alice", r.addr, k.Bundle(0, 0)); err != nil {
			t.Fatal(err)
		}
	}
	_, cert := sealedCerts(t, p, ssAlice, 1, "", ka.IdentityKey)
	const dist = "6f1c2b3a-4d5e-4f60-8172-839495a6b7c8"
	skdm, err := p.CreateDistribution("alice", alice, dist)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recipients {
		if err := p.ProcessDistribution(r.client, alice, skdm); err != nil {
			t.Fatal(err)
		}
	}
	groupID := []byte("a group id of 32 bytes.........!")
	sent, err := p.MultiRecipientEncrypt("alice", MultiRecipientInput{
		Recipients: []Address{bob1, carol, bob2}, Excluded: []string{ssDave},
		SenderCertificate: cert, DistributionID: dist, Plaintext: []byte("to the group"),
		ContentHint: ContentHintResendable, GroupID: groupID,
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := p.MultiRecipientParse(sent)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Excluded, []string{ssDave}) || len(m.Recipients) != 2 {
		t.Fatalf("parsed: %d recipients, excluded %v", len(m.Recipients), m.Excluded)
	}
	byID := map[string]MultiRecipient{}
	for _, r := range m.Recipients {
		byID[r.ServiceID] = r
	}
	wantDevices := map[string][]RecipientDevice{
		ssBob:   {{1, 2222}, {2, 2223}},
		ssCarol: {{2, 3333}},
	}
	for id, want := range wantDevices {
		r, ok := byID[id]
		if !ok {
			t.Fatalf("recipient %s missing from %+v", id, m.Recipients)
		}
		got := slices.Clone(r.Devices)
		slices.SortFunc(got, func(a, b RecipientDevice) int { return int(a.DeviceID) - int(b.DeviceID) })
		if !slices.Equal(got, want) {
			t.Fatalf("%s: devices %v, want %v", id, r.Devices, want)
		}
	}
	for _, r := range recipients {
		if r.client == "bob2" {
			// All of a recipient's devices get one message, sealed to the
			// identity key alice holds for it (bob's device 1's). Real linked
			// devices share that key; the peer's bob2 has one of its own.
			continue
		}
		msg := byID[r.addr.Name].Message
		u, err := p.SealedDecryptToUSMC(r.client, msg)
		if err != nil {
			t.Fatalf("%s: %v", r.client, err)
		}
		if u.Type != TypeSenderKey || !bytes.Equal(u.SenderCertificate, cert) || u.ContentHint != ContentHintResendable ||
			!bytes.Equal(u.GroupID, groupID) {
			t.Fatalf("%s: usmc %+v", r.client, u)
		}
		if pt, err := p.GroupDecrypt(r.client, alice, u.Contents); err != nil || string(pt) != "to the group" {
			t.Fatalf("%s: group decrypt %q, %v", r.client, pt, err)
		}
	}
	// A received message is for its recipient only.
	if _, err := p.SealedDecryptToUSMC("carol", byID[ssBob].Message); err == nil {
		t.Fatal("carol unsealed bob's message")
	}

	// One recipient: the received message is the one the single-recipient
	// helper derives, and readable.
	sent, err = p.MultiRecipientEncrypt("alice", MultiRecipientInput{
		Recipients: []Address{carol}, SenderCertificate: cert, DistributionID: dist, Plaintext: []byte("just carol"),
	})
	if err != nil {
		t.Fatal(err)
	}
	single, err := p.MultiRecipientForSingle(sent)
	if err != nil {
		t.Fatal(err)
	}
	m, err = p.MultiRecipientParse(sent)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Recipients) != 1 || len(m.Excluded) != 0 || !bytes.Equal(m.Recipients[0].Message, single) {
		t.Fatalf("single recipient: %+v vs %x", m, single)
	}
	u, err := p.SealedDecryptToUSMC("carol", single)
	if err != nil || u.Type != TypeSenderKey || u.ContentHint != ContentHintDefault || u.GroupID != nil {
		t.Fatalf("carol's usmc %+v, %v", u, err)
	}
	if pt, err := p.GroupDecrypt("carol", alice, u.Contents); err != nil || string(pt) != "just carol" {
		t.Fatalf("carol: %q, %v", pt, err)
	}

	// A group message sealed one-to-one.
	gm, err := p.GroupEncrypt("alice", alice, dist, []byte("sealed v1 group message"))
	if err != nil {
		t.Fatal(err)
	}
	body, err := p.SealedEncryptUSMC("alice", bob2, USMC{Type: TypeSenderKey, Contents: gm, SenderCertificate: cert, GroupID: groupID})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := p.SealedDecryptToUSMC("bob2", body); err != nil || u.Type != TypeSenderKey || !bytes.Equal(u.Contents, gm) {
		t.Fatalf("bob2's usmc %+v, %v", u, err)
	}
	if pt, err := p.GroupDecrypt("bob2", alice, gm); err != nil || string(pt) != "sealed v1 group message" {
		t.Fatalf("bob2: %q, %v", pt, err)
	}

	// Recipients need sessions and service id names.
	_, err = p.MultiRecipientEncrypt("alice", MultiRecipientInput{
		Recipients: []Address{{Name: ssDave, DeviceID: 1}}, SenderCertificate: cert, DistributionID: dist, Plaintext: []byte("x"),
	})
	if err == nil {
		t.Fatal("multi-recipient encrypt without a session")
	}
	if _, err := p.MultiRecipientParse([]byte{0x23, 1, 2}); err == nil {
		t.Fatal("garbage sent message parsed")
	}
}
