package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/parleyhq/parley/cli/attachment"
	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/cli/relayclient"
)

// SavedAttachment is a received file: where it was saved, or why not.
type SavedAttachment struct {
	FileName    string `json:"file_name,omitzero"` // as the sender named it
	ContentType string `json:"content_type,omitzero"`
	Size        int64  `json:"size"`
	Path        string `json:"path,omitzero"`
	Error       string `json:"error,omitzero"`
}

// outgoingFile is a file about to be sent.
type outgoingFile struct {
	path, name, contentType string
	size                    int64
}

// checkFiles stats every file before anything is sent, so a typo sends
// nothing.
func checkFiles(paths []string) ([]outgoingFile, error) {
	if len(paths) > content.MaxAttachments {
		return nil, fmt.Errorf("%w: at most %d attachments per message", ErrUsage, content.MaxAttachments)
	}
	files := make([]outgoingFile, len(paths))
	for i, p := range paths {
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w: attachment: %v", ErrUsage, err)
		case !fi.Mode().IsRegular():
			return nil, fmt.Errorf("%w: attachment %s is not a regular file", ErrUsage, p)
		}
		files[i] = outgoingFile{path: p, name: filepath.Base(p), size: fi.Size(), contentType: contentType(p)}
	}
	return files, nil
}

// contentType guesses a file's type from its extension, then its first
// bytes.
func contentType(path string) string {
	if t := mime.TypeByExtension(filepath.Ext(path)); t != "" {
		return t
	}
	f, err := os.Open(path)
	if err != nil {
		return "application/octet-stream"
	}
	defer f.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	return http.DetectContentType(head[:n])
}

// conversationBucket returns the conversation's bucket, creating one on
// the relay the first time a file is sent in it.
func (a *Account) conversationBucket(ctx context.Context, conversation string) (clientdb.Bucket, error) {
	var b clientdb.Bucket
	err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		b, err = tx.Bucket(ctx, conversation)
		return err
	})
	if !errors.Is(err, clientdb.ErrNotFound) {
		return b, local(err)
	}
	b.MemberSecret, b.AdminSecret = make([]byte, 32), make([]byte, 32)
	rand.Read(b.MemberSecret)
	rand.Read(b.AdminSecret)
	timer, err := a.timer(ctx, conversation)
	if err != nil {
		return b, err
	}
	info, err := a.relay.CreateBucket(ctx, b.MemberSecret, b.AdminSecret, timer)
	if err != nil {
		return b, fmt.Errorf("create the conversation's attachment bucket: %w", err)
	}
	b.ID = info.BucketID
	err = a.db.Update(ctx, func(tx *clientdb.Tx) error {
		adopted, err := tx.AdoptBucket(ctx, conversation, b)
		if err == nil && !adopted { // the other side's bucket arrived meanwhile
			b, err = tx.Bucket(ctx, conversation)
		}
		return err
	})
	return b, local(err)
}

// upload encrypts and uploads f into bucket and returns its pointer.
func (a *Account) upload(ctx context.Context, b clientdb.Bucket, f outgoingFile) (content.Attachment, error) {
	var ptr content.Attachment
	in, err := os.Open(f.path)
	if err != nil {
		return ptr, fmt.Errorf("%w: attachment: %v", ErrUsage, err)
	}
	defer in.Close()
	enc, err := attachment.Encrypt(in, f.size)
	if err != nil {
		return ptr, fmt.Errorf("%w: attachment %s: %v", ErrUsage, f.name, err)
	}
	key, put, err := a.relay.UploadURL(ctx, b.ID, b.MemberSecret, enc.Size())
	if err != nil {
		return ptr, fmt.Errorf("attachment %s: %w", f.name, err)
	}
	var body io.Reader = enc
	if a.progress != nil {
		bar := a.progress("↑ "+f.name, enc.Size())
		defer bar.Close()
		body = io.TeeReader(enc, bar)
	}
	if err := a.relay.Put(ctx, put, body, enc.Size()); err != nil {
		return ptr, fmt.Errorf("upload %s: %w", f.name, err)
	}
	return content.Attachment{Bucket: b.ID, ObjectKey: key, Key: enc.Key(), Digest: enc.Digest(), Size: f.size,
		ContentType: f.contentType, FileName: f.name}, nil
}

// withAttachments uploads files into the conversation's bucket and
// returns c carrying their pointers and the bucket grant.
func (a *Account) withAttachments(ctx context.Context, conversation string, c content.Content, files []outgoingFile) (*content.Content, error) {
	if len(files) == 0 {
		return &c, nil
	}
	b, err := a.conversationBucket(ctx, conversation)
	if err != nil {
		return nil, err
	}
	c.Bucket = &content.BucketGrant{ID: b.ID, MemberSecret: b.MemberSecret, AdminSecret: b.AdminSecret}
	if c.GroupID != "" {
		// In a group the admin secret stays with the bucket's creator, so a
		// removed member cannot undo the rotation that locks them out.
		c.Bucket.AdminSecret = nil
	}
	c.Attachments = nil
	for _, f := range files {
		ptr, err := a.upload(ctx, b, f)
		if err != nil {
			return nil, err
		}
		c.Attachments = append(c.Attachments, ptr)
	}
	return &c, nil
}

// adoptGrant records the bucket a message shares, inside the receiving
// transaction.
func adoptGrant(ctx context.Context, tx *clientdb.Tx, conversation string, g *content.BucketGrant) error {
	if g == nil {
		return nil
	}
	_, err := tx.AdoptBucket(ctx, conversation, clientdb.Bucket{ID: g.ID, MemberSecret: g.MemberSecret, AdminSecret: g.AdminSecret})
	return err
}

// fetchAttachments downloads, verifies and saves every attachment of ev
// into dir, recording the path (or the failure) in ev.Attachments.
func (a *Account) fetchAttachments(ctx context.Context, ev *Event, dir string) {
	var saved []string
	for i, ptr := range ev.pending {
		path, err := a.fetch(ctx, ev.SenderAccount, ev.grant, ptr, dir)
		if err != nil {
			ev.Attachments[i].Error = err.Error()
			a.log.WarnContext(ctx, "attachment not saved", "from", ev.SenderAccount, "err", err)
			continue
		}
		ev.Attachments[i].Path = path
		saved = append(saved, path)
	}
	ev.pending, ev.grant = nil, nil
	if len(saved) > 0 && ev.msgID != 0 {
		// Recorded with the message, so the files go when it disappears.
		if err := a.db.Update(ctx, func(tx *clientdb.Tx) error { return tx.SetMessageFiles(ctx, ev.msgID, saved) }); err != nil {
			a.log.WarnContext(ctx, "cannot record saved attachments", "err", err)
		}
	}
}

// fetch downloads one attachment to a temporary file next to its final
// place, verifies it, and only then writes the plaintext under a name no
// other file has.
func (a *Account) fetch(ctx context.Context, conversation string, grant *content.BucketGrant, ptr content.Attachment, dir string) (string, error) {
	member, err := a.memberSecret(ctx, conversation, grant, ptr.Bucket)
	if err != nil {
		return "", err
	}
	get, err := a.relay.DownloadURL(ctx, ptr.Bucket, member, ptr.ObjectKey)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", local(err)
	}
	tmp, err := os.CreateTemp(dir, ".parley-download-*")
	if err != nil {
		return "", local(err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	body, _, err := a.relay.Get(ctx, get)
	if err != nil {
		return "", err
	}
	want := attachment.EncryptedSize(ptr.Size)
	var w io.Writer = tmp
	if a.progress != nil {
		bar := a.progress("↓ "+displayName(ptr), want)
		defer bar.Close()
		w = io.MultiWriter(tmp, bar)
	}
	// One byte more than expected is enough to know the blob is wrong.
	_, err = io.Copy(w, io.LimitReader(body, want+1))
	body.Close()
	if err != nil {
		return "", fmt.Errorf("%w: download: %w", relayclient.ErrUnavailable, err)
	}
	out, path, err := createUnique(dir, saveName(ptr))
	if err != nil {
		return "", local(err)
	}
	if err := attachment.Decrypt(out, tmp, ptr.Size, ptr.Key, ptr.Digest); err != nil {
		out.Close()
		os.Remove(path)
		return "", err
	}
	if err := out.Close(); err != nil {
		os.Remove(path)
		return "", local(err)
	}
	return path, nil
}

// memberSecret finds the secret that opens bucket: the message's grant, or
// the conversation's stored bucket.
func (a *Account) memberSecret(ctx context.Context, conversation string, grant *content.BucketGrant, bucket string) ([]byte, error) {
	if grant != nil && grant.ID == bucket {
		return grant.MemberSecret, nil
	}
	var b clientdb.Bucket
	err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		b, err = tx.Bucket(ctx, conversation)
		return err
	})
	if err != nil || b.ID != bucket {
		return nil, errors.New("the message did not share the secret of the bucket its attachment is in")
	}
	return b.MemberSecret, nil
}

func displayName(ptr content.Attachment) string {
	if ptr.FileName != "" {
		return ptr.FileName
	}
	return "attachment"
}

// saveName makes the sender's file name safe to create: no directories,
// no control characters, no leading dot; a name from the content type if
// there is none.
func saveName(ptr content.Attachment) string {
	name := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || unicode.IsControl(r) || r == unicode.ReplacementChar {
			return '_'
		}
		return r
	}, filepath.Base(ptr.FileName))
	name = strings.TrimLeft(name, ". ")
	if name == "" || name == "_" {
		name = "attachment"
		if exts, _ := mime.ExtensionsByType(ptr.ContentType); len(exts) > 0 {
			name += exts[0]
		}
	}
	return name
}

// createUnique creates name in dir, or "name (N).ext" if it exists.
func createUnique(dir, name string) (*os.File, string, error) {
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	for i := 0; i < 1000; i++ {
		p := filepath.Join(dir, name)
		if i > 0 {
			p = filepath.Join(dir, fmt.Sprintf("%s (%d)%s", stem, i, ext))
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		return f, p, err
	}
	return nil, "", fmt.Errorf("no free file name for %s in %s", name, dir)
}
