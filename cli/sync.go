package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/content"
)

// ownDevicesTTL is how long the list of our other devices is trusted
// before it is fetched again (a 409 from the relay corrects it sooner).
const ownDevicesTTL = time.Minute

// otherDevices returns this account's other devices.
func (a *Account) otherDevices(ctx context.Context) ([]int, error) {
	if !a.ownDevicesAt.IsZero() && a.now().Sub(a.ownDevicesAt) < ownDevicesTTL {
		return a.ownDevices, nil
	}
	devs, err := a.relay.Devices(ctx)
	if err != nil {
		return nil, err
	}
	a.ownDevices = a.ownDevices[:0]
	for _, d := range devs {
		if d.DeviceID != a.DeviceID {
			a.ownDevices = append(a.ownDevices, d.DeviceID)
		}
	}
	a.ownDevicesAt = a.now()
	return a.ownDevices, nil
}

// syncSent copies a message we sent to dest to our other devices, so the
// conversation appears on all of them.
func (a *Account) syncSent(ctx context.Context, dest clientdb.Recipient, m *content.Content, timer int64) error {
	others, err := a.otherDevices(ctx)
	if err != nil || len(others) == 0 {
		return err
	}
	self := clientdb.Recipient{Account: a.ID, Number: a.Number}
	if err := a.sessionsWith(ctx, self, others); err != nil {
		return err
	}
	body, err := a.marshal(&content.Content{Timestamp: m.Timestamp,
		SyncSent: &content.SyncSent{Destination: dest.Account, DestinationNumber: dest.Number, Message: m}})
	if err != nil {
		return err
	}
	return a.sendPlaintext(ctx, self, body, sendOpts{Timestamp: m.Timestamp, ExpiresIn: timer})
}

// syncSentOrLog is syncSent for a message that already went out: a
// failure to copy it is logged, not returned.
func (a *Account) syncSentOrLog(ctx context.Context, dest clientdb.Recipient, m *content.Content, timer int64) {
	if err := a.syncSent(ctx, dest, m, timer); err != nil {
		a.log.WarnContext(ctx, "sent message not copied to this account's other devices", "err", err)
	}
}

// applySent records a copy of a message one of our other devices sent.
func (a *Account) applySent(ctx context.Context, tx *clientdb.Tx, ev *Event, s *content.SyncSent, sourceDevice int) error {
	if ev.SenderAccount != a.ID {
		return fmt.Errorf("%w: a sent-message copy from another account", ErrBadEnvelope)
	}
	m := s.Message
	ev.DestinationAccount, ev.Destination = s.Destination, s.DestinationNumber
	ev.Text, ev.ExpireTimer, ev.Timestamp = m.Text, m.ExpireTimer, m.Timestamp
	// Our own device vouches for the number, so it is recorded as known.
	if s.DestinationNumber != "" {
		if _, err := tx.Recipient(ctx, s.Destination); errors.Is(err, clientdb.ErrNotFound) {
			if _, err := tx.RecipientByNumber(ctx, s.DestinationNumber); errors.Is(err, clientdb.ErrNotFound) {
				if err := tx.PutRecipient(ctx, clientdb.Recipient{Account: s.Destination, Number: s.DestinationNumber}); err != nil {
					return local(err)
				}
			}
		}
	}
	if _, err := tx.SetTimer(ctx, s.Destination, m.ExpireTimer); err != nil {
		return local(err)
	}
	if err := adoptGrant(ctx, tx, s.Destination, m.Bucket); err != nil {
		return local(err)
	}
	body, err := content.Marshal(m)
	if err != nil {
		return err
	}
	return local(a.record(ctx, tx, ev, s.Destination, true, sourceDevice, m, body, !m.TimerUpdate))
}

// sessionsWith starts sessions with those devices of r that have none, one
// bundle each (fetching every device's bundle of our own account would use
// up one of our own one-time prekeys).
func (a *Account) sessionsWith(ctx context.Context, r clientdb.Recipient, devices []int) error {
	var have []int
	if err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		have, err = tx.SessionDevices(ctx, r.Account)
		return err
	}); err != nil {
		return local(err)
	}
	for _, d := range devices {
		if !slices.Contains(have, d) {
			if err := a.startSessions(ctx, r, d); err != nil {
				return err
			}
		}
	}
	return nil
}
