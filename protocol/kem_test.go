package protocol

import (
	"bytes"
	"crypto/rand"
	"testing"
)

func TestKEMKeyPairRoundTrip(t *testing.T) {
	kp, err := GenerateKEMKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	back, err := KEMKeyPairFromPrivate(kp.PrivateBytes())
	if err != nil {
		t.Fatal(err)
	}
	if !back.Public.Equal(kp.Public) {
		t.Fatal("public key not rebuilt from the private key")
	}
	ss, ct, err := back.Public.Encapsulate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	got, err := kp.Decapsulate(ct)
	if err != nil || !bytes.Equal(got, ss) {
		t.Fatalf("decapsulate: %v", err)
	}
	if _, err := KEMKeyPairFromPrivate(kp.PrivateBytes()[1:]); err == nil {
		t.Fatal("short private key accepted")
	}
}
