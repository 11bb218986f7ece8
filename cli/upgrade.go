package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/protocol"
)

// Store formats. A store without metaProtocol was written by a parley that
// spoke X3DH through go.mau.fi/libsignal: sessions of protocol version 3,
// prekey records as that library's JSON, ML-KEM keys labelled as Kyber,
// sender keys in the old layout.
const (
	metaProtocol = "protocol"
	// protocolPQXDH marks records in the protocol package's formats.
	protocolPQXDH = "pqxdh-v4"
	// metaKEMReplace is set while the relay still holds Kyber prekeys this
	// device cannot use (the ML-KEM ones of before): Maintain uploads new
	// ones in place of all of them.
	metaKEMReplace = "kem_prekeys_replace"
)

// upgradeStore brings a store written before PQXDH to today's formats, in
// the transaction that opens the account. Version-3 sessions cannot
// continue: they are dropped, and new ones are built on the next send.
// One-time and signed EC prekeys keep working (their private keys are
// converted); the Kyber prekeys were ML-KEM keys no peer can use, so they
// are replaced on the relay (replaceKEMPreKeys) before the next send or
// receive, under ids that continue after theirs; sender keys are
// redistributed. Nothing
// else (contacts, trust, history, groups, buckets) changes. It returns a
// notice for the user, or "" when there was nothing to upgrade.
func upgradeStore(ctx context.Context, tx *clientdb.Tx, registered bool) (string, error) {
	v, err := tx.Value(ctx, metaProtocol)
	if err == nil && string(v) == protocolPQXDH {
		return "", nil
	}
	if err != nil && !errors.Is(err, clientdb.ErrNotFound) {
		return "", err
	}
	if !registered {
		return "", tx.SetValue(ctx, metaProtocol, []byte(protocolPQXDH), false)
	}
	sessions, err := tx.CountSessions(ctx)
	if err != nil {
		return "", err
	}
	if err := tx.DeleteSessions(ctx, "", true); err != nil {
		return "", err
	}
	if err := convertLegacyPreKeys(ctx, tx); err != nil {
		return "", err
	}
	if err := tx.DeleteAllSenderKeys(ctx); err != nil {
		return "", err
	}
	if err := errors.Join(tx.SetValue(ctx, metaKEMReplace, []byte("1"), false),
		tx.SetValue(ctx, metaProtocol, []byte(protocolPQXDH), false)); err != nil {
		return "", err
	}
	return fmt.Sprintf("this account's store was upgraded to the current Signal protocol (PQXDH): "+
		"%d session(s) of the old protocol (X3DH) were dropped and new ones are built on the next send; "+
		"contacts on a parley from before the upgrade must upgrade too", sessions), nil
}

// legacyKeyRecord is the JSON go.mau.fi/libsignal stored for EC prekeys and
// signed prekeys.
type legacyKeyRecord struct {
	PrivateKey []byte
	Signature  []byte
}

// convertLegacyPreKeys rewrites one-time and signed EC prekeys from
// go.mau.fi's JSON records to private keys (and signatures); a record that
// does not convert is dropped.
func convertLegacyPreKeys(ctx context.Context, tx *clientdb.Tx) error {
	ids, err := tx.KeyIDs(ctx, "prekeys")
	if err != nil {
		return err
	}
	for _, id := range ids {
		b, err := tx.PreKey(ctx, id)
		if err != nil {
			return err
		}
		var r legacyKeyRecord
		if json.Unmarshal(b, &r) != nil || len(r.PrivateKey) != protocol.PrivateKeySize {
			err = tx.DeletePreKey(ctx, id)
		} else {
			err = tx.PutPreKey(ctx, id, r.PrivateKey)
		}
		if err != nil {
			return err
		}
	}
	signed, created, err := tx.SignedPreKeyIDs(ctx)
	if err != nil {
		return err
	}
	for i, id := range signed {
		b, err := tx.SignedPreKey(ctx, id)
		if err != nil {
			return err
		}
		var r legacyKeyRecord
		if json.Unmarshal(b, &r) != nil || len(r.PrivateKey) != protocol.PrivateKeySize || len(r.Signature) != protocol.SignatureSize {
			err = tx.DeleteSignedPreKey(ctx, id)
		} else {
			err = tx.PutSignedPreKey(ctx, id, created[i], append(r.PrivateKey, r.Signature...))
		}
		if err != nil {
			return err
		}
	}
	return nil
}
