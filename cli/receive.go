package cli

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/wire"
)

// Event is one received envelope, as shown to the user or printed as JSON.
type Event struct {
	// Kind is "message", "receipt", "typing", or "error" for an envelope
	// that could not be decrypted or parsed (it is acknowledged anyway).
	Kind            string           `json:"type"`
	EnvelopeID      string           `json:"envelope_id"`
	Sender          string           `json:"sender,omitzero"` // E.164, when known
	SenderAccount   string           `json:"sender_account"`
	SenderDevice    int              `json:"sender_device"`
	Timestamp       int64            `json:"timestamp"` // the sender's, Unix ms
	ServerTimestamp int64            `json:"server_timestamp"`
	Text            string           `json:"text,omitzero"`
	Receipt         *content.Receipt `json:"receipt,omitzero"`
	Typing          *content.Typing  `json:"typing,omitzero"`
	// IdentityChanged is set when this envelope carried a new identity key
	// for the sender; IdentityTrusted says whether we may still send to them.
	IdentityChanged bool `json:"identity_changed,omitzero"`
	IdentityTrusted bool `json:"identity_trusted,omitzero"`
	// Attachments are the message's files, saved or not.
	Attachments []SavedAttachment `json:"attachments,omitzero"`
	// Group and GroupName name the group of a group message or update;
	// Members lists an update's members; Removed says we are no longer in.
	Group     string   `json:"group,omitzero"`
	GroupName string   `json:"group_name,omitzero"`
	Members   []string `json:"members,omitzero"`
	Removed   bool     `json:"removed,omitzero"`
	// Destination and DestinationAccount name the recipient of a message
	// one of our other devices sent ("sent" events).
	Destination        string `json:"destination,omitzero"`
	DestinationAccount string `json:"destination_account,omitzero"`
	// ExpireTimer is the conversation's disappearing-message timer in
	// seconds that a message or "timer" event carries (0: off).
	ExpireTimer int64  `json:"expire_timer,omitzero"`
	Error       string `json:"error,omitzero"`
	// Sealed marks an envelope that came sealed: the relay did not see
	// who sent it (the sender is from its certificate).
	Sealed bool `json:"sealed,omitzero"`

	pending []content.Attachment // still to download
	grant   *content.BucketGrant
	msgID   int64 // history row, for the files saved with it
}

// ErrReplaced ends Receive when another connection of the same device took
// over the relay's socket; reconnecting would only take it back.
var ErrReplaced = errors.New("another connection of this device took over")

// ReceiveOptions control Receive.
type ReceiveOptions struct {
	// Timeout ends Receive after this long without an envelope once the
	// stored queue is drained; negative waits forever.
	Timeout time.Duration
	// Handle is called with every event, in order, after its result is
	// stored and before it is acknowledged.
	Handle func(Event)
	// SendReadReceipts marks received messages read to their senders.
	SendReadReceipts bool
	// OutputDir is where attachments are saved (default: the attachments
	// folder of the config directory).
	OutputDir string
}

// Receive connects the account's WebSocket and processes envelopes until
// the timeout passes, ctx ends, or the relay closes the socket for good.
func (a *Account) Receive(ctx context.Context, o ReceiveOptions) error {
	if err := a.requireRegistered(); err != nil {
		return err
	}
	a.Maintain(ctx)
	sock, err := a.relay.Connect(ctx)
	if err != nil {
		return err
	}
	defer sock.Close()
	if o.OutputDir == "" {
		o.OutputDir = filepath.Join(a.dir, "attachments") // each account its own
	}
	// Buffered beyond the relay's delivery window, so the reader keeps
	// answering pings while an attachment downloads.
	frames := make(chan wire.Frame, 256)
	readErr := make(chan error, 1)
	go func() {
		for {
			f, err := sock.Read()
			if err != nil {
				readErr <- err
				return
			}
			select {
			case frames <- f:
			case <-ctx.Done():
				readErr <- ctx.Err()
				return
			}
		}
	}()
	var idle <-chan time.Time
	// Disappearing messages are deleted while a long receive runs, too.
	expiry := time.NewTicker(time.Second)
	defer expiry.Stop()
	drained := false
	resetIdle := func() {
		if drained && o.Timeout >= 0 {
			idle = time.After(o.Timeout)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-idle:
			return nil
		case <-expiry.C:
			a.expire(ctx)
		case err := <-readErr:
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				switch ce.Code {
				case wire.CloseReplaced:
					return fmt.Errorf("%w: %w", relayclient.ErrUnavailable, ErrReplaced)
				case wire.CloseDeviceRemoved:
					return &relayclient.Error{Status: 401, Code: "device_removed", Message: "this device was removed or the account re-registered elsewhere"}
				}
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%w: %w", relayclient.ErrUnavailable, err)
		case f := <-frames:
			switch f.Type {
			case wire.FrameQueueEmpty:
				drained = true
				resetIdle()
			case wire.FrameEnvelope:
				if f.Envelope == nil {
					continue
				}
				ev, dup, err := a.process(ctx, f.Envelope)
				if err != nil {
					return err // local failure (disk, database): do not acknowledge
				}
				if len(ev.pending) > 0 {
					a.fetchAttachments(ctx, &ev, o.OutputDir)
				}
				if !dup && o.Handle != nil && ev.Kind != "sender_key" {
					o.Handle(ev)
				}
				if err := sock.Ack(f.Envelope.ID); err != nil {
					return fmt.Errorf("%w: ack: %w", relayclient.ErrUnavailable, err)
				}
				if !dup {
					a.afterReceive(ctx, ev, o.SendReadReceipts)
				}
				resetIdle()
			}
		}
	}
}

// process decrypts and stores one envelope. The ciphertext's hash is
// recorded in the same transaction as the result, so a redelivered envelope
// is recognised (dup) rather than failing as a replay, and the same
// ciphertext in another envelope is reported as a replay. A failure to decrypt
// or parse is an Event of kind "error" (the session changes roll back); an
// error return means the local store failed and the envelope must not be
// acknowledged.
func (a *Account) process(ctx context.Context, env *wire.Envelope) (ev Event, dup bool, err error) {
	ev = Event{EnvelopeID: env.ID.String(), SenderAccount: env.SourceAccount.String(), SenderDevice: env.SourceDevice,
		Timestamp: env.Timestamp, ServerTimestamp: env.ServerTimestamp}
	hash := sha256.Sum256(env.Content)
	a.mu.Lock()
	defer a.mu.Unlock()
	var failure error
	err = a.db.Update(ctx, func(tx *clientdb.Tx) error {
		fresh, firstID, err := tx.MarkSeen(ctx, hash[:], ev.EnvelopeID, a.now().UnixMilli())
		switch {
		case err != nil:
			return err
		case !fresh && firstID == ev.EnvelopeID:
			dup = true // the relay redelivered what we stored before the ack was lost
			return nil
		case !fresh:
			failure = fmt.Errorf("%w: replay of envelope %s", ErrBadEnvelope, firstID)
			return errRollback
		}
		st := a.store(tx)
		inner := env
		if env.Type == EnvelopeSealed {
			if inner, err = a.unseal(ctx, st, env); err != nil {
				failure = err
				return errRollback
			}
			ev.SenderAccount, ev.SenderDevice, ev.Sealed = inner.SourceAccount.String(), inner.SourceDevice, true
		}
		plaintext, group, err := decrypt(ctx, st, inner)
		if err == nil {
			err = a.apply(ctx, tx, &ev, inner, plaintext, group)
		}
		if err != nil {
			failure = err
			return errRollback
		}
		for _, c := range st.changes {
			if c.Changed {
				ev.IdentityChanged, ev.IdentityTrusted = true, c.Trusted
			}
		}
		return nil
	})
	if errors.As(failure, new(localError)) {
		return ev, false, failure // not the envelope's fault: leave it unacknowledged
	}
	if errors.Is(err, errRollback) {
		// Nothing the failed attempt changed is kept, not even the hash: a
		// hostile copy sent first must not make the genuine envelope look
		// like a replay.
		err = nil
		ev.Kind, ev.Error = "error", failure.Error()
		a.log.WarnContext(ctx, "envelope rejected", "envelope", env.ID, "sender", ev.SenderAccount, "err", failure)
	}
	if err == nil && !dup {
		ev.Sender = a.senderNumber(ctx, ev.SenderAccount, ev.Sender)
	}
	return ev, dup, err
}

// senderNumber returns the number we know for account or, the first time,
// the number the sender claims if the relay's directory confirms it.
func (a *Account) senderNumber(ctx context.Context, account, claimed string) string {
	if n := a.numberOf(ctx, account); n != "" || claimed == "" {
		return n
	}
	id, err := a.relay.Lookup(ctx, claimed)
	if err != nil || id != account {
		a.log.DebugContext(ctx, "sender's number not confirmed", "account", account, "err", err)
		return ""
	}
	if _, err := a.learnNumber(ctx, account, claimed); err != nil {
		return ""
	}
	return claimed
}

var errRollback = errors.New("roll back")

// decrypt returns the plaintext of env and, for a group message, its
// group. Malformed input is refused by the protocol package's strict
// parsers before any cryptography; a panic would still become an error.
func decrypt(ctx context.Context, st *signalStore, env *wire.Envelope) (plaintext []byte, group string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: decryption failed on it (%v)", ErrBadEnvelope, r)
		}
	}()
	if env.SourceDevice < 1 || env.SourceAccount == uuid.Nil {
		return nil, "", fmt.Errorf("%w: no sender", ErrBadEnvelope)
	}
	if err := checkEnvelope(env.Type, env.Content); err != nil {
		return nil, "", err
	}
	sender := address(env.SourceAccount.String(), env.SourceDevice)
	switch env.Type {
	case EnvelopePreKey, EnvelopeSignal:
		plaintext, err = protocol.Decrypt(ctx, rand.Reader, st, address(st.self, st.device), sender, protocol.MessageType(env.Type), env.Content)
		if err != nil {
			return nil, "", decryptError(err)
		}
		return plaintext, "", nil
	case EnvelopeSenderKey:
		m, _ := parseGroupFrame(env.Content) // checked above
		group, err := groupOf(ctx, st, env.SourceAccount.String(), env.SourceDevice, m)
		if err != nil {
			return nil, "", err
		}
		st.group = group
		if plaintext, err = protocol.GroupDecrypt(ctx, st, sender, env.Content[1:]); err != nil {
			return nil, "", fmt.Errorf("group message: %w", decryptError(err))
		}
		return plaintext, group, nil
	}
	return nil, "", fmt.Errorf("%w: unknown envelope type %d", ErrBadEnvelope, env.Type) // checked above
}

// decryptError wraps a decryption failure; a local database failure stays
// itself (the envelope is then not acknowledged and comes again).
func decryptError(err error) error {
	if errors.As(err, new(localError)) {
		return err
	}
	return fmt.Errorf("cannot decrypt: %w", err)
}

// apply stores what a decrypted message means and fills in ev.
func (a *Account) apply(ctx context.Context, tx *clientdb.Tx, ev *Event, env *wire.Envelope, plaintext []byte, group string) error {
	c, err := content.Unmarshal(plaintext)
	if err != nil {
		return err
	}
	// Group messages come only inside their group's sender-key ciphertext;
	// everything else only over pairwise sessions.
	if c.GroupID != group {
		return fmt.Errorf("%w: group mismatch between the envelope and its content", ErrBadEnvelope)
	}
	if c.ProfileKey != nil && ev.SenderAccount != a.ID {
		// The sender shares its profile key: we may now write to it sealed.
		if err := tx.SetProfileKey(ctx, ev.SenderAccount, c.ProfileKey); err != nil {
			return local(err)
		}
	}
	if group != "" {
		return a.applyGroupMessage(ctx, tx, ev, env, c, plaintext)
	}
	ev.Kind, ev.Timestamp = c.Kind(), c.Timestamp
	switch {
	case c.Receipt != nil:
		ev.Receipt = c.Receipt
		status := clientdb.StatusDelivered
		if c.Receipt.Type == content.Read {
			status = clientdb.StatusRead
		}
		_, err = tx.RaiseStatus(ctx, ev.SenderAccount, c.Receipt.Timestamps, status)
	case c.Typing != nil:
		ev.Typing = c.Typing
	case c.SyncSent != nil:
		if err := a.applySent(ctx, tx, ev, c.SyncSent, env.SourceDevice); err != nil {
			return err
		}
	case c.SenderKey != nil:
		return a.applySenderKey(ctx, tx, ev, env, c.SenderKey)
	case c.GroupUpdate != nil:
		return a.applyGroupUpdate(ctx, tx, ev, c, plaintext)
	case c.TimerUpdate:
		ev.ExpireTimer = c.ExpireTimer
		if _, err = tx.SetTimer(ctx, ev.SenderAccount, c.ExpireTimer); err == nil {
			_, err = tx.AddMessage(ctx, clientdb.Message{Conversation: ev.SenderAccount, SenderDevice: env.SourceDevice,
				SentMS: c.Timestamp, ReceivedMS: a.now().UnixMilli(), Status: clientdb.StatusSent, Body: plaintext})
		}
	default:
		// Every message carries the sender's timer, so a change that
		// arrives with a message (or a lost timer update) still applies.
		ev.Text, ev.ExpireTimer = c.Text, c.ExpireTimer
		if _, err = tx.SetTimer(ctx, ev.SenderAccount, c.ExpireTimer); err != nil {
			break
		}
		if err = adoptGrant(ctx, tx, ev.SenderAccount, c.Bucket); err != nil {
			break
		}
		err = a.record(ctx, tx, ev, ev.SenderAccount, false, env.SourceDevice, c, plaintext, true)
	}
	if err != nil {
		return local(err)
	}
	ev.Sender = c.SenderNumber // a claim until process confirms it
	return nil
}

// record adds message m (encoded as body) to the history of conversation
// and expects its attachments on ev. When expires, it disappears
// m.ExpireTimer after now: the receiver's clock starts on receipt.
func (a *Account) record(ctx context.Context, tx *clientdb.Tx, ev *Event, conversation string, outgoing bool, device int,
	m *content.Content, body []byte, expires bool) error {
	now := a.now().UnixMilli()
	msg := clientdb.Message{Conversation: conversation, Outgoing: outgoing, SenderDevice: device,
		SentMS: m.Timestamp, ReceivedMS: now, Status: clientdb.StatusSent, Body: body}
	if expires && m.ExpireTimer > 0 {
		msg.ExpiresMS = now + m.ExpireTimer*1000
	}
	id, err := tx.AddMessage(ctx, msg)
	if err != nil {
		return err
	}
	ev.msgID = id
	for _, att := range m.Attachments {
		ev.Attachments = append(ev.Attachments, SavedAttachment{FileName: att.FileName, ContentType: att.ContentType, Size: att.Size})
	}
	ev.pending, ev.grant = m.Attachments, m.Bucket
	return nil
}

// numberOf returns the number we know for account, or "".
func (a *Account) numberOf(ctx context.Context, account string) string {
	var r clientdb.Recipient
	if err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		r, err = tx.Recipient(ctx, account)
		return err
	}); err != nil {
		return ""
	}
	return r.Number
}

// afterReceive does what follows a stored message, after its ack: send
// receipts, top up prekeys. Failures are logged; the message itself is safe.
func (a *Account) afterReceive(ctx context.Context, ev Event, read bool) {
	if ev.Kind == "error" {
		return
	}
	if ev.Kind == "message" {
		if err := a.SendReceipt(ctx, ev.SenderAccount, content.Delivery, []int64{ev.Timestamp}); err != nil {
			a.log.WarnContext(ctx, "delivery receipt not sent", "to", ev.SenderAccount, "err", err)
		}
		if read {
			if err := a.SendReceipt(ctx, ev.SenderAccount, content.Read, []int64{ev.Timestamp}); err != nil {
				a.log.WarnContext(ctx, "read receipt not sent", "to", ev.SenderAccount, "err", err)
			}
		}
	}
	a.Maintain(ctx)
}
