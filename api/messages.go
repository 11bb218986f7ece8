package api

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/relay"
	"github.com/parleyhq/parley/wire"
)

// MaxSendBodyBytes bounds a send request: room for about 30 envelopes of
// relay.MaxContentBytes each in base64.
const MaxSendBodyBytes = 4 << 20

// maxExpiresIn bounds expires_in; the relay's retention caps it anyway.
const maxExpiresIn = 10 * 365 * 24 * 3600

func (s *Server) sendMessages(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	dest, err := destination(r)
	if err != nil {
		return err
	}
	send, err := decodeSend(w, r, dest)
	if err != nil {
		return err
	}
	send.Sender = p
	rc, err := s.Relay.Send(r.Context(), send)
	return answerSent(w, rc, err)
}

// destination reads the {account} of a send's path.
func destination(r *http.Request) (uuid.UUID, error) {
	dest, err := uuid.Parse(r.PathValue("account"))
	if err != nil || len(r.PathValue("account")) != 36 {
		return uuid.Nil, errorf(http.StatusBadRequest, "invalid_account_id", "account id must be a UUID")
	}
	return dest, nil
}

// decodeSend reads the body and Idempotency-Key of a send to dest; the
// caller says who sends it.
func decodeSend(w http.ResponseWriter, r *http.Request, dest uuid.UUID) (relay.Send, error) {
	var req sendRequest
	if err := decodeLimit(w, r, &req, MaxSendBodyBytes); err != nil {
		return relay.Send{}, err
	}
	if req.ExpiresIn < 0 || req.ExpiresIn > maxExpiresIn {
		return relay.Send{}, errorf(http.StatusUnprocessableEntity, "invalid_message", "expires_in must be 0 to 315360000 seconds")
	}
	send := relay.Send{
		Destination: dest, Timestamp: req.Timestamp, IdempotencyKey: r.Header.Get("Idempotency-Key"),
		ExpiresIn: time.Duration(req.ExpiresIn) * time.Second, Online: req.Online, Urgent: req.Urgent,
	}
	if _, ok := r.Header["Idempotency-Key"]; ok && send.IdempotencyKey == "" {
		return relay.Send{}, errorf(http.StatusUnprocessableEntity, "invalid_message", "Idempotency-Key must not be empty")
	}
	for _, m := range req.Messages {
		send.Envelopes = append(send.Envelopes, relay.Outgoing{Device: m.DeviceID, RegistrationID: m.RegistrationID, Type: m.Type, Content: m.Content})
	}
	return send, nil
}

func (s *Server) websocket(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	if err := requireUpgrade(w, r); err != nil {
		return err
	}
	if err := s.Relay.AdmitConnection(p); err != nil {
		return err
	}
	if s.Relay.Closing() {
		return relay.ErrShuttingDown
	}
	up := websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		// No ReadBufferSize: gorilla must read through the buffer
		// ownReader hijacks with, which the relay watches (with its own,
		// gorilla's would hold bytes the relay cannot see). A shared
		// write-buffer pool means an idle connection holds none.
		WriteBufferSize: 1024,
		WriteBufferPool: &s.wsBuffers,
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			writeError(w, r, s.Log, &Error{Status: status, Code: "websocket_handshake_failed", Message: reason.Error()})
		},
	}
	hj := &ownReader{ResponseWriter: w}
	ws, err := up.Upgrade(hj, r, nil)
	if err != nil {
		return nil // answered by Error
	}
	if err := s.Relay.Serve(ws, hj.br, p, s.serveFrame); err != nil {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
		ws.Close()
	}
	return nil
}

// wsReadBuffer is the read buffer of a device's WebSocket. gorilla adopts a
// hijacked buffer only if it is larger than 256 bytes; frames larger than
// the buffer are read straight into the message.
const wsReadBuffer = 512

// ownReader hijacks a connection for the WebSocket upgrade with a read
// buffer of the relay's own (br) instead of net/http's 4 KiB one, which
// gorilla adopts as documented for an Upgrader with ReadBufferSize 0.
// Holding it lets the relay see when nothing is buffered, so an idle
// connection can wait without a goroutine (relay.Service.Serve).
type ownReader struct {
	http.ResponseWriter
	br *bufio.Reader
}

// Hijack takes the connection as net/http's Hijack does, with br as its
// reader. Data the client sent early stays in net/http's reader, for
// gorilla to refuse.
func (o *ownReader) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(o.ResponseWriter).Hijack()
	if err != nil || brw.Reader.Buffered() > 0 {
		return nc, brw, err
	}
	o.br = bufio.NewReaderSize(nc, wsReadBuffer)
	brw.Reader = o.br
	return nc, brw, nil
}

type multiSendRequest struct {
	Timestamp  int64                `json:"timestamp"`
	ExpiresIn  int64                `json:"expires_in,omitzero"`
	Urgent     bool                 `json:"urgent,omitzero"`
	Type       int                  `json:"type"`
	Content    Bytes                `json:"content"`
	Recipients []multiRecipientJSON `json:"recipients"`
}

type multiRecipientJSON struct {
	AccountID string          `json:"account_id"`
	Devices   []deviceRefJSON `json:"devices"`
}

type deviceRefJSON struct {
	DeviceID       int `json:"device_id"`
	RegistrationID int `json:"registration_id"`
}

// sendMulti stores one shared ciphertext for the listed devices of many
// accounts (a group message encrypted once with a sender key).
func (s *Server) sendMulti(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	var req multiSendRequest
	if err := decodeLimit(w, r, &req, MaxSendBodyBytes); err != nil {
		return err
	}
	if req.ExpiresIn < 0 || req.ExpiresIn > maxExpiresIn {
		return errorf(http.StatusUnprocessableEntity, "invalid_message", "expires_in must be 0 to 315360000 seconds")
	}
	send := relay.MultiSend{
		Sender: p, Timestamp: req.Timestamp, IdempotencyKey: r.Header.Get("Idempotency-Key"),
		ExpiresIn: time.Duration(req.ExpiresIn) * time.Second, Urgent: req.Urgent, Type: req.Type, Content: req.Content,
	}
	if _, ok := r.Header["Idempotency-Key"]; ok && send.IdempotencyKey == "" {
		return errorf(http.StatusUnprocessableEntity, "invalid_message", "Idempotency-Key must not be empty")
	}
	for i, rc := range req.Recipients {
		account, err := uuid.Parse(rc.AccountID)
		if err != nil || len(rc.AccountID) != 36 {
			return errorf(http.StatusBadRequest, "invalid_account_id", fmt.Sprintf("recipient %d: account_id must be a UUID", i))
		}
		to := relay.Recipient{Account: account}
		for _, d := range rc.Devices {
			to.Devices = append(to.Devices, relay.DeviceRef{Device: d.DeviceID, RegistrationID: d.RegistrationID})
		}
		send.Recipients = append(send.Recipients, to)
	}
	rc, err := s.Relay.SendMulti(r.Context(), send)
	return answerSent(w, rc, err)
}

// answerSent answers an accepted send, marking a replayed one and naming
// the devices it skipped.
func answerSent(w http.ResponseWriter, rc relay.Receipt, err error) error {
	if err != nil {
		return err
	}
	if rc.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	out := sendResponse{ServerTimestamp: rc.ServerTimestamp.UnixMilli()}
	for _, sk := range rc.Skipped {
		out.SkippedDevices = append(out.SkippedDevices, skippedJSON{AccountID: sk.Account.String(), DeviceID: sk.Device, Reason: string(sk.Reason)})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// requireUpgrade answers 426 to a request to a WebSocket endpoint that
// does not ask for the upgrade.
func requireUpgrade(w http.ResponseWriter, r *http.Request) error {
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		return errorf(http.StatusUpgradeRequired, "upgrade_required", "this endpoint speaks WebSocket only")
	}
	return nil
}

// serveFrame answers a request frame from device p's WebSocket: a message
// send (PUT /v1/messages/{account} or PUT /v1/messages), served by the same
// handler as over HTTP, with the same answers, minus a request and an
// authentication per message. Other requests answer 404.
func (s *Server) serveFrame(ctx context.Context, p accounts.Principal, f wire.Frame) wire.Frame {
	w := &frameWriter{header: http.Header{}}
	r, err := http.NewRequestWithContext(ctx, http.MethodPut, "/", bytes.NewReader(f.Body))
	if err != nil {
		panic(err) // a constant method and URL
	}
	r.Method, r.URL.Path = f.Verb, f.Path
	for k, v := range f.Headers {
		switch http.CanonicalHeaderKey(k) {
		case "Idempotency-Key", "Content-Type":
			r.Header.Set(k, v)
		default:
			writeError(w, r, s.Log, errorf(http.StatusBadRequest, "invalid_request", fmt.Sprintf("request frame: header %q is not accepted over the WebSocket", k)))
			return w.frame()
		}
	}
	var h authedFunc
	switch {
	case f.Verb == http.MethodPut && f.Path == "/v1/messages":
		h, r.Pattern = s.sendMulti, "PUT /v1/messages"
	case f.Verb == http.MethodPut && strings.HasPrefix(f.Path, "/v1/messages/") && !strings.Contains(f.Path[len("/v1/messages/"):], "/"):
		r.SetPathValue("account", f.Path[len("/v1/messages/"):])
		h, r.Pattern = s.sendMessages, "PUT /v1/messages/{account}"
	default:
		writeError(w, r, s.Log, errorf(http.StatusNotFound, "not_found", "only PUT /v1/messages and PUT /v1/messages/{account} are served over the WebSocket"))
		s.metrics.frame("other", w.status)
		return w.frame()
	}
	if err := h(w, r, p); err != nil {
		writeError(w, r, s.Log, err)
	}
	s.metrics.frame(r.Pattern, w.status)
	return w.frame()
}

// frameWriter collects an HTTP answer for a response frame.
type frameWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *frameWriter) Header() http.Header { return w.header }

func (w *frameWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *frameWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// frame is the response frame: status, the headers a client acts on, and
// the JSON body.
func (w *frameWriter) frame() wire.Frame {
	f := wire.Frame{Status: w.status, Body: jsontext.Value(bytes.TrimSpace(w.body.Bytes()))}
	for _, k := range []string{"Idempotent-Replayed", "Retry-After"} {
		if v := w.header.Get(k); v != "" {
			if f.Headers == nil {
				f.Headers = map[string]string{}
			}
			f.Headers[k] = v
		}
	}
	return f
}
