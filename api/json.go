package api

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// MaxBodyBytes bounds request bodies. The largest legitimate body is a
// registration with 100 EC and 100 Kyber one-time prekeys (~290 KiB of base64).
const MaxBodyBytes = 512 << 10

// decode reads exactly one JSON object into v, strictly: non-objects (null
// included), unknown members,
// duplicate member names, names differing in case, invalid UTF-8, trailing
// data and bodies over MaxBodyBytes are all refused.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeLimit(w, r, v, MaxBodyBytes)
}

// decodeLimit is decode with a body limit of its own.
func decodeLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "request body must be application/json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body exceeds %d KiB", limit>>10))
		}
		return errorf(http.StatusBadRequest, "bad_body", "could not read request body")
	}
	if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' {
		return errorf(http.StatusBadRequest, "invalid_json", "request body must be a JSON object")
	}
	if err := json.Unmarshal(body, v, json.RejectUnknownMembers(true)); err != nil {
		return &Error{Status: http.StatusBadRequest, Code: "invalid_json", Message: jsonMessage(err), Err: err}
	}
	return nil
}

// jsonMessage turns a decoding error into text that names the problem and
// its location but never echoes values (which may be secrets).
func jsonMessage(err error) string {
	var se *json.SemanticError
	if errors.As(err, &se) {
		msg := "invalid value"
		if se.Err != nil {
			msg = se.Err.Error()
		}
		if p := se.JSONPointer; p != "" {
			return "invalid JSON at " + string(p) + ": " + msg
		}
		return "invalid JSON: " + msg
	}
	msg := err.Error()
	if i := strings.Index(msg, "jsontext: "); i >= 0 {
		msg = msg[i+len("jsontext: "):]
	}
	return "malformed JSON: " + strings.TrimPrefix(msg, "json: ")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.MarshalWrite(w, v) // the client hung up; nothing useful to do
}

// Bytes is binary data carried in JSON as standard padded base64. Decoding
// is strict: no line breaks, no non-zero padding bits, no URL alphabet.
type Bytes []byte

var b64 = base64.StdEncoding.Strict()

// UnmarshalJSON decodes a strict base64 string.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return errors.New("must be a base64 string")
	}
	out, err := decodeBase64([]byte(s))
	*b = out
	return err
}

// UnmarshalJSONFrom decodes a strict base64 string straight from the
// request, without an intermediate string (a ciphertext's only copy between
// the body and the relay).
func (b *Bytes) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	if dec.PeekKind() != '"' {
		return errors.New("must be a base64 string")
	}
	v, err := dec.ReadValue()
	if err != nil {
		return err
	}
	raw := []byte(v[1 : len(v)-1])
	if bytes.IndexByte(raw, '\\') >= 0 { // escaped characters: rare, never in base64 from a sane client
		if raw, err = jsontext.AppendUnquote(nil, v); err != nil {
			return errors.New("must be a base64 string")
		}
	}
	out, err := decodeBase64(raw)
	*b = out
	return err
}

// decodeBase64 is the strict decoding both unmarshalers share.
func decodeBase64(s []byte) ([]byte, error) {
	if bytes.ContainsAny(s, "\r\n") { // the strict decoder would skip them
		return nil, errors.New("base64 must not contain line breaks")
	}
	out := make([]byte, b64.DecodedLen(len(s)))
	n, err := b64.Decode(out, s)
	if err != nil {
		return nil, errors.New("invalid base64 (standard alphabet, padded)")
	}
	return out[:n], nil
}

// MarshalJSON encodes standard padded base64.
func (b Bytes) MarshalJSON() ([]byte, error) {
	return json.Marshal(base64.StdEncoding.EncodeToString(b))
}
