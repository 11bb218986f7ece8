package protocol

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"fmt"
)

// cbcEncrypt is AES-256-CBC with PKCS#7 padding, the cipher of Signal
// messages and sender-key messages.
func cbcEncrypt(key, iv, plaintext []byte) []byte {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("protocol: AES key of " + fmt.Sprint(len(key)) + " bytes")
	}
	pad := aes.BlockSize - len(plaintext)%aes.BlockSize
	buf := make([]byte, len(plaintext)+pad)
	copy(buf, plaintext)
	for i := len(plaintext); i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(buf, buf)
	return buf
}

// cbcDecrypt reverses cbcEncrypt; bad lengths or padding are
// ErrInvalidMessage. The padding check does not branch on its bytes (the
// MAC or signature has already been checked, so this is belt and braces).
func cbcDecrypt(key, iv, ciphertext []byte) ([]byte, error) {
	if len(ciphertext) == 0 || len(ciphertext)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: ciphertext of %d bytes is not whole AES blocks", ErrInvalidMessage, len(ciphertext))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidState, err)
	}
	buf := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(buf, ciphertext)
	pad := int(buf[len(buf)-1])
	good := subtle.ConstantTimeLessOrEq(1, pad) & subtle.ConstantTimeLessOrEq(pad, aes.BlockSize)
	for i := 1; i <= aes.BlockSize; i++ {
		inPad := subtle.ConstantTimeLessOrEq(i, pad)
		match := subtle.ConstantTimeByteEq(buf[len(buf)-i], byte(pad))
		good &= subtle.ConstantTimeSelect(inPad, match, 1)
	}
	if good != 1 {
		return nil, fmt.Errorf("%w: bad padding", ErrInvalidMessage)
	}
	return buf[:len(buf)-pad], nil
}
