package storetest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/provisioning"
	"github.com/parleyhq/parley/store"
	"github.com/parleyhq/parley/wire"
)

var linkingTests = []struct {
	name string
	f    func(*testing.T, *store.DB)
}{
	{"LinkCodes", testLinkCodes},
	{"ProvisioningMailboxes", testMailboxes},
	{"ConcurrentLinks", testConcurrentLinks},
}

// testConcurrentLinks links devices with several codes at once: each link
// gets its own id or a clear refusal past the limit, never a storage error.
func testConcurrentLinks(t *testing.T, db *store.DB) {
	ctx := context.Background()
	alice, reg := register(t, db, 0)
	const links, maxDevices = 8, 6
	codes := make([][]byte, links)
	for i := range codes {
		codes[i] = random(32)
		if err := db.CreateLinkCode(ctx, codes[i], alice, now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ids := map[int]bool{}
	for _, code := range codes {
		wg.Go(func() {
			id, err := db.LinkDevice(ctx, code, alice, reg.Device, now, maxDevices)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				if ids[id] {
					t.Errorf("device id %d handed out twice", id)
				}
				ids[id] = true
			case !errors.Is(err, accounts.ErrTooManyDevices):
				t.Errorf("link: %v", err)
			}
		})
	}
	wg.Wait()
	if devs, _ := db.Devices(ctx, alice); len(devs) != maxDevices || len(ids) != maxDevices-1 {
		t.Errorf("%d parallel links, limit %d: %d linked, account has %d devices", links, maxDevices, len(ids), len(devs))
	}
}

func testLinkCodes(t *testing.T, db *store.DB) {
	ctx := context.Background()
	alice, reg := register(t, db, 0)
	bob, _ := register(t, db, 0)
	code := random(32)
	if err := db.CreateLinkCode(ctx, code, alice, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		account uuid.UUID
		at      time.Time
		want    bool
	}{{alice, now, true}, {bob, now, false}, {alice, now.Add(time.Minute), false}} {
		if ok, err := db.LinkCodeValid(ctx, code, c.account, c.at); err != nil || ok != c.want {
			t.Errorf("LinkCodeValid(%v, %v) = %v, %v; want %v", c.account, c.at, ok, err, c.want)
		}
	}
	dev := reg.Device
	if _, err := db.LinkDevice(ctx, code, bob, dev, now, 6); !errors.Is(err, accounts.ErrBadLinkCode) {
		t.Fatalf("alice's code for bob: %v", err)
	}
	// A failed attempt (wrong account) rolled back: the code still works.
	id, err := db.LinkDevice(ctx, code, alice, dev, now, 6)
	if err != nil || id != 2 {
		t.Fatalf("link = %d, %v", id, err)
	}
	if _, err := db.LinkDevice(ctx, code, alice, dev, now, 6); !errors.Is(err, accounts.ErrBadLinkCode) {
		t.Fatalf("code used twice: %v", err)
	}
	late := random(32)
	db.CreateLinkCode(ctx, late, alice, now.Add(time.Minute))
	if _, err := db.LinkDevice(ctx, late, alice, dev, now.Add(time.Minute), 6); !errors.Is(err, accounts.ErrBadLinkCode) {
		t.Fatalf("expired code: %v", err)
	}
	full := random(32)
	db.CreateLinkCode(ctx, full, alice, now.Add(time.Minute))
	if _, err := db.LinkDevice(ctx, full, alice, dev, now, 2); !errors.Is(err, accounts.ErrTooManyDevices) {
		t.Fatalf("past the device limit: %v", err)
	}
	// The refused link rolled back: the code still works.
	if id, err := db.LinkDevice(ctx, full, alice, dev, now, 6); err != nil || id != 3 {
		t.Fatalf("link after a refusal = %d, %v", id, err)
	}
	if devs, _ := db.Devices(ctx, alice); len(devs) != 3 {
		t.Fatalf("%d devices", len(devs))
	}
	if n, err := db.PurgeLinking(ctx, now.Add(time.Hour)); err != nil || n != 1 { // the expired code
		t.Fatalf("purge = %d, %v", n, err)
	}
}

func testMailboxes(t *testing.T, db *store.DB) {
	ctx := context.Background()
	box := random(32)
	if err := db.DeliverToMailbox(ctx, box, []byte("x"), now); !errors.Is(err, provisioning.ErrNoMailbox) {
		t.Fatalf("deliver before open: %v", err)
	}
	if err := db.OpenMailbox(ctx, box, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if body, err := db.MailboxBody(ctx, box); err != nil || body != nil {
		t.Fatalf("empty mailbox: %q, %v", body, err)
	}
	if err := db.DeliverToMailbox(ctx, box, []byte("sealed"), now.Add(time.Minute)); !errors.Is(err, provisioning.ErrNoMailbox) {
		t.Fatalf("deliver after expiry: %v", err)
	}
	if err := db.DeliverToMailbox(ctx, box, []byte("sealed"), now); err != nil {
		t.Fatal(err)
	}
	if err := db.DeliverToMailbox(ctx, box, []byte("again"), now); !errors.Is(err, provisioning.ErrNoMailbox) {
		t.Fatalf("second delivery: %v", err)
	}
	if body, err := db.MailboxBody(ctx, box); err != nil || !bytes.Equal(body, []byte("sealed")) {
		t.Fatalf("body = %q, %v", body, err)
	}
	if err := db.CloseMailbox(ctx, box); err != nil {
		t.Fatal(err)
	}
	if _, err := db.MailboxBody(ctx, box); !errors.Is(err, provisioning.ErrNoMailbox) {
		t.Fatalf("closed mailbox: %v", err)
	}
	// The largest message the relay accepts fits the table.
	big := random(wire.MaxProvisioningBody)
	if err := db.OpenMailbox(ctx, box, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := db.DeliverToMailbox(ctx, box, big, now); err != nil {
		t.Fatalf("deliver %d bytes: %v", len(big), err)
	}
	if body, err := db.MailboxBody(ctx, box); err != nil || !bytes.Equal(body, big) {
		t.Fatalf("big body: %d bytes, %v", len(body), err)
	}
}
