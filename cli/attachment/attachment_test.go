package attachment

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
)

func encrypt(t testing.TB, plain []byte) (blob, key, digest []byte) {
	t.Helper()
	e, err := Encrypt(bytes.NewReader(plain), int64(len(plain)))
	if err != nil {
		t.Fatal(err)
	}
	blob, err = io.ReadAll(e)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(blob)) != e.Size() {
		t.Fatalf("blob is %d bytes, Size says %d", len(blob), e.Size())
	}
	return blob, e.Key(), e.Digest()
}

func TestRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 15, 16, 540, 541, 542, 4095, 100_000, 1 << 20} {
		plain := make([]byte, n)
		rand.Read(plain)
		blob, key, digest := encrypt(t, plain)
		var out bytes.Buffer
		if err := Decrypt(&out, bytes.NewReader(blob), int64(n), key, digest); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(out.Bytes(), plain) {
			t.Fatalf("%d bytes: plaintext differs", n)
		}
	}
}

// TestFormat rebuilds the blob from its description with the standard
// library alone: IV || AES-256-CBC(PKCS#7(plaintext || zeros)) ||
// HMAC-SHA256(mac key, IV || ciphertext), digest SHA-256 of all of it.
func TestFormat(t *testing.T) {
	plain := []byte("the quick brown fox")
	key := bytes.Repeat([]byte{1}, 32)
	key = append(key, bytes.Repeat([]byte{2}, 32)...)
	iv := bytes.Repeat([]byte{3}, 16)
	e, err := NewEncrypter(bytes.NewReader(plain), int64(len(plain)), key, iv)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(e)

	padded := append(plain, make([]byte, 541-len(plain))...) // 541 is the smallest bucket
	pad := 16 - len(padded)%16
	padded = append(padded, bytes.Repeat([]byte{byte(pad)}, pad)...)
	block, _ := aes.NewCipher(key[:32])
	ct := make([]byte, len(padded))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, padded)
	m := hmac.New(sha256.New, key[32:])
	m.Write(iv)
	m.Write(ct)
	want := append(append(append([]byte{}, iv...), ct...), m.Sum(nil)...)
	if !bytes.Equal(got, want) {
		t.Fatal("blob does not match Signal's attachment format")
	}
	if d := sha256.Sum256(want); !bytes.Equal(e.Digest(), d[:]) {
		t.Fatal("digest is not SHA-256 of the blob")
	}
}

func TestPaddedSize(t *testing.T) {
	// Expected values computed with Python from the formula in Signal-Android's
	// PaddingInputStream.getPaddedSize.
	for n, want := range map[int64]int64{1: 541, 541: 541, 542: 568, 1000: 1020, 1 << 20: 1093831, 20 << 20: 21453466} {
		if got := PaddedSize(n); got != want {
			t.Errorf("PaddedSize(%d) = %d, want %d", n, got, want)
		}
	}
	for n := int64(1); n < 1<<22; n = n*3/2 + 1 {
		if p := PaddedSize(n); p < n || p > n*106/100+541 {
			t.Fatalf("PaddedSize(%d) = %d", n, p)
		}
	}
}

func TestRefusesAlteredBlobs(t *testing.T) {
	plain := make([]byte, 5000)
	rand.Read(plain)
	blob, key, digest := encrypt(t, plain)
	flip := func(i int) []byte {
		b := bytes.Clone(blob)
		b[i] ^= 1
		return b
	}
	otherKey := bytes.Clone(key)
	otherKey[40] ^= 1
	otherDigest := bytes.Clone(digest)
	otherDigest[0] ^= 1
	cases := map[string]struct {
		blob, key, digest []byte
		size              int64
	}{
		"IV":            {flip(0), key, digest, 5000},
		"ciphertext":    {flip(100), key, digest, 5000},
		"last block":    {flip(len(blob) - 33), key, digest, 5000},
		"MAC":           {flip(len(blob) - 1), key, digest, 5000},
		"truncated":     {blob[:len(blob)-16], key, digest, 5000},
		"extended":      {append(bytes.Clone(blob), make([]byte, 16)...), key, digest, 5000},
		"wrong MAC key": {blob, otherKey, digest, 5000},
		"wrong digest":  {blob, key, otherDigest, 5000},
		"claims larger": {blob, key, digest, 6000},
		"short key":     {blob, key[:32], digest, 5000},
		"negative size": {blob, key, digest, -1},
		"empty":         {nil, key, digest, 5000},
	}
	for name, c := range cases {
		var out bytes.Buffer
		err := Decrypt(&out, bytes.NewReader(c.blob), c.size, c.key, c.digest)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
		if out.Len() != 0 {
			t.Errorf("%s: %d plaintext bytes written before verification", name, out.Len())
		}
	}
}

func TestShrinkingFile(t *testing.T) {
	e, _ := Encrypt(bytes.NewReader(make([]byte, 10)), 100)
	if _, err := io.ReadAll(e); err == nil {
		t.Fatal("a file shorter than its size encrypted without error")
	}
}

// FuzzDecrypt: arbitrary blobs, sizes and digests never panic and never
// yield plaintext unless they verify.
func FuzzDecrypt(f *testing.F) {
	blob, key, digest := encrypt(f, []byte("seed"))
	f.Add(blob, int64(4), digest)
	f.Add([]byte{}, int64(0), make([]byte, 32))
	f.Fuzz(func(t *testing.T, b []byte, size int64, d []byte) {
		var out bytes.Buffer
		err := Decrypt(&out, bytes.NewReader(b), size, key, d)
		if err == nil && (!bytes.Equal(b, blob) || size != 4) {
			t.Fatalf("an altered blob verified (size %d)", size)
		}
		if err != nil && out.Len() != 0 {
			t.Fatal("plaintext written for a blob that failed")
		}
	})
}

func BenchmarkEncrypt(b *testing.B) {
	plain := make([]byte, 20<<20)
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		e, _ := Encrypt(bytes.NewReader(plain), int64(len(plain)))
		io.Copy(io.Discard, e)
	}
}

func BenchmarkDecrypt(b *testing.B) {
	plain := make([]byte, 20<<20)
	blob, key, digest := encrypt(b, plain)
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		if err := Decrypt(io.Discard, bytes.NewReader(blob), int64(len(plain)), key, digest); err != nil {
			b.Fatal(err)
		}
	}
}
