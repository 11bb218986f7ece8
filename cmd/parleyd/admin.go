package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/attachments"
	"github.com/parleyhq/parley/audit"
	"github.com/parleyhq/parley/secrets"
)

const adminUsage = `Usage: parleyd admin COMMAND [ARGS] [flags: the same database and secret flags as serve]

Commands:
  audit export [--after SEQ]     the audit log as JSON lines
  audit verify [--expect-head SEQ:MAC]
                                 check the audit log's chain; exit 1 if it was altered,
                                 3 if the root secret is not the one it was written with.
                                 --expect-head: a head from an "audit checkpoint" line of
                                 the server log; fails if the log now ends before it or
                                 holds a different entry there (entries cut from the end)
  revoke-device ACCOUNT DEVICE   remove a linked device (its credential stops working)
  delete-account ACCOUNT         delete an account with its devices, keys and queued messages
  config                         the effective configuration, secrets redacted
  purge                          delete expired data now (the sweeper does it every --sweep-interval)
  backup FILE                    a consistent copy of the embedded (SQLite) database, taken
                                 while the relay serves; back up root.key (and the attachments
                                 directory) with it. PostgreSQL: pg_dump (deploy/README.md)
`

// admin runs an operator command against the relay's database. Actions
// that change something are recorded in the audit log.
func admin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cmd, pos []string
	for i, a := range args {
		if strings.HasPrefix(a, "-") {
			pos = args[i:]
			break
		}
		cmd = append(cmd, a)
	}
	if len(cmd) == 0 {
		fmt.Fprint(stderr, adminUsage)
		return 2
	}
	fs := flag.NewFlagSet("parleyd admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	load := serveFlags(fs)
	after := fs.Int64("after", 0, "audit export: only entries after this sequence number")
	expectHead := fs.String("expect-head", "", "audit verify: fail unless the log still holds this head (SEQ:MAC) of an \"audit checkpoint\" line")
	if err := fs.Parse(pos); err != nil {
		return 2
	}
	cfg, err := load()
	if err != nil {
		fmt.Fprintf(stderr, "parleyd: invalid configuration:\n%v\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	if cmd[0] == "config" {
		return printConfig(fs, stdout)
	}
	var head *audit.Head
	if *expectHead != "" {
		h, err := audit.ParseHead(*expectHead)
		if err != nil {
			fmt.Fprintf(stderr, "parleyd admin: --expect-head: %v\n", err)
			return 2
		}
		head = &h
	}
	root, err := secrets.Load(cfg.SecretFile)
	if err != nil {
		fmt.Fprintf(stderr, "parleyd admin: %v\n", err)
		return 1
	}
	db, err := openStore(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "parleyd admin: %v\n", err)
		return 1
	}
	defer db.Close()
	auditLog, err := audit.New(db, root.Derive("audit log"), cfg.AuditRetention, log)
	if err != nil {
		fmt.Fprintf(stderr, "parleyd admin: %v\n", err)
		return 1
	}
	var att *attachments.Service
	if len(cmd) == 1 && cmd[0] == "purge" {
		if att, err = newAttachments(ctx, cfg, db, root, log); err != nil {
			fmt.Fprintf(stderr, "parleyd admin: %v\n", err)
			return 1
		}
	}
	p := purger{db: db, att: att, audit: auditLog, log: log}
	if err := runAdmin(ctx, cmd, adminOptions{after: *after, head: head}, p, stdout); err != nil {
		fmt.Fprintf(stderr, "parleyd admin: %v\n", err)
		switch {
		case errors.Is(err, errUsage):
			fmt.Fprint(stderr, adminUsage)
			return 2
		case errors.Is(err, audit.ErrWrongKey):
			return 3
		}
		return 1
	}
	return 0
}

var errUsage = errors.New("wrong arguments")

// adminOptions are the admin commands' own flags.
type adminOptions struct {
	after int64       // audit export --after
	head  *audit.Head // audit verify --expect-head
}

func runAdmin(ctx context.Context, cmd []string, o adminOptions, p purger, stdout io.Writer) error {
	db, l := p.db, p.audit
	if len(cmd) == 0 || cmd[0] != "audit" {
		// Every other command changes something and records it: refuse a
		// root secret the audit log was not written with, before acting.
		if err := l.CheckKey(ctx); err != nil {
			return err
		}
	}
	switch {
	case len(cmd) == 2 && cmd[0] == "audit" && cmd[1] == "export":
		enc := json.NewEncoder(stdout)
		return l.Export(ctx, o.after, func(e audit.Entry) error { return enc.Encode(e) })
	case len(cmd) == 2 && cmd[0] == "audit" && cmd[1] == "verify":
		n, first, last, err := l.Verify(ctx)
		if o.head != nil {
			n, first, last, err = l.VerifyAgainst(ctx, *o.head)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "audit log verified: %d entries, %d to %d\n", n, first, last)
		if o.head != nil {
			fmt.Fprintf(stdout, "it still holds checkpoint %s\n", o.head)
		}
		return nil
	case len(cmd) == 3 && cmd[0] == "revoke-device":
		account, err := uuid.Parse(cmd[1])
		device, derr := strconv.Atoi(cmd[2])
		if err != nil || derr != nil || device < 1 {
			return fmt.Errorf("%w: revoke-device ACCOUNT_ID DEVICE_ID", errUsage)
		}
		if device == accounts.PrimaryDevice {
			return errors.New("the primary device cannot be revoked alone; use delete-account")
		}
		if err := db.RemoveDevice(ctx, account, device); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "device %d of %s revoked\n", device, account)
		return l.Record(ctx, audit.AdminDeviceRevoked, account.String(), device, nil)
	case len(cmd) == 2 && cmd[0] == "delete-account":
		account, err := uuid.Parse(cmd[1])
		if err != nil {
			return fmt.Errorf("%w: delete-account ACCOUNT_ID", errUsage)
		}
		if err := db.DeleteAccount(ctx, account); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "account %s deleted\n", account)
		return l.Record(ctx, audit.AdminAccountDeleted, account.String(), 0, nil)
	case len(cmd) == 2 && cmd[0] == "backup":
		if err := db.Backup(ctx, cmd[1]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "backup written to %s\n", cmd[1])
		return l.Record(ctx, audit.AdminBackup, "", 0, nil)
	case len(cmd) == 1 && cmd[0] == "purge":
		counts, err := p.run(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, purgeSummary(counts))
		return l.Record(ctx, audit.AdminPurge, "", 0, counts)
	}
	return fmt.Errorf("%w: %s", errUsage, strings.Join(cmd, " "))
}

// printConfig prints every setting's effective value (flags over
// environment over defaults) as JSON, secrets redacted.
func printConfig(fs *flag.FlagSet, w io.Writer) int {
	out := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "after" || f.Name == "expect-head" {
			return
		}
		v := f.Value.String()
		if redacted(f.Name) && v != "" {
			v = "(redacted)"
		}
		out["--"+f.Name] = v
	})
	if os.Getenv("PARLEY_TWILIO_AUTH_TOKEN") != "" {
		out["PARLEY_TWILIO_AUTH_TOKEN"] = "(redacted)"
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return 1
	}
	return 0
}

// redacted reports whether a setting holds a secret: a database URL may
// carry a password, test numbers carry their codes.
func redacted(flagName string) bool {
	switch flagName {
	case "database-url", "test-number":
		return true
	}
	return false
}

// purgeSummary is what `parleyd admin purge` prints: "purged nothing", or
// each kind of row with its count, sorted ("purged: envelopes 3, …").
func purgeSummary(counts map[string]string) string {
	if len(counts) == 0 {
		return "purged nothing"
	}
	parts := make([]string, 0, len(counts))
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, k+" "+counts[k])
	}
	return "purged: " + strings.Join(parts, ", ")
}
