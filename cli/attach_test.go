package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/parleyhq/parley/cli/attachment"
	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/store/sqlite"
)

// progressLog records what a Progress callback was told.
type progressLog struct {
	mu     sync.Mutex
	total  map[string]int64
	moved  map[string]int64
	closed int
}

func (p *progressLog) start(label string, total int64) io.WriteCloser {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.total == nil {
		p.total, p.moved = map[string]int64{}, map[string]int64{}
	}
	p.total[label] = total
	return &progressWriter{p, label}
}

type progressWriter struct {
	p     *progressLog
	label string
}

func (w *progressWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	w.p.moved[w.label] += int64(len(b))
	return len(b), nil
}

func (w *progressWriter) Close() error {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	w.p.closed++
	return nil
}

func writeFile(t *testing.T, dir, name string, n int) (string, []byte) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func receiveInto(t *testing.T, a *Account, dir string) []Event {
	t.Helper()
	var evs []Event
	err := a.Receive(context.Background(), ReceiveOptions{Timeout: 300e6, OutputDir: dir, Handle: func(e Event) {
		if e.Kind == "message" {
			evs = append(evs, e)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestAttachments: several files in one message, hostile names, progress,
// name clashes, one bucket per conversation whichever side sends first, and
// a blob altered in the relay's store is refused without writing a byte.
func TestAttachments(t *testing.T) {
	ctx := context.Background()
	server, data := startRelayIn(t)
	alice, bob := newAccount(t, server, 0), newAccount(t, server, 1)
	var progress progressLog
	alice.progress, bob.progress = progress.start, progress.start
	files := t.TempDir()
	dot, _ := writeFile(t, files, ".bashrc", 10)
	dotData := []byte{0, 1, 2, 3, 0xff, 0, 7, 8, 9, 0} // binary, so its sniffed type is fixed
	os.WriteFile(dot, dotData, 0o600)
	photo, photoData := writeFile(t, files, "photo.jpg", 300_000)

	if _, res, err := alice.Send(ctx, "", []string{dot, photo}, bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	out := t.TempDir()
	evs := receiveInto(t, bob, out)
	if len(evs) != 1 || len(evs[0].Attachments) != 2 {
		t.Fatalf("events %+v", evs)
	}
	for i, want := range []struct {
		name, saved, ctype string
		data               []byte
	}{{".bashrc", "bashrc", "application/octet-stream", dotData}, {"photo.jpg", "photo.jpg", "image/jpeg", photoData}} {
		a := evs[0].Attachments[i]
		got, err := os.ReadFile(a.Path)
		if err != nil || !bytes.Equal(got, want.data) || a.FileName != want.name || filepath.Base(a.Path) != want.saved || a.ContentType != want.ctype {
			t.Errorf("attachment %d: %+v, %v", i, a, err)
		}
		if fi, err := os.Stat(a.Path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", a.Path, fi.Mode())
		}
	}
	// Progress saw every byte of both uploads and both downloads.
	want := attachment.EncryptedSize(300_000)
	if progress.total["↑ photo.jpg"] != want || progress.moved["↑ photo.jpg"] != want ||
		progress.total["↓ photo.jpg"] != want || progress.moved["↓ photo.jpg"] != want || progress.closed != 4 {
		t.Errorf("progress: totals %v, moved %v, %d closed", progress.total, progress.moved, progress.closed)
	}

	// A second file of the same name does not overwrite the first.
	if _, res, err := alice.Send(ctx, "again", []string{photo}, bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	evs = receiveInto(t, bob, out)
	if len(evs) != 1 || filepath.Base(evs[0].Attachments[0].Path) != "photo (1).jpg" {
		t.Fatalf("second photo: %+v", evs)
	}

	// Bob's reply uses the bucket Alice created: one bucket for the chat.
	reply, _ := writeFile(t, files, "reply.txt", 1000)
	if _, res, err := bob.Send(ctx, "back", []string{reply}, alice.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	if evs := receiveInto(t, alice, t.TempDir()); len(evs) != 1 || evs[0].Attachments[0].Error != "" {
		t.Fatalf("reply: %+v", evs)
	}
	relayDB, err := sqlite.Open(ctx, filepath.Join(data, "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer relayDB.Close()
	if rows, _ := relayDB.DumpTable(ctx, "attachment_buckets"); len(rows) != 1 {
		t.Fatalf("%d buckets for one conversation", len(rows))
	}

	// Alter the stored blob of the next file: the receiver refuses it.
	before := map[string]bool{}
	filepath.WalkDir(filepath.Join(data, "attachments"), func(p string, _ os.DirEntry, _ error) error { before[p] = true; return nil })
	doc, _ := writeFile(t, files, "contract.pdf", 5000)
	if _, res, err := alice.Send(ctx, "sign this", []string{doc}, bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	var blob string
	filepath.WalkDir(filepath.Join(data, "attachments"), func(p string, de os.DirEntry, _ error) error {
		if !before[p] && !de.IsDir() {
			blob = p
		}
		return nil
	})
	b, _ := os.ReadFile(blob)
	b[100] ^= 1
	if err := os.WriteFile(blob, b, 0o600); err != nil {
		t.Fatal(err)
	}
	evs = receiveInto(t, bob, out)
	if len(evs) != 1 || evs[0].Text != "sign this" || evs[0].Attachments[0].Path != "" ||
		!strings.Contains(evs[0].Attachments[0].Error, "failed verification") {
		t.Fatalf("altered blob: %+v", evs)
	}
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "contract") || strings.HasPrefix(e.Name(), ".parley-download") {
			t.Errorf("refused attachment left %s", e.Name())
		}
	}
}

func TestSaveName(t *testing.T) {
	for in, want := range map[string]string{
		"report.pdf":         "report.pdf",
		"../../.ssh/id_rsa":  "id_rsa",
		"..":                 "attachment.png",
		".bashrc":            "bashrc",
		"a\x07b\nc.txt":      "a_b_c.txt",
		`C:\Windows\x.exe`:   "C:_Windows_x.exe",
		"":                   "attachment.png",
		"/":                  "attachment.png",
		"   .. .hidden":      "hidden",
		"ok name (1).tar.gz": "ok name (1).tar.gz",
	} {
		if got := saveName(content.Attachment{FileName: in, ContentType: "image/png"}); got != want {
			t.Errorf("saveName(%q) = %q, want %q", in, got, want)
		}
	}
}
