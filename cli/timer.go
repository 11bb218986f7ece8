package cli

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/content"
)

// timer returns a conversation's disappearing-message timer in seconds.
func (a *Account) timer(ctx context.Context, conversation string) (int64, error) {
	var t int64
	err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		t, err = tx.Timer(ctx, conversation)
		return err
	})
	return t, local(err)
}

// SetTimer sets the disappearing-message timer of the conversation with
// number (0 turns it off) and tells the other side in an encrypted
// message, so both agree. The relay holds later messages only that long,
// and the conversation's attachment bucket gets the same retention.
func (a *Account) SetTimer(ctx context.Context, number string, seconds int64) error {
	if err := a.requireRegistered(); err != nil {
		return err
	}
	if seconds < 0 || seconds > content.MaxExpireTimer || (seconds > 0 && seconds < MinTimer) {
		return fmt.Errorf("%w: the timer must be 0 (off) or %d to %d seconds", ErrUsage, MinTimer, content.MaxExpireTimer)
	}
	r, err := a.resolve(ctx, number)
	if err != nil {
		return err
	}
	if err := a.db.Update(ctx, func(tx *clientdb.Tx) error {
		_, err := tx.SetTimer(ctx, r.Account, seconds)
		return err
	}); err != nil {
		return local(err)
	}
	if err := a.matchBucketRetention(ctx, r.Account, seconds); err != nil {
		return err
	}
	c := &content.Content{Timestamp: a.now().UnixMilli(), ExpireTimer: seconds, TimerUpdate: true}
	body, err := a.marshal(c)
	if err != nil {
		return err
	}
	if err := a.deliver(ctx, r, c.Timestamp, body, seconds, false); err != nil { // the notice stays, as the receiver's does
		return err
	}
	a.syncSentOrLog(ctx, r, c, seconds)
	return nil
}

// MinTimer is the shortest disappearing-message timer, the shortest
// retention the relay gives an attachment bucket.
const MinTimer = 5

// matchBucketRetention makes the conversation's bucket keep objects only
// as long as its messages live (the relay's default when the timer is off).
func (a *Account) matchBucketRetention(ctx context.Context, conversation string, seconds int64) error {
	var b clientdb.Bucket
	err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		b, err = tx.Bucket(ctx, conversation)
		return err
	})
	switch {
	case errors.Is(err, clientdb.ErrNotFound):
		return nil // created with the right retention when the first file is sent
	case err != nil:
		return local(err)
	}
	if _, err := a.relay.SetBucketRetention(ctx, b.ID, b.AdminSecret, seconds); err != nil {
		return fmt.Errorf("set the attachment bucket's retention: %w", err)
	}
	return nil
}

// expire deletes messages whose timer ran out, and the files saved for
// them. Failures are logged: the next call tries again.
func (a *Account) expire(ctx context.Context) {
	var files []string
	var n int
	err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		n, files, err = tx.ExpireMessages(ctx, a.now().UnixMilli())
		return err
	})
	if err != nil {
		a.log.WarnContext(ctx, "cannot delete expired messages", "err", err)
		return
	}
	for _, f := range files {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			a.log.WarnContext(ctx, "cannot delete an expired message's file", "path", f, "err", err)
		}
	}
	if n > 0 {
		a.log.DebugContext(ctx, "disappeared messages deleted", "messages", n, "files", len(files))
	}
}
