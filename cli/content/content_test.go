package content

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestRoundTripAndPadding(t *testing.T) {
	for _, text := range []string{"", "hi", strings.Repeat("é", 200), strings.Repeat("x", MaxText)} {
		c := &Content{Timestamp: 1700000000000, Text: text, SenderNumber: "+15555550100"}
		if text == "" {
			c.Typing = &Typing{Started: true}
		}
		b, err := Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(b)%Block != 0 {
			t.Errorf("%d bytes is not a multiple of %d", len(b), Block)
		}
		got, err := Unmarshal(b)
		if err != nil || got.Text != text || got.Timestamp != c.Timestamp || got.SenderNumber != c.SenderNumber {
			t.Errorf("round trip of %d bytes: %+v %v", len(text), got, err)
		}
	}
	a, _ := Marshal(&Content{Timestamp: 1, Text: "a"})
	b, _ := Marshal(&Content{Timestamp: 1, Text: strings.Repeat("a", 100)})
	if len(a) != len(b) {
		t.Errorf("1 and 100 characters pad to %d and %d bytes; short texts should look alike", len(a), len(b))
	}
}

func TestUnknownMembersAreIgnored(t *testing.T) {
	b := append([]byte{Version}, `{"timestamp":5,"text":"x","stickers":[{"key":"…"}]}`...)
	b = append(b, 0x80, 0, 0)
	c, err := Unmarshal(b)
	if err != nil || c.Text != "x" {
		t.Fatalf("a newer client's message: %+v %v", c, err)
	}
}

func TestMalformed(t *testing.T) {
	good, _ := Marshal(&Content{Timestamp: 1, Text: "x"})
	cases := map[string][]byte{
		"empty":             nil,
		"no padding marker": bytes.TrimRight(good[:len(good)-1], "\x00\x80"),
		"junk after marker": append(bytes.Clone(good[:len(good)-1]), 1),
		"version 2":         append([]byte{2}, good[1:]...),
		"not JSON":          {Version, '{', 0x80},
		"no timestamp":      append([]byte{Version}, append([]byte(`{"text":"x"}`), 0x80)...),
		"bad receipt":       append([]byte{Version}, append([]byte(`{"timestamp":1,"receipt":{"type":"seen","timestamps":[1]}}`), 0x80)...),
		"empty receipt":     append([]byte{Version}, append([]byte(`{"timestamp":1,"receipt":{"type":"read","timestamps":[]}}`), 0x80)...),
		"text too long":     append([]byte{Version}, append([]byte(`{"timestamp":1,"text":"`+strings.Repeat("x", MaxText+1)+`"}`), 0x80)...),
	}
	for name, b := range cases {
		if _, err := Unmarshal(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if _, err := Marshal(&Content{Text: "no timestamp"}); err == nil {
		t.Error("Marshal accepted content without a timestamp")
	}
}

func FuzzUnmarshal(f *testing.F) {
	good, _ := Marshal(&Content{Timestamp: 1, Text: "x", Receipt: &Receipt{Type: Read, Timestamps: []int64{1}}})
	f.Add(good)
	f.Add([]byte{1, 0x80})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Unmarshal(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		again, err := Marshal(c)
		if err != nil {
			t.Fatalf("accepted content does not re-encode: %v", err)
		}
		if _, err := Unmarshal(again); err != nil {
			t.Fatalf("re-encoded content does not decode: %v", err)
		}
	})
}

func TestAttachments(t *testing.T) {
	id := "AAAAAAAAAAAAAAAAAAAAAA"
	good := Attachment{Bucket: id, ObjectKey: "BBBBBBBBBBBBBBBBBBBBB_", Key: make([]byte, 64), Digest: make([]byte, 32),
		Size: 20 << 20, ContentType: "image/png", FileName: "x.png"}
	c := &Content{Timestamp: 1, Attachments: []Attachment{good}, Bucket: &BucketGrant{ID: id, MemberSecret: make([]byte, 32), AdminSecret: make([]byte, 32)}}
	b, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unmarshal(b)
	if err != nil || len(got.Attachments) != 1 || got.Attachments[0].Size != 20<<20 || got.Bucket.ID != id || got.Kind() != "message" {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	bad := map[string]func(*Attachment){
		"bucket id":     func(a *Attachment) { a.Bucket = "../../etc" },
		"object key":    func(a *Attachment) { a.ObjectKey = strings.Repeat("A", 23) },
		"short key":     func(a *Attachment) { a.Key = a.Key[:32] },
		"no digest":     func(a *Attachment) { a.Digest = nil },
		"negative size": func(a *Attachment) { a.Size = -1 },
		"long name":     func(a *Attachment) { a.FileName = strings.Repeat("n", 256) },
	}
	for name, f := range bad {
		a := good
		f(&a)
		if _, err := Marshal(&Content{Timestamp: 1, Attachments: []Attachment{a}}); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Marshal(&Content{Timestamp: 1, Bucket: &BucketGrant{ID: id, MemberSecret: make([]byte, 31)}}); !errors.Is(err, ErrMalformed) {
		t.Errorf("short member secret: %v", err)
	}
	if _, err := Marshal(&Content{Timestamp: 1, Attachments: make([]Attachment, MaxAttachments+1)}); !errors.Is(err, ErrMalformed) {
		t.Errorf("too many attachments: %v", err)
	}
}
