package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
)

// MaxRecipients bounds the accounts of one multi-recipient send (Signal's
// largest groups have 1000 members).
const MaxRecipients = 1000

// DeviceRef is one recipient device of a multi-recipient send: the routing
// header that goes with the shared ciphertext.
type DeviceRef struct {
	Device         int
	RegistrationID int
}

// Recipient is one account of a multi-recipient send and the devices the
// sender addresses.
type Recipient struct {
	Account uuid.UUID
	Devices []DeviceRef
	// Content, if set, is this recipient's own ciphertext instead of the
	// shared one (a sealed sender v2 message: each recipient's copy
	// carries its own key material).
	Content []byte
}

// MultiSend is one ciphertext for many accounts (a group message encrypted
// once with a sender key), with each recipient's device list.
type MultiSend struct {
	// Sender is zero for a sealed-sender send (see Send.Sealed).
	Sender         accounts.Principal
	Sealed         bool
	ClientAddress  string
	Timestamp      int64
	IdempotencyKey string
	ExpiresIn      time.Duration
	Urgent         bool
	Type           int
	Content        []byte
	Recipients     []Recipient
}

// MultiDeviceError reports, per recipient account, device lists that do not
// match (Mismatched) or registration ids that are stale (Stale).
type MultiDeviceError struct {
	Mismatched map[uuid.UUID]*MismatchedDevicesError
	Stale      map[uuid.UUID]*StaleDevicesError
}

func (e *MultiDeviceError) Error() string {
	return fmt.Sprintf("device lists do not match for %d recipients and are stale for %d", len(e.Mismatched), len(e.Stale))
}

// Part is the envelopes of a multi-recipient send for one account.
type Part struct {
	Destination uuid.UUID
	Envelopes   []Envelope
}

// MultiBatch is an accepted multi-recipient send as handed to the Store.
type MultiBatch struct {
	Sender      accounts.Principal
	Key         []byte
	RequestHash []byte
	KeyExpires  time.Time
	Now         time.Time
	// Parts are ordered by destination, the order in which their device
	// rows are locked, so concurrent sends cannot deadlock.
	Parts []Part
	// SharedContent reports that every envelope carries the same
	// ciphertext, which the store may then keep once for all of them.
	SharedContent           bool
	QueueMaxEnvelopes       int
	QueueMaxBytes           int64
	QueueSenderMaxEnvelopes int
	QueueSenderMaxBytes     int64
}

// SendMulti stores one ciphertext for every addressed device of every
// recipient in one transaction, after checking each recipient's device
// list as Send does (all mismatches are reported together), and wakes the
// devices. Its cost against the sender's budgets is the ciphertext's size
// times the addressed devices: what it stores, not the request's size.
func (s *Service) SendMulti(ctx context.Context, req MultiSend) (Receipt, error) {
	if err := validateMulti(req); err != nil {
		return Receipt{}, err
	}
	dests := make([]uuid.UUID, len(req.Recipients))
	for i, r := range req.Recipients {
		dests[i] = r.Account
	}
	if err := s.admit(Send{Sender: req.Sender, Sealed: req.Sealed, ClientAddress: req.ClientAddress}, dests...); err != nil {
		return Receipt{}, err
	}
	now := s.now()
	expires := s.expiry(now, req.ExpiresIn)
	b := MultiBatch{Sender: req.Sender, Now: now, SharedContent: !req.ownContents(), QueueMaxEnvelopes: s.cfg.QueueMaxEnvelopes, QueueMaxBytes: s.cfg.QueueMaxBytes,
		QueueSenderMaxEnvelopes: s.cfg.QueueSenderMaxEnvelopes, QueueSenderMaxBytes: s.cfg.QueueSenderMaxBytes}
	if req.IdempotencyKey != "" {
		k := sha256.Sum256([]byte(req.IdempotencyKey))
		h := multiRequestHash(req)
		b.Key, b.RequestHash, b.KeyExpires = k[:], h[:], now.Add(IdempotencyWindow)
	}
	all := req.sends()
	slices.SortFunc(all, func(a, b Send) int { return bytes.Compare(a.Destination[:], b.Destination[:]) })
	sends := map[uuid.UUID]Send{}
	for _, send := range all {
		p := Part{Destination: send.Destination}
		for _, o := range send.Envelopes {
			e := envelope(send, o, now)
			e.ExpiresAt = expires
			p.Envelopes = append(p.Envelopes, e)
		}
		sends[send.Destination] = send
		b.Parts = append(b.Parts, p)
	}
	check := func(devices map[uuid.UUID][]accounts.Device) error {
		var me MultiDeviceError
		for account, send := range sends {
			err := checkDevices(send, devices[account])
			switch e := err.(type) {
			case nil:
			case *MismatchedDevicesError:
				if me.Mismatched == nil {
					me.Mismatched = map[uuid.UUID]*MismatchedDevicesError{}
				}
				me.Mismatched[account] = e
			case *StaleDevicesError:
				if me.Stale == nil {
					me.Stale = map[uuid.UUID]*StaleDevicesError{}
				}
				me.Stale[account] = e
			default:
				if err == ErrNoAccount {
					return fmt.Errorf("%w: %s", ErrNoAccount, account)
				}
				return err
			}
		}
		if me.Mismatched != nil || me.Stale != nil {
			return &me
		}
		return nil
	}
	var devices, stored int64
	for _, p := range b.Parts {
		devices += int64(len(p.Envelopes))
		for _, e := range p.Envelopes {
			stored += int64(len(e.Content))
		}
	}
	size := stored / max(devices, 1) // per envelope, to refund skipped ones
	c, err := s.charge(budgetKey(Send{Sender: req.Sender, Sealed: req.Sealed, ClientAddress: req.ClientAddress}), devices, stored)
	if err != nil {
		if b.Key == nil {
			return Receipt{}, err
		}
		// A retry of a send already stored gets its first answer (see Send).
		res := s.commits.enqueue(ctx, Request{Batch: b, Check: func(map[uuid.UUID][]accounts.Device) error { return err }})
		if res.Err == nil && res.Receipt.Replayed {
			return res.Receipt, nil
		}
		return Receipt{}, err
	}
	res := s.commits.enqueue(ctx, Request{Batch: b, Check: check})
	rc, err := res.Receipt, res.Err
	if err != nil {
		c.refund(devices, stored)
		return Receipt{}, err
	}
	if rc.Replayed {
		c.refund(devices, stored)
		return rc, nil
	}
	c.refund(int64(len(rc.Skipped)), int64(len(rc.Skipped))*size)
	return rc, nil
}

// sends is req as one single-destination send per recipient.
func (req MultiSend) sends() []Send {
	out := make([]Send, 0, len(req.Recipients))
	for _, r := range req.Recipients {
		send := Send{Sender: req.Sender, Sealed: req.Sealed, ClientAddress: req.ClientAddress, Destination: r.Account,
			Timestamp: req.Timestamp, IdempotencyKey: req.IdempotencyKey, ExpiresIn: req.ExpiresIn, Urgent: req.Urgent}
		content := req.Content
		if r.Content != nil {
			content = r.Content
		}
		for _, d := range r.Devices {
			send.Envelopes = append(send.Envelopes, Outgoing{Device: d.Device, RegistrationID: d.RegistrationID, Type: req.Type, Content: content})
		}
		out = append(out, send)
	}
	return out
}

// ownContents reports whether recipients carry their own ciphertexts.
func (req MultiSend) ownContents() bool {
	return slices.ContainsFunc(req.Recipients, func(r Recipient) bool { return r.Content != nil })
}

// validateMulti checks the recipient list; every recipient's part must be
// a valid single send.
func validateMulti(req MultiSend) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case len(req.Recipients) == 0:
		return bad("at least one recipient is required")
	case len(req.Recipients) > MaxRecipients:
		return bad("at most %d recipients per request", MaxRecipients)
	}
	seen := map[uuid.UUID]bool{}
	for i, send := range req.sends() {
		if seen[send.Destination] {
			return bad("recipient %d: account appears twice", i)
		}
		seen[send.Destination] = true
		if err := validate(send); err != nil {
			return fmt.Errorf("recipient %d: %w", i, err)
		}
	}
	return nil
}

// multiRequestHash identifies a multi-recipient send's content.
func multiRequestHash(req MultiSend) [32]byte {
	h := sha256.New()
	var buf [8]byte
	num := func(v int64) {
		binary.BigEndian.PutUint64(buf[:], uint64(v))
		h.Write(buf[:])
	}
	h.Write([]byte("multi"))
	num(req.Timestamp)
	num(int64(req.ExpiresIn))
	num(int64(req.Type))
	if req.Urgent {
		num(1)
	} else {
		num(0)
	}
	num(int64(len(req.Content)))
	h.Write(req.Content)
	for _, r := range req.Recipients {
		h.Write(r.Account[:])
		if r.Content != nil { // absent before sealed sender: hashes of shared sends stay as they were
			num(int64(len(r.Content)))
			h.Write(r.Content)
		}
		num(int64(len(r.Devices)))
		for _, d := range r.Devices {
			num(int64(d.Device))
			num(int64(d.RegistrationID))
		}
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
