package main

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/parleyhq/parley/attachments"
	"github.com/parleyhq/parley/audit"
	"github.com/parleyhq/parley/store"
)

// purger deletes what outlived its retention: verification sessions,
// undelivered envelopes and idempotency receipts, attachment objects and
// deleted buckets, link codes and provisioning mailboxes, and audit
// entries past the audit retention.
type purger struct {
	db    *store.DB
	att   *attachments.Service
	audit *audit.Log
	log   *slog.Logger
}

// run purges once and returns the non-zero counts.
func (p purger) run(ctx context.Context) (map[string]string, error) {
	now := time.Now()
	counts := map[string]string{}
	count := func(name string, n int64) {
		if n > 0 {
			counts[name] = strconv.FormatInt(n, 10)
		}
	}
	var errs []error
	n, err := p.db.DeleteExpiredSessions(ctx, now)
	count("verification_sessions", n)
	errs = append(errs, err)
	var total int64
	for {
		n, err := p.db.PurgeExpired(ctx, now, 1000)
		total += int64(n)
		if err != nil || n < 1000 {
			errs = append(errs, err)
			break
		}
	}
	count("envelopes", total)
	links, err := p.db.PurgeLinking(ctx, now)
	count("link_codes_and_mailboxes", int64(links))
	errs = append(errs, err)
	objs, buckets, err := p.att.Sweep(ctx)
	count("attachment_objects", int64(objs))
	count("attachment_buckets", int64(buckets))
	errs = append(errs, err)
	through, err := p.audit.Purge(ctx)
	count("audit_entries_through_seq", through)
	errs = append(errs, err)
	return counts, errors.Join(errs...)
}

// sweep purges every interval, recording each purge that deleted
// something in the audit log.
func (p purger) sweep(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.audit.Flush(ctx, false); err != nil {
				p.log.Warn("write coalesced audit entries", "err", err)
			}
			counts, err := p.run(ctx)
			if err != nil {
				p.log.Warn("purge expired data", "err", err)
			}
			if len(counts) > 0 {
				p.log.Info("purged expired data", "counts", counts)
				_ = p.audit.Record(ctx, audit.RetentionPurged, "", 0, counts)
			}
		}
	}
}
