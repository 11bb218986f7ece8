// Package attachment encrypts files the way Signal encrypts attachments, so
// the relay and its object store see only ciphertext of a padded length.
//
// A file is padded with zeros to Signal's size buckets (at least 541 bytes,
// then steps of 5%), encrypted with AES-256-CBC (PKCS#7) under a random
// 64-byte key (32 bytes AES, 32 bytes HMAC) and a random IV, and stored as
// IV || ciphertext || HMAC-SHA256(IV || ciphertext). The key, the SHA-256
// digest of that whole blob and the real size travel inside the end-to-end
// encrypted message; the receiver checks MAC and digest over the whole blob
// before it decrypts a byte.
package attachment

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
)

// KeySize is the length of an attachment key: AES-256 key then HMAC key.
const KeySize = 64

// DigestSize is the length of an encrypted blob's SHA-256 digest.
const DigestSize = sha256.Size

const (
	ivSize  = aes.BlockSize
	macSize = sha256.Size
	// MaxSize bounds the plaintext this package handles (1 TiB): beyond
	// it the size arithmetic is no longer worth trusting.
	MaxSize = 1 << 40
)

// ErrCorrupt reports a blob whose MAC, digest, length or padding is wrong:
// it was altered, truncated or is not the file the message points to.
var ErrCorrupt = errors.New("attachment failed verification")

// PaddedSize is the size a plaintext of n bytes is padded to before
// encryption: Signal's buckets, max(541, floor(1.05^ceil(log₁.₀₅ n))).
func PaddedSize(n int64) int64 {
	if n <= 0 {
		return 541
	}
	p := int64(math.Floor(math.Pow(1.05, math.Ceil(math.Log(float64(n))/math.Log(1.05)))))
	return max(541, p, n) // floating point never rounds below n
}

// EncryptedSize is the length of the blob for a plaintext of n bytes.
func EncryptedSize(n int64) int64 {
	p := PaddedSize(n)
	return ivSize + (p/aes.BlockSize+1)*aes.BlockSize + macSize
}

// Encrypter is a reader producing the encrypted blob of a plaintext, so a
// file can be encrypted while it uploads without a temporary copy.
type Encrypter struct {
	key    []byte
	src    io.Reader // plaintext, zero padding, PKCS#7 padding
	cbc    cipher.BlockMode
	mac    hash.Hash
	digest hash.Hash
	out    []byte // encrypted bytes not yet read
	chunk  []byte
	state  int // 0 IV pending, 1 body, 2 done
	size   int64
}

// Encrypt returns an Encrypter for size bytes of plain under a new random
// key and IV. plain must yield at least size bytes; only size are used.
func Encrypt(plain io.Reader, size int64) (*Encrypter, error) {
	key := make([]byte, KeySize)
	iv := make([]byte, ivSize)
	rand.Read(key)
	rand.Read(iv)
	return NewEncrypter(plain, size, key, iv)
}

// NewEncrypter is Encrypt with a given key and IV (for tests and vectors).
func NewEncrypter(plain io.Reader, size int64, key, iv []byte) (*Encrypter, error) {
	if len(key) != KeySize || len(iv) != ivSize {
		return nil, fmt.Errorf("attachment: key must be %d bytes and IV %d", KeySize, ivSize)
	}
	if size < 0 || size > MaxSize {
		return nil, fmt.Errorf("attachment: size %d out of range", size)
	}
	block, err := aes.NewCipher(key[:32])
	if err != nil {
		return nil, err
	}
	padded := PaddedSize(size)
	pad := aes.BlockSize - int(padded%aes.BlockSize)
	pkcs7 := make([]byte, pad)
	for i := range pkcs7 {
		pkcs7[i] = byte(pad)
	}
	e := &Encrypter{
		key: key,
		src: io.MultiReader(&exactReader{r: plain, n: size}, io.LimitReader(zeros{}, padded-size),
			bytes.NewReader(pkcs7)),
		cbc:    cipher.NewCBCEncrypter(block, iv),
		mac:    hmac.New(sha256.New, key[32:]),
		digest: sha256.New(),
		chunk:  make([]byte, 64<<10),
		size:   EncryptedSize(size),
	}
	e.emit(iv)
	return e, nil
}

// Key is the attachment key (to send inside the message).
func (e *Encrypter) Key() []byte { return e.key }

// Size is the length of the blob Read produces.
func (e *Encrypter) Size() int64 { return e.size }

// Digest is the SHA-256 of the whole blob; valid once Read returned EOF.
func (e *Encrypter) Digest() []byte {
	if e.state != 2 {
		return nil
	}
	return e.digest.Sum(nil)
}

func (e *Encrypter) emit(b []byte) {
	if e.state == 0 || e.state == 1 {
		e.mac.Write(b)
	}
	e.digest.Write(b)
	e.out = append(e.out, b...)
}

// Read implements io.Reader.
func (e *Encrypter) Read(p []byte) (int, error) {
	for len(e.out) == 0 {
		if e.state == 2 {
			return 0, io.EOF
		}
		e.state = 1
		n, err := io.ReadFull(e.src, e.chunk)
		end := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
		if err != nil && !end {
			return 0, err
		}
		if n%aes.BlockSize != 0 {
			return 0, errors.New("attachment: internal padding error")
		}
		if n > 0 {
			e.cbc.CryptBlocks(e.chunk[:n], e.chunk[:n])
			e.emit(e.chunk[:n])
		}
		if end {
			tag := e.mac.Sum(nil)
			e.state = 2
			e.emit(tag)
		}
	}
	n := copy(p, e.out)
	e.out = e.out[n:]
	return n, nil
}

// Decrypt verifies the blob in src against key and digest and writes the
// size-byte plaintext to dst. Nothing is written unless the whole blob
// verifies first (src is read twice).
func Decrypt(dst io.Writer, src io.ReadSeeker, size int64, key, digest []byte) error {
	if len(key) != KeySize || len(digest) != DigestSize || size < 0 || size > MaxSize {
		return fmt.Errorf("%w: malformed key, digest or size", ErrCorrupt)
	}
	total, err := src.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if total != EncryptedSize(size) {
		return fmt.Errorf("%w: %d bytes, want %d for a %d-byte file", ErrCorrupt, total, EncryptedSize(size), size)
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return err
	}
	mac := hmac.New(sha256.New, key[32:])
	sum := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(mac, sum), src, total-macSize); err != nil {
		return fmt.Errorf("read attachment: %w", err)
	}
	tag := make([]byte, macSize)
	if _, err := io.ReadFull(src, tag); err != nil {
		return fmt.Errorf("read attachment: %w", err)
	}
	sum.Write(tag)
	macOK := hmac.Equal(tag, mac.Sum(nil))
	digestOK := hmac.Equal(digest, sum.Sum(nil))
	if !macOK || !digestOK {
		return fmt.Errorf("%w: MAC or digest mismatch", ErrCorrupt)
	}

	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return err
	}
	iv := make([]byte, ivSize)
	if _, err := io.ReadFull(src, iv); err != nil {
		return err
	}
	block, err := aes.NewCipher(key[:32])
	if err != nil {
		return err
	}
	cbc := cipher.NewCBCDecrypter(block, iv)
	body := io.LimitReader(src, total-ivSize-macSize)
	chunk := make([]byte, 64<<10)
	left := size // plaintext still to write
	for {
		n, err := io.ReadFull(body, chunk)
		if n > 0 {
			cbc.CryptBlocks(chunk[:n], chunk[:n])
			w := min(int64(n), left)
			if _, werr := dst.Write(chunk[:w]); werr != nil {
				return werr
			}
			left -= w
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if left != 0 {
		return fmt.Errorf("%w: shorter than its size", ErrCorrupt)
	}
	return nil
}

// exactReader yields exactly n bytes of r, failing if r ends sooner (the
// file shrank while it was being sent).
type exactReader struct {
	r io.Reader
	n int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.n {
		p = p[:e.n]
	}
	n, err := e.r.Read(p)
	e.n -= int64(n)
	if errors.Is(err, io.EOF) && e.n > 0 {
		return n, fmt.Errorf("attachment: the file ended %d bytes early (did it change?)", e.n)
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return n, err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
