// Package content is the plaintext that parley clients encrypt: a
// versioned structure carrying a message's text and timestamps, receipts and
// typing indicators, with room for what later features add (attachments,
// timers, group context). Clients ignore members they do not know, so newer
// clients can add fields without breaking older ones.
//
// Encoding: one version byte, then JSON, then padding (0x80 followed by
// zeros up to a multiple of 160 bytes, as Signal pads), so that the
// ciphertext length says little about the text's length.
package content

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Version is the encoding this package writes.
const Version = 1

// Block is the padding granularity.
const Block = 160

// MaxText bounds a message's text (Signal's long-text limit is similar).
const MaxText = 64 << 10

// Receipt types.
const (
	Delivery = "delivery"
	Read     = "read"
)

// Content is one decrypted message.
type Content struct {
	// Timestamp is the sender's clock (Unix ms) when the message was
	// composed; with the sender it identifies the message in receipts.
	Timestamp int64 `json:"timestamp"`
	// SenderNumber is the sender's E.164 number, so a recipient who has
	// never looked them up can show it; receivers confirm it against the
	// relay's directory before believing it.
	SenderNumber string   `json:"sender_number,omitzero"`
	Text         string   `json:"text,omitzero"`
	Receipt      *Receipt `json:"receipt,omitzero"`
	Typing       *Typing  `json:"typing,omitzero"`
}

// Receipt acknowledges messages by their timestamps.
type Receipt struct {
	Type       string  `json:"type"` // Delivery or Read
	Timestamps []int64 `json:"timestamps"`
}

// Typing says the sender started or stopped typing.
type Typing struct {
	Started bool `json:"started"`
}

// Kind names what c carries, for display and scripts.
func (c *Content) Kind() string {
	switch {
	case c.Receipt != nil:
		return "receipt"
	case c.Typing != nil:
		return "typing"
	default:
		return "message"
	}
}

// ErrMalformed reports plaintext that is not valid content.
var ErrMalformed = errors.New("malformed message content")

// Validate checks the limits a receiver enforces.
func (c *Content) Validate() error {
	switch {
	case c.Timestamp <= 0:
		return fmt.Errorf("%w: no timestamp", ErrMalformed)
	case len(c.Text) > MaxText:
		return fmt.Errorf("%w: text longer than %d bytes", ErrMalformed, MaxText)
	case c.Receipt != nil && c.Receipt.Type != Delivery && c.Receipt.Type != Read:
		return fmt.Errorf("%w: unknown receipt type", ErrMalformed)
	case c.Receipt != nil && (len(c.Receipt.Timestamps) == 0 || len(c.Receipt.Timestamps) > 1000):
		return fmt.Errorf("%w: a receipt names 1 to 1000 messages", ErrMalformed)
	}
	return nil
}

// Marshal encodes and pads c.
func Marshal(c *Content) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	j, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	n := 1 + len(j) + 1 // version, JSON, 0x80
	padded := (n + Block - 1) / Block * Block
	out := make([]byte, 0, padded)
	out = append(out, Version)
	out = append(out, j...)
	out = append(out, 0x80)
	return out[:padded], nil
}

// Unmarshal strips the padding, checks the version and decodes.
func Unmarshal(b []byte) (*Content, error) {
	end := bytes.LastIndexByte(b, 0x80)
	if end < 1 || bytes.ContainsFunc(b[end+1:], func(r rune) bool { return r != 0 }) {
		return nil, fmt.Errorf("%w: bad padding", ErrMalformed)
	}
	if b[0] != Version {
		return nil, fmt.Errorf("%w: version %d, this client reads %d", ErrMalformed, b[0], Version)
	}
	var c Content
	if err := json.Unmarshal(b[1:end], &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}
