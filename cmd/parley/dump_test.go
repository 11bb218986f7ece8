package main_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/parleyhq/parley/bench"
	"github.com/parleyhq/parley/store"
	"github.com/parleyhq/parley/store/postgres"
	"github.com/parleyhq/parley/store/postgres/pgtest"
	"github.com/parleyhq/parley/store/sqlite"
)

// ipAddress finds dotted IPv4 addresses and the loopback in IPv6 form.
var ipAddress = regexp.MustCompile(`\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b|::1\b`)

// TestDatabaseDump runs a scripted conversation (1:1 messages, an
// attachment, a group, a disappearing-message timer) through real clients
// and relay, then dumps every table of the relay's database: no phone
// number (in any common spelling), client IP address, message text, file
// name or file content may appear anywhere, and sealed envelopes have no
// source.
func TestDatabaseDump(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			sealedFlags, _ := sealedSenderFiles(t)
			args := append([]string{"--data-dir", data}, sealedFlags...)
			dsn := ""
			if backend == "postgres" {
				dsn = pgtest.Database(t)
				secret := filepath.Join(dir, "root.key")
				if out, err := execOut(parleydBin, "init-secret", secret); err != nil {
					t.Fatalf("init-secret: %v %s", err, out)
				}
				args = append(args, "--database-url", dsn, "--secret-file", secret)
			}
			srv, err := bench.Spawn(parleydBin, dir, 10, code, nil, args...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Stop() })
			alice, bob, carol := newUser(t, srv.Base, 3), newUser(t, srv.Base, 4), newUser(t, srv.Base, 5)
			for _, u := range []*user{alice, bob, carol} {
				u.register()
			}
			secrets := []string{"the patient in bed four", "results are back", "ward round at nine", "discharge summary"}
			file := filepath.Join(t.TempDir(), "labresults-jdoe.pdf")
			fileData := []byte("HbA1c 7.2% for John Doe, DOB 1961-04-02, MRN 0042")
			os.WriteFile(file, fileData, 0o600)

			alice.ok("send", "-m", secrets[0], bob.number)
			bob.receive()
			bob.ok("send", "-m", secrets[1], "-a", file, alice.number)
			alice.ok("receive", "--json", "--timeout", "0.5", "--output", t.TempDir())
			alice.ok("updateContact", bob.number, "-e", "3600")
			m := createdGroup.FindStringSubmatch(alice.ok("updateGroup", "-n", "Cardiology night team", "-m", bob.number, "-m", carol.number))
			if m == nil {
				t.Fatal("no group")
			}
			alice.ok("send", "-g", m[1], "-m", secrets[2])
			carol.receive() // leaves Bob's copy queued, so queued ciphertext is in the dump too
			alice.ok("send", "-m", secrets[3], bob.number)

			var db *store.DB
			if dsn != "" {
				db, err = postgres.Open(context.Background(), dsn)
			} else {
				db, err = sqlite.Open(context.Background(), filepath.Join(data, "parley.db"))
			}
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			all, err := db.SchemaTables(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, tbl := range all {
				if tbl != "schema_migrations" && !slices.Contains(db.Tables(), tbl) {
					t.Errorf("table %s is not in store.Tables(), so audits would not see it", tbl)
				}
			}
			var forbidden [][]byte
			for _, u := range []*user{alice, bob, carol} {
				n := u.number
				forbidden = append(forbidden, []byte(n), []byte(n[1:]), []byte(n[2:])) // +E164, E164, national-ish
			}
			for _, s := range append(secrets, "Cardiology night team", "labresults-jdoe", string(fileData[:20])) {
				forbidden = append(forbidden, []byte(s))
			}
			rows, sealed := 0, 0
			for _, tbl := range db.Tables() {
				dump, err := db.DumpTable(ctx, tbl)
				if err != nil {
					t.Fatal(err)
				}
				for _, row := range dump {
					rows++
					if tbl == "envelopes" && fmt.Sprint(row["type"]) == "6" {
						// Sealed: the relay keeps no sender for it.
						sealed++
						if row["source_account"] != nil || row["source_device"] != nil {
							t.Errorf("a sealed envelope stored with source %v.%v", row["source_account"], row["source_device"])
						}
					}
					for col, v := range row {
						var b []byte
						switch x := v.(type) {
						case []byte:
							b = x
						case string:
							b = []byte(x)
						default:
							b = []byte(fmt.Sprint(x))
						}
						for _, f := range forbidden {
							if bytes.Contains(b, f) {
								t.Errorf("%s.%s holds %q", tbl, col, f)
							}
						}
						if ip := ipAddress.Find(b); ip != nil && !strings.Contains(col, "hash") && !strings.Contains(col, "mac") &&
							col != "content" && col != "public_key" && col != "signature" && col != "member_hash" && col != "admin_hash" && col != "credential" {
							t.Errorf("%s.%s holds what looks like an IP address: %q", tbl, col, ip)
						}
					}
				}
			}
			if rows < 20 {
				t.Fatalf("only %d rows dumped; the conversation did not reach the database?", rows)
			}
			if sealed == 0 {
				t.Error("no sealed envelope queued: the last message to bob should have gone sealed")
			}
		})
	}
}

func execOut(bin string, args ...string) ([]byte, error) {
	return exec.Command(bin, args...).CombinedOutput()
}
