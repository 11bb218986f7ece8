package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/protocol"
)

// Result is the outcome of sending to one recipient.
type Result struct {
	Recipient string // the number given
	Account   string
	Err       error
}

// Sent is what a message to several recipients did: its timestamp (which
// names the message to receipts and quotes) and one result per recipient.
type Sent struct {
	Timestamp int64
	Results   []Result
}

// SendText sends text to each recipient (E.164 numbers) and records it in
// the history. It returns the message's timestamp and one result per
// recipient; a failure for one does not stop the others.
func (a *Account) SendText(ctx context.Context, text string, recipients ...string) (int64, []Result, error) {
	return a.Send(ctx, text, nil, recipients...)
}

// Send is SendText with files attached: each is encrypted, uploaded to the
// conversation's bucket on the relay (created the first time) and sent as
// a pointer inside the message. The text may be empty when there are files.
func (a *Account) Send(ctx context.Context, text string, files []string, recipients ...string) (int64, []Result, error) {
	s, err := a.SendMessage(ctx, Message{Text: text, Files: files, Recipients: recipients})
	return s.Timestamp, s.Results, err
}

// Message is an outgoing message to one or more people.
type Message struct {
	Text       string
	Files      []string // paths of files to attach
	Recipients []string // E.164 numbers; our own number is a note to self
	// NotifySelf sends a note to self as an ordinary incoming message to
	// our other devices instead of as a copy of a sent message (so they
	// notify), as signal-cli's --notify-self does.
	NotifySelf bool
}

// SendMessage sends m to each recipient and records it in the history. A
// failure for one recipient does not stop the others; it is in their Result.
func (a *Account) SendMessage(ctx context.Context, m Message) (Sent, error) {
	if err := a.requireRegistered(); err != nil {
		return Sent{}, err
	}
	if m.Text == "" && len(m.Files) == 0 {
		return Sent{}, fmt.Errorf("%w: empty message", ErrUsage)
	}
	out, err := checkFiles(m.Files)
	if err != nil {
		return Sent{}, err
	}
	c := content.Content{Timestamp: a.now().UnixMilli(), Text: m.Text}
	body, err := a.marshal(&c)
	if err != nil {
		return Sent{}, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	for _, number := range m.Recipients { // a malformed argument sends nothing
		if _, err := phone.Parse(number); err != nil {
			return Sent{}, fmt.Errorf("%w: recipient %q: %v", ErrUsage, number, err)
		}
	}
	s := Sent{Timestamp: c.Timestamp, Results: make([]Result, len(m.Recipients))}
	for i, number := range m.Recipients {
		s.Results[i].Recipient = number
		if a.isSelf(number) {
			s.Results[i].Account, s.Results[i].Err = a.ID, a.noteToSelf(ctx, c, out, m.NotifySelf)
			continue
		}
		s.Results[i].Account, s.Results[i].Err = a.sendTo(ctx, number, c, body, out)
	}
	return s, nil
}

// isSelf reports whether number is this account's.
func (a *Account) isSelf(number string) bool {
	n, err := phone.Parse(number)
	return err == nil && n.String() == a.Number
}

// noteToSelf records a message to ourselves and shows it on our other
// devices: as a copy of a sent message (the way Signal's Note to Self
// syncs), or with notify as an ordinary message that they announce.
func (a *Account) noteToSelf(ctx context.Context, c content.Content, files []outgoingFile, notify bool) error {
	self := clientdb.Recipient{Account: a.ID, Number: a.Number}
	timer, err := a.timer(ctx, a.ID)
	if err != nil {
		return err
	}
	c.ExpireTimer = timer
	sent, err := a.withAttachments(ctx, a.ID, c, files)
	if err != nil {
		return err
	}
	body, err := a.marshal(sent)
	if err != nil {
		return err
	}
	if notify {
		others, err := a.otherDevices(ctx)
		if err != nil {
			return err
		}
		if len(others) > 0 {
			if err := a.sessionsWith(ctx, self, others); err != nil {
				return err
			}
			return a.deliver(ctx, self, c.Timestamp, body, timer, true)
		}
	} else if err := a.syncSent(ctx, self, sent, timer); err != nil {
		return err
	}
	return a.db.Update(ctx, func(tx *clientdb.Tx) error {
		_, err := tx.AddMessage(ctx, clientdb.Message{Conversation: a.ID, Outgoing: true, SenderDevice: a.DeviceID,
			SentMS: c.Timestamp, ReceivedMS: a.now().UnixMilli(), Status: clientdb.StatusSent, Body: body})
		return local(err)
	})
}

// sendTo sends one message to one recipient and records it. body is c
// encoded; it is encoded again when the conversation has a timer or files
// must first be uploaded to its bucket.
func (a *Account) sendTo(ctx context.Context, number string, c content.Content, body []byte, files []outgoingFile) (string, error) {
	r, err := a.resolve(ctx, number)
	if err != nil {
		return "", err
	}
	timer, err := a.timer(ctx, r.Account)
	if err != nil {
		return r.Account, err
	}
	sent := &c
	if timer > 0 || len(files) > 0 {
		c.ExpireTimer = timer
		if sent, err = a.withAttachments(ctx, r.Account, c, files); err != nil {
			return r.Account, err
		}
		if body, err = a.marshal(sent); err != nil {
			return r.Account, err
		}
	}
	if err := a.deliver(ctx, r, c.Timestamp, body, timer, true); err != nil {
		return r.Account, err
	}
	a.syncSentOrLog(ctx, r, sent, timer)
	return r.Account, nil
}

// deliver sends an encoded message to r that the relay keeps at most timer
// seconds (0: its retention) and records it in the history, disappearing
// after timer seconds if disappears.
func (a *Account) deliver(ctx context.Context, r clientdb.Recipient, timestamp int64, body []byte, timer int64, disappears bool) error {
	if err := a.sendPlaintext(ctx, r, body, sendOpts{Timestamp: timestamp, Urgent: true, ExpiresIn: timer}); err != nil {
		return err
	}
	now := a.now().UnixMilli()
	m := clientdb.Message{Conversation: r.Account, Outgoing: true, SenderDevice: a.DeviceID,
		SentMS: timestamp, ReceivedMS: now, Status: clientdb.StatusSent, Body: body}
	if timer > 0 && disappears {
		m.ExpiresMS = now + timer*1000 // the sender's clock starts when sent
	}
	return a.db.Update(ctx, func(tx *clientdb.Tx) error {
		_, err := tx.AddMessage(ctx, m)
		return err
	})
}

// SendTyping tells recipient we started or stopped typing. It is an
// online-only envelope: dropped if they are not connected, never stored,
// and sent only to devices we already have a session with (starting one
// would use up a one-time prekey for a signal that may be dropped).
func (a *Account) SendTyping(ctx context.Context, recipient string, started bool) error {
	if err := a.requireRegistered(); err != nil {
		return err
	}
	r, err := a.resolve(ctx, recipient)
	if err != nil {
		return err
	}
	return a.sendContent(ctx, r, &content.Content{Timestamp: a.now().UnixMilli(), Typing: &content.Typing{Started: started}}, true)
}

// MarkRead tells number that we read its messages with these timestamps
// (a read receipt, as signal-cli's sendReceipt sends).
func (a *Account) MarkRead(ctx context.Context, number string, timestamps []int64) (Sent, error) {
	if err := a.requireRegistered(); err != nil {
		return Sent{}, err
	}
	if len(timestamps) == 0 || len(timestamps) > content.MaxReceiptTimestamps {
		return Sent{}, fmt.Errorf("%w: a receipt names 1 to %d messages", ErrUsage, content.MaxReceiptTimestamps)
	}
	r, err := a.resolve(ctx, number)
	if err != nil {
		return Sent{}, err
	}
	c := &content.Content{Timestamp: a.now().UnixMilli(), Receipt: &content.Receipt{Type: content.Read, Timestamps: timestamps}}
	err = a.sendContent(ctx, r, c, false)
	return Sent{Timestamp: c.Timestamp, Results: []Result{{Recipient: number, Account: r.Account, Err: err}}}, nil
}

// SendReceipt acknowledges messages of account by their timestamps.
func (a *Account) SendReceipt(ctx context.Context, account, kind string, timestamps []int64) error {
	var r clientdb.Recipient
	err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		r, err = tx.Recipient(ctx, account)
		return err
	})
	if err != nil {
		return err
	}
	return a.sendContent(ctx, r, &content.Content{Timestamp: a.now().UnixMilli(), Receipt: &content.Receipt{Type: kind, Timestamps: timestamps}}, false)
}

// resolve maps a number to its recipient, asking the relay's directory
// the first time.
func (a *Account) resolve(ctx context.Context, number string) (clientdb.Recipient, error) {
	n, err := phone.Parse(number)
	if err != nil {
		return clientdb.Recipient{}, fmt.Errorf("%w: recipient %q: %v", ErrUsage, number, err)
	}
	var r clientdb.Recipient
	err = a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		r, err = tx.RecipientByNumber(ctx, n.String())
		return err
	})
	if err == nil || !errors.Is(err, clientdb.ErrNotFound) {
		return r, err
	}
	id, err := a.relay.Lookup(ctx, n.String())
	if err != nil {
		return r, err
	}
	return a.learnNumber(ctx, id, n.String())
}

// learnNumber records that account is registered on number.
func (a *Account) learnNumber(ctx context.Context, account, number string) (r clientdb.Recipient, err error) {
	err = a.db.Update(ctx, func(tx *clientdb.Tx) error {
		r, err = tx.Recipient(ctx, account)
		if err != nil && !errors.Is(err, clientdb.ErrNotFound) {
			return err
		}
		r.Account, r.Number = account, number
		return tx.PutRecipient(ctx, r)
	})
	return r, err
}

// maxSendAttempts bounds device-list repairs (409/410) per send.
const maxSendAttempts = 4

// marshal encodes c, stamped with our number.
func (a *Account) marshal(c *content.Content) ([]byte, error) {
	c.SenderNumber = a.Number
	if c.Text != "" || len(c.Attachments) > 0 || c.GroupUpdate != nil || c.TimerUpdate {
		// Our profile key goes to people we chose to write to (and the
		// groups we run), never in what parley sends by itself (receipts
		// to strangers who wrote first): holding it admits sealed
		// messages to us.
		c.ProfileKey = a.profileKey()
	}
	return content.Marshal(c)
}

// sendContent encodes c and sends it to every device of r.
func (a *Account) sendContent(ctx context.Context, r clientdb.Recipient, c *content.Content, online bool) error {
	plaintext, err := a.marshal(c)
	if err != nil {
		return err
	}
	return a.sendPlaintext(ctx, r, plaintext, sendOpts{Timestamp: c.Timestamp, Urgent: c.Text != "", Online: online})
}

// sendOpts are the envelope settings of one send.
type sendOpts struct {
	Timestamp int64
	Urgent    bool
	Online    bool  // deliver only to connected devices, never store
	ExpiresIn int64 // seconds until the relay purges it undelivered (0: its retention)
}

// sendPlaintext encrypts plaintext for every device of r and submits it,
// repairing sessions when the relay reports missing, extra or stale devices.
func (a *Account) sendPlaintext(ctx context.Context, r clientdb.Recipient, plaintext []byte, o sendOpts) error {
	a.mu.Lock()
	if err := a.replaceKEMPreKeys(ctx); err != nil {
		a.log.WarnContext(ctx, "cannot replace the Kyber prekeys of before PQXDH", "err", err)
	}
	a.mu.Unlock()
	seal := a.sealingFor(ctx, r)
	var lastErr error
	for range maxSendAttempts {
		msgs, err := a.encrypt(ctx, r, plaintext, !o.Online, seal)
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			return nil // online-only and no session yet: nothing worth a key fetch
		}
		req := relayclient.Send{Timestamp: o.Timestamp, Online: o.Online, Urgent: o.Urgent, ExpiresIn: o.ExpiresIn, Messages: msgs}
		if seal != nil {
			err = a.submitSealed(ctx, r.Account, req, seal.accessKey)
			var re *relayclient.Error
			if errors.As(err, &re) && (re.Status == http.StatusUnauthorized || re.Status == http.StatusTooManyRequests) {
				// 401: our copy of their profile key is stale, or they no
				// longer admit it. 429: sealed sends to them (or from our
				// address) are at their limit, or all sealed senders'
				// share of their queue is used up. Either way, send
				// identified (the message is encrypted again, so nothing
				// is sent twice).
				a.log.InfoContext(ctx, "sealed send refused; sending identified", "account", r.Account, "status", re.Status)
				seal = nil
				continue
			}
		} else {
			err = a.submit(ctx, r.Account, req)
		}
		if err == nil {
			return nil
		}
		lastErr = err
		// 409: drop sessions with extra devices, start them with missing
		// ones; 410: restart sessions with re-installed devices.
		var drop, start []int
		switch {
		case relayclient.Details(err, "missing_devices", &start) && relayclient.Details(err, "extra_devices", &drop):
		case relayclient.Details(err, "stale_devices", &drop):
			start = drop
		default:
			return err
		}
		a.log.DebugContext(ctx, "repairing sessions", "account", r.Account, "drop", drop, "start", start)
		if err := a.forgetDevices(ctx, r.Account, drop); err != nil {
			return err
		}
		for _, d := range start {
			if err := a.startSessions(ctx, r, d); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("the recipient's devices kept changing: %w", lastErr)
}

// submit sends one request, retrying transport failures with the same
// idempotency key so a retry never delivers twice.
func (a *Account) submit(ctx context.Context, account string, req relayclient.Send) error {
	if req.Online {
		// Online-only sends (typing indicators) are never stored, so the
		// relay takes no idempotency key for them, and a lost one is not
		// worth a retry.
		_, err := a.relay.SendMessages(ctx, account, req, "")
		return err
	}
	return a.retryWithKey(ctx, func(key string) error {
		sent, err := a.relay.SendMessages(ctx, account, req, key)
		if err == nil {
			a.reportSkipped(ctx, sent)
		}
		return err
	})
}

// submitSealed sends a sealed request (over HTTP, without credentials),
// retrying transport failures with one idempotency key like submit.
func (a *Account) submitSealed(ctx context.Context, account string, req relayclient.Send, accessKey []byte) error {
	if req.Online {
		_, err := a.relay.SendSealed(ctx, account, req, "", accessKey)
		return err
	}
	return a.retryWithKey(ctx, func(key string) error {
		sent, err := a.relay.SendSealed(ctx, account, req, key, accessKey)
		if err == nil {
			a.reportSkipped(ctx, sent)
		}
		return err
	})
}

// reportSkipped tells the user about devices the relay kept a send from
// because their queue had no room. The send succeeded: the recipient's
// other devices have it.
func (a *Account) reportSkipped(ctx context.Context, sent relayclient.Sent) {
	for _, sk := range sent.SkippedDevices {
		a.log.WarnContext(ctx, "the relay skipped a device", "account", sk.AccountID, "device", sk.DeviceID, "reason", sk.Reason)
		if a.notice == nil {
			continue
		}
		why := "its queue on the relay is full (it has been offline a long time)"
		if sk.Reason == "sender_share_full" {
			why = "it has too many of our messages waiting already"
		}
		a.notice(fmt.Sprintf("device %d of %s did not get this message: %s; its other devices did", sk.DeviceID, sk.AccountID, why))
	}
}

// retryWithKey calls send with one fresh idempotency key, again with the
// same key (after a backoff) while the relay cannot be reached.
func (a *Account) retryWithKey(ctx context.Context, send func(key string) error) error {
	key := make([]byte, 18)
	rand.Read(key)
	idem := base64.RawURLEncoding.EncodeToString(key)
	var err error
	for attempt := range 4 {
		if err = send(idem); err == nil || !errors.Is(err, relayclient.ErrUnavailable) {
			return err
		}
		a.log.DebugContext(ctx, "send failed, retrying", "attempt", attempt+1, "err", err)
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(time.Duration(1<<attempt) * 500 * time.Millisecond):
		}
	}
	return err
}

// encrypt encrypts plaintext once per device we have a session with. When
// fetch is set, it first starts sessions where there are none to send on
// (no session yet, or one we started that went unanswered too long): their
// bundles are fetched and the old state, if any, is archived, so late
// answers on it still decrypt. Without fetch, such devices are skipped.
func (a *Account) encrypt(ctx context.Context, r clientdb.Recipient, plaintext []byte, fetch bool, seal *sealing) ([]relayclient.Outgoing, error) {
	var devices, stale []int
	if err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		st := a.store(tx)
		if devices, err = tx.SessionDevices(ctx, r.Account); err != nil {
			return err
		}
		for _, d := range devices {
			rec, err := st.LoadSession(ctx, address(r.Account, d))
			if err != nil {
				return err
			}
			if !rec.HasCurrentSession(st.now) {
				stale = append(stale, d)
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if fetch {
		switch {
		case len(devices) == 0:
			if err := a.startSessions(ctx, r, 0); err != nil {
				return nil, err
			}
		default:
			for _, d := range stale {
				if err := a.startSessions(ctx, r, d); err != nil {
					return nil, err
				}
			}
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []relayclient.Outgoing
	err := a.db.Update(ctx, func(tx *clientdb.Tx) error {
		st := a.store(tx)
		devices, err := tx.SessionDevices(ctx, r.Account)
		if err != nil {
			return err
		}
		for _, d := range devices {
			addr := address(r.Account, d)
			rec, err := st.LoadSession(ctx, addr)
			if err != nil {
				return err
			}
			if !rec.HasCurrentSession(st.now) {
				continue // online-only sends start no sessions
			}
			var msg protocol.CiphertextMessage
			if seal != nil {
				msg.Type = EnvelopeSealed
				msg.Bytes, err = protocol.SealedSenderEncrypt(ctx, rand.Reader, st, addr, seal.cert, plaintext, st.now)
			} else {
				msg, err = protocol.Encrypt(ctx, rand.Reader, st, address(a.ID, a.DeviceID), addr, plaintext, st.now)
			}
			if errors.As(err, new(*protocol.UntrustedIdentityError)) {
				return &UntrustedError{Number: r.Number, Account: r.Account}
			}
			if err != nil {
				return fmt.Errorf("encrypt for device %d: %w", d, err)
			}
			out = append(out, relayclient.Outgoing{DeviceID: d, RegistrationID: rec.RemoteRegistrationID(),
				Type: int(msg.Type), Content: msg.Bytes})
		}
		return nil
	})
	return out, err
}

// forgetDevices drops our sessions with devices that no longer exist or
// were re-installed.
func (a *Account) forgetDevices(ctx context.Context, account string, devices []int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.db.Update(ctx, func(tx *clientdb.Tx) error {
		for _, d := range devices {
			if err := tx.DeleteSession(ctx, account, d); err != nil {
				return err
			}
		}
		return nil
	})
}

// startSessions fetches the bundles of one device of r (all when device is
// 0) and starts a session with each. A new or changed identity key is
// recorded first; if it is not trusted, nothing is started and
// *UntrustedError is returned.
func (a *Account) startSessions(ctx context.Context, r clientdb.Recipient, device int) error {
	b, err := a.relay.Bundles(ctx, r.Account, device)
	if err != nil {
		return err
	}
	ik, err := parseIdentityKey(b.IdentityKey)
	if err != nil {
		return fmt.Errorf("relay sent a bad bundle for %s: %w", r.Account, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var untrusted bool
	err = a.db.Update(ctx, func(tx *clientdb.Tx) error {
		st := a.store(tx)
		if _, err := st.saveIdentity(ctx, r.Account, ik.Bytes()); err != nil {
			return err
		}
		if ok, err := st.IsTrustedIdentity(ctx, address(r.Account, 1), ik, protocol.Sending); err != nil || !ok {
			untrusted = true
			return err // commit the recorded change, start nothing
		}
		for _, d := range b.Devices {
			if r.Account == a.ID && d.DeviceID == a.DeviceID {
				continue // our other devices' bundles come with our own
			}
			pb, err := bundle(d, ik)
			if err != nil {
				return fmt.Errorf("relay sent a bad bundle for %s device %d: %w", r.Account, d.DeviceID, err)
			}
			addr := address(r.Account, d.DeviceID)
			if err := protocol.ProcessPreKeyBundle(ctx, rand.Reader, st, address(a.ID, a.DeviceID), addr, pb, st.now); err != nil {
				return fmt.Errorf("start session with device %d: %w", d.DeviceID, err)
			}
		}
		return nil
	})
	if err == nil && untrusted {
		return &UntrustedError{Number: r.Number, Account: r.Account}
	}
	return err
}

// parseIdentityKey checks a bundle's identity key.
func parseIdentityKey(b []byte) (protocol.PublicKey, error) { return protocol.ParsePublicKey(b) }

// bundle turns a device's wire bundle into a protocol bundle, validating
// every key (signatures are checked when the session starts).
func bundle(d relayclient.DeviceBundle, ik protocol.PublicKey) (*protocol.PreKeyBundle, error) {
	if d.DeviceID < 1 || d.RegistrationID < 1 {
		return nil, errors.New("bad device or registration id")
	}
	spk, err := protocol.ParsePublicKey(d.SignedPreKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("signed prekey: %w", err)
	}
	kyber, err := protocol.ParseKEMPublicKey(d.PQPreKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("kyber prekey: %w", err)
	}
	pb := &protocol.PreKeyBundle{
		RegistrationID: d.RegistrationID, DeviceID: uint32(d.DeviceID), IdentityKey: ik,
		SignedPreKeyID: d.SignedPreKey.KeyID, SignedPreKey: spk, SignedPreKeySignature: d.SignedPreKey.Signature,
		KyberPreKeyID: d.PQPreKey.KeyID, KyberPreKey: kyber, KyberPreKeySignature: d.PQPreKey.Signature,
	}
	if d.PreKey != nil {
		pk, err := protocol.ParsePublicKey(d.PreKey.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("one-time prekey: %w", err)
		}
		pb.PreKeyID, pb.PreKey = d.PreKey.KeyID, &pk
	}
	return pb, nil
}

// store returns the protocol's view of tx.
func (a *Account) store(tx *clientdb.Tx) *signalStore {
	return &signalStore{tx: tx, identity: *a.identity, regID: a.regID, mode: a.trust, now: a.now(), self: a.ID, device: a.DeviceID}
}
