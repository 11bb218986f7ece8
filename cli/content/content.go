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
	SenderNumber string `json:"sender_number,omitzero"`
	// ProfileKey is the sender's profile key (32 bytes), shared with
	// everyone it writes to, as Signal shares it with contacts: the
	// unidentified-access key that admits sealed-sender messages to it
	// derives from it.
	ProfileKey []byte   `json:"profile_key,omitzero"`
	Text       string   `json:"text,omitzero"`
	Receipt    *Receipt `json:"receipt,omitzero"`
	Typing     *Typing  `json:"typing,omitzero"`
	// Attachments point to encrypted files in a chat bucket on the relay.
	Attachments []Attachment `json:"attachments,omitzero"`
	// Bucket shares the conversation's attachment bucket; sent with every
	// message that has attachments, so a receiver can always open them.
	Bucket *BucketGrant `json:"bucket,omitzero"`
	// ExpireTimer is the conversation's disappearing-message timer in
	// seconds as the sender knows it (0: off); every message carries it so
	// both sides agree.
	ExpireTimer int64 `json:"expire_timer,omitzero"`
	// TimerUpdate marks a message that only announces a new ExpireTimer.
	TimerUpdate bool `json:"timer_update,omitzero"`
	// SyncSent copies a message this account sent to its other devices.
	SyncSent *SyncSent `json:"sync_sent,omitzero"`
	// GroupID marks a message to a group (inside its sender-key ciphertext).
	GroupID string `json:"group_id,omitzero"`
	// GroupUpdate carries a group's new state to every member, old and
	// new (over the pairwise sessions).
	GroupUpdate *GroupState `json:"group_update,omitzero"`
	// SenderKey hands a member the sender's key for a group (pairwise).
	SenderKey *SenderKeyDistribution `json:"sender_key,omitzero"`
}

// MaxGroupMembers bounds a group (the relay's multi-recipient limit).
const MaxGroupMembers = 1000

// MaxReceiptTimestamps bounds the messages one receipt names.
const MaxReceiptTimestamps = 1000

// GroupState is a group as its members agree on it; a higher Revision
// replaces a lower one.
type GroupState struct {
	ID       string        `json:"id"`
	Name     string        `json:"name,omitzero"`
	Revision int64         `json:"revision"`
	Members  []GroupMember `json:"members"`
}

// GroupMember is one member account.
type GroupMember struct {
	Account string `json:"account"`
	Number  string `json:"number,omitzero"`
}

// SenderKeyDistribution is a serialised libsignal sender-key distribution
// message for a group.
type SenderKeyDistribution struct {
	GroupID string `json:"group_id"`
	Message []byte `json:"message"`
}

// SyncSent is a message one of our devices sent, for our other devices'
// history.
type SyncSent struct {
	// Destination is the recipient's account id.
	Destination string `json:"destination"`
	// DestinationNumber is the recipient's number, if known.
	DestinationNumber string   `json:"destination_number,omitzero"`
	Message           *Content `json:"message"`
}

// MaxExpireTimer is the longest disappearing-message timer (one year).
const MaxExpireTimer = 365 * 24 * 3600

// MaxAttachments bounds the files one message carries.
const MaxAttachments = 32

// Attachment is everything a receiver needs to fetch and check one file:
// where it is, the key that decrypts it and the digest that proves it is
// the file the sender meant.
type Attachment struct {
	Bucket      string `json:"bucket"`
	ObjectKey   string `json:"object_key"`
	Key         []byte `json:"key"`    // 64 bytes: AES-256 key, HMAC-SHA256 key
	Digest      []byte `json:"digest"` // SHA-256 of the encrypted blob
	Size        int64  `json:"size"`   // plaintext bytes
	ContentType string `json:"content_type,omitzero"`
	FileName    string `json:"file_name,omitzero"`
}

// BucketGrant is a chat bucket and the secrets that open it.
type BucketGrant struct {
	ID           string `json:"id"`
	MemberSecret []byte `json:"member_secret"`
	AdminSecret  []byte `json:"admin_secret,omitzero"`
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
	case c.TimerUpdate:
		return "timer"
	case c.SyncSent != nil:
		return "sent"
	case c.GroupUpdate != nil:
		return "group_update"
	case c.SenderKey != nil:
		return "sender_key"
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
	case c.ProfileKey != nil && len(c.ProfileKey) != 32:
		return fmt.Errorf("%w: a profile key is 32 bytes", ErrMalformed)
	case len(c.Text) > MaxText:
		return fmt.Errorf("%w: text longer than %d bytes", ErrMalformed, MaxText)
	case c.Receipt != nil && c.Receipt.Type != Delivery && c.Receipt.Type != Read:
		return fmt.Errorf("%w: unknown receipt type", ErrMalformed)
	case c.Receipt != nil && (len(c.Receipt.Timestamps) == 0 || len(c.Receipt.Timestamps) > MaxReceiptTimestamps):
		return fmt.Errorf("%w: a receipt names 1 to %d messages", ErrMalformed, MaxReceiptTimestamps)
	case c.SyncSent != nil && (c.SyncSent.Message == nil || c.SyncSent.Message.SyncSent != nil || c.SyncSent.Destination == "" ||
		len(c.SyncSent.Destination) > 64 || len(c.SyncSent.DestinationNumber) > 16):
		return fmt.Errorf("%w: malformed sent-message copy", ErrMalformed)
	case c.GroupID != "" && !validID(c.GroupID):
		return fmt.Errorf("%w: malformed group id", ErrMalformed)
	case c.SenderKey != nil && (!validID(c.SenderKey.GroupID) || len(c.SenderKey.Message) == 0 || len(c.SenderKey.Message) > 1024):
		return fmt.Errorf("%w: malformed sender key", ErrMalformed)
	case c.GroupUpdate != nil && !validGroup(c.GroupUpdate):
		return fmt.Errorf("%w: malformed group update", ErrMalformed)
	case c.ExpireTimer < 0 || c.ExpireTimer > MaxExpireTimer:
		return fmt.Errorf("%w: timer out of range", ErrMalformed)
	case len(c.Attachments) > MaxAttachments:
		return fmt.Errorf("%w: more than %d attachments", ErrMalformed, MaxAttachments)
	case c.Bucket != nil && (!validID(c.Bucket.ID) || len(c.Bucket.MemberSecret) != 32 ||
		(c.Bucket.AdminSecret != nil && len(c.Bucket.AdminSecret) != 32)):
		return fmt.Errorf("%w: malformed bucket grant", ErrMalformed)
	}
	if c.SyncSent != nil {
		if err := c.SyncSent.Message.Validate(); err != nil {
			return err
		}
	}
	for _, a := range c.Attachments {
		switch {
		case !validID(a.Bucket) || !validID(a.ObjectKey):
			return fmt.Errorf("%w: malformed attachment location", ErrMalformed)
		case len(a.Key) != 64 || len(a.Digest) != 32:
			return fmt.Errorf("%w: malformed attachment key or digest", ErrMalformed)
		case a.Size < 0 || a.Size > 1<<40:
			return fmt.Errorf("%w: attachment size out of range", ErrMalformed)
		case len(a.FileName) > 255 || len(a.ContentType) > 255:
			return fmt.Errorf("%w: attachment name or type too long", ErrMalformed)
		}
	}
	return nil
}

// Valid reports whether g is well-formed: an id, a revision, a name and
// members within the limits every group message is held to.
func (g *GroupState) Valid() bool { return validGroup(g) }

func validGroup(g *GroupState) bool {
	if !validID(g.ID) || g.Revision < 1 || len(g.Name) > 256 || len(g.Members) > MaxGroupMembers {
		return false
	}
	seen := map[string]bool{}
	for _, m := range g.Members {
		if m.Account == "" || len(m.Account) > 64 || len(m.Number) > 16 || seen[m.Account] {
			return false
		}
		seen[m.Account] = true
	}
	return true
}

// validID reports whether s is a relay bucket id or object key: 128 bits
// as 22 characters of unpadded base64url.
func validID(s string) bool {
	if len(s) != 22 {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
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
