package cli

import (
	"context"
	"errors"
	"time"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/relayclient"
)

// keyCheckInterval throttles Maintain's questions to the relay.
const keyCheckInterval = time.Minute

// SeenRetention is how long the hashes of processed envelopes are kept to
// recognise redeliveries and replays: far longer than a relay keeps an
// unacknowledged envelope (30 days by default).
const SeenRetention = 90 * 24 * time.Hour

// Maintain tops up one-time prekeys when the relay reports fewer than its
// low-water mark, rotates the signed prekey every SignedPreKeyRotation,
// deletes replaced ones after SignedPreKeyGrace and forgets envelope hashes
// older than SeenRetention. New keys are stored only if the relay accepted
// them. Failures are logged and retried later.
func (a *Account) Maintain(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if now.Sub(a.maintained) < keyCheckInterval {
		return
	}
	a.maintained = now
	if err := a.SetupSealedSender(ctx); err != nil {
		a.log.WarnContext(ctx, "sealed sender not set up", "err", err)
		if errors.Is(err, ErrTrustRootChanged) && a.notice != nil {
			a.notice(err.Error() + "; messages are sent identified until this is resolved")
		}
	}
	if err := a.replaceKEMPreKeys(ctx); err != nil {
		a.log.WarnContext(ctx, "cannot replace the Kyber prekeys of before PQXDH", "err", err)
	}
	count, err := a.relay.CountKeys(ctx)
	if err != nil {
		a.log.WarnContext(ctx, "cannot count prekeys", "err", err)
		return
	}
	err = a.db.Update(ctx, func(tx *clientdb.Tx) error {
		if err := tx.ForgetSeen(ctx, now.Add(-SeenRetention).UnixMilli()); err != nil {
			return err
		}
		var up relayclient.KeyUpload
		var err error
		if count.EC < count.LowWater {
			if up.PreKeys, err = newPreKeys(ctx, tx, PreKeyBatch); err != nil {
				return err
			}
		}
		if count.PQ < count.LowWater {
			if up.PQPreKeys, err = newKEMPreKeys(ctx, tx, *a.identity, PreKeyBatch, false, now); err != nil {
				return err
			}
		}
		ids, created, err := tx.SignedPreKeyIDs(ctx)
		if err != nil {
			return err
		}
		if len(ids) == 0 || now.Sub(time.UnixMilli(created[len(created)-1])) >= SignedPreKeyRotation {
			last, err := tx.MaxKeyID(ctx, "signed_prekeys")
			if err != nil {
				return err
			}
			spk, err := newSignedPreKey(ctx, tx, *a.identity, nextID(last), now)
			if err != nil {
				return err
			}
			up.SignedPreKey = &spk
		}
		for i := range len(ids) - 1 { // never the newest stored one
			if now.Sub(time.UnixMilli(created[i])) >= SignedPreKeyGrace {
				if err := tx.DeleteSignedPreKey(ctx, ids[i]); err != nil {
					return err
				}
			}
		}
		if up.PreKeys == nil && up.PQPreKeys == nil && up.SignedPreKey == nil {
			return nil
		}
		a.log.InfoContext(ctx, "uploading prekeys", "ec", len(up.PreKeys), "pq", len(up.PQPreKeys), "signed", up.SignedPreKey != nil)
		return a.relay.UploadKeys(ctx, up)
	})
	if err != nil {
		a.log.WarnContext(ctx, "prekey maintenance failed", "err", err)
	}
}

// replaceKEMPreKeys publishes, after a store upgrade, a new last-resort
// Kyber prekey and pool in place of the ML-KEM keys parley published
// before PQXDH, which no peer can use; until it succeeds, peers that fetch
// our bundle encrypt to keys we cannot open. It runs in its own request,
// so a relay from before replace_pq_prekeys (which refuses the member)
// blocks nothing else; the caller holds a.mu.
func (a *Account) replaceKEMPreKeys(ctx context.Context) error {
	return a.db.Update(ctx, func(tx *clientdb.Tx) error {
		_, err := tx.Value(ctx, metaKEMReplace)
		if errors.Is(err, clientdb.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		old, err := tx.MaxKeyID(ctx, "kem_prekeys")
		if err != nil {
			return err
		}
		now := a.now()
		lr, err := newKEMPreKeys(ctx, tx, *a.identity, 1, true, now)
		if err != nil {
			return err
		}
		up := relayclient.KeyUpload{PQLastResortKey: &lr[0], ReplacePQPreKeys: true}
		if up.PQPreKeys, err = newKEMPreKeys(ctx, tx, *a.identity, PreKeyBatch, false, now); err != nil {
			return err
		}
		if err := errors.Join(tx.DeleteKEMPreKeysUpTo(ctx, old), tx.DeleteValue(ctx, metaKEMReplace)); err != nil {
			return err
		}
		a.log.InfoContext(ctx, "replacing the Kyber prekeys of before PQXDH", "pq", len(up.PQPreKeys))
		return a.relay.UploadKeys(ctx, up)
	})
}
