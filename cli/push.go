package cli

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"fmt"
	"net/url"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/relayclient"
)

// metaWebPushKey is this device's Web Push private key (sealed): the
// relay's wake-ups are encrypted to its public half.
const metaWebPushKey = "webpush_private"

// SetWebPush has the relay wake this device through a Web Push endpoint
// (the URL a UnifiedPush distributor or push server gave it) when
// envelopes wait and it is not connected: a bot behind a self-hosted push
// server then runs `receive`. The device's P-256 key and auth secret are
// made here and kept; a wake-up carries nothing about the message.
func (a *Account) SetWebPush(ctx context.Context, endpoint string) error {
	if err := a.requireRegistered(); err != nil {
		return err
	}
	if u, err := url.Parse(endpoint); err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%w: a Web Push endpoint is an https:// URL", ErrUsage)
	}
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	auth := make([]byte, 16)
	rand.Read(auth)
	if err := a.relay.SetPushTarget(ctx, relayclient.PushTarget{Kind: "webpush", Endpoint: endpoint, P256DH: k.PublicKey().Bytes(), Auth: auth}); err != nil {
		return err
	}
	return local(a.db.Update(ctx, func(tx *clientdb.Tx) error {
		return tx.SetValue(ctx, metaWebPushKey, append(k.Bytes(), auth...), true)
	}))
}

// RemovePush stops the relay's wake-ups of this device.
func (a *Account) RemovePush(ctx context.Context) error {
	if err := a.requireRegistered(); err != nil {
		return err
	}
	if err := a.relay.RemovePushTarget(ctx); err != nil {
		return err
	}
	return local(a.db.Update(ctx, func(tx *clientdb.Tx) error { return tx.DeleteValue(ctx, metaWebPushKey) }))
}
