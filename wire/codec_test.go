package wire

import (
	"bytes"
	"testing"

	"github.com/google/uuid"
)

func TestFrameRoundTrip(t *testing.T) {
	in := Frame{Type: FrameEnvelope, Envelope: &Envelope{ID: uuid.New(), Type: 1, SourceAccount: uuid.New(), SourceDevice: 2,
		Timestamp: 3, ServerTimestamp: 4, Content: []byte{0, 1, 0xfe, 0xff}}}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"content":"AAH+/w=="`)) {
		t.Errorf("content is not standard base64: %s", b)
	}
	var out Frame
	if err := Decode(b, &out, true); err != nil {
		t.Fatal(err)
	}
	if out.Envelope == nil || !bytes.Equal(out.Envelope.Content, in.Envelope.Content) || out.Envelope.ID != in.Envelope.ID {
		t.Errorf("round trip: %+v", out.Envelope)
	}
}

func TestDecodeStrictness(t *testing.T) {
	newer := []byte(`{"type":"queue_empty","added_later":1}`)
	var f Frame
	if err := Decode(newer, &f, false); err != nil || f.Type != FrameQueueEmpty {
		t.Errorf("a client refused a member a newer relay added: %v", err)
	}
	if err := Decode(newer, &f, true); err == nil {
		t.Error("the relay took a frame with a member frames do not have")
	}
	for _, bad := range []string{``, `{`, `[]`, `{"type":1}`, `{"ids":["not-a-uuid"]}`, `{"envelope":{"content":"not base64!"}}`} {
		if err := Decode([]byte(bad), &f, false); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}
