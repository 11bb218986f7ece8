// Package rpc is parley's JSON-RPC 2.0 interface for bots and
// integrations (`parley daemon`), shaped like signal-cli's jsonRpc mode:
// one request or batch per line, one method per command, and every
// received envelope pushed to every connection as a "receive" notification.
//
// Application errors carry the negated exit code of the equivalent command
// (-1 user error, -2 unexpected, -3 server or network, -4 untrusted
// identity, -5 rate limited), with data.retry_after_seconds when known.
package rpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/parleyhq/parley/cli"
	"github.com/parleyhq/parley/cli/relayclient"
)

// MaxLine bounds one request line.
const MaxLine = 1 << 20

// JSON-RPC 2.0 error codes.
const (
	CodeParse          = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
)

// Server answers requests against one account.
type Server struct {
	account *cli.Account
	log     *slog.Logger

	mu    sync.Mutex
	conns map[*conn]struct{}
}

// New returns a Server for a.
func New(a *cli.Account, log *slog.Logger) *Server {
	return &Server{account: a, log: log, conns: make(map[*conn]struct{})}
}

type conn struct {
	mu sync.Mutex
	w  io.Writer
}

func (c *conn) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err = c.w.Write(append(b, '\n'))
	return err
}

type request struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
	ID      json.RawMessage `json:"id,omitempty"`
}

type response struct {
	JSONRPC string          `json:"jsonrpc"`
	Result  any             `json:"result,omitempty"`
	Error   *Error          `json:"error,omitempty"`
	ID      json.RawMessage `json:"id"`
}

// Error is a JSON-RPC error object.
type Error struct {
	Code    int            `json:"code"`
	Message string         `json:"message"`
	Data    map[string]any `json:"data,omitempty"`
}

type notification struct {
	JSONRPC string `json:"jsonrpc"`
	Method  string `json:"method"`
	Params  any    `json:"params"`
}

// Notify sends a received event to every connection.
func (s *Server) Notify(ev cli.Event) {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	n := notification{JSONRPC: "2.0", Method: "receive", Params: map[string]any{"account": s.account.Number, "envelope": ev}}
	for _, c := range conns {
		if err := c.write(n); err != nil {
			s.log.Debug("notification not delivered", "err", err)
		}
	}
}

// Serve handles one connection until r ends or ctx is done.
func (s *Server) Serve(ctx context.Context, r io.Reader, w io.Writer) error {
	c := &conn{w: w}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	for sc.Scan() {
		if ctx.Err() != nil {
			return nil
		}
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if out := s.handleLine(ctx, line); out != nil {
			if err := c.write(out); err != nil {
				return err
			}
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		c.write(response{JSONRPC: "2.0", Error: &Error{Code: CodeInvalidRequest, Message: fmt.Sprintf("request line longer than %d bytes", MaxLine)}, ID: json.RawMessage("null")})
	}
	return sc.Err()
}

// handleLine answers one line: a request, a notification or a batch. It
// returns nil when nothing is to be sent back.
func (s *Server) handleLine(ctx context.Context, line []byte) any {
	if line[0] == '[' {
		var batch []json.RawMessage
		if err := json.Unmarshal(line, &batch); err != nil {
			return parseError(err)
		}
		if len(batch) == 0 {
			return response{JSONRPC: "2.0", Error: &Error{Code: CodeInvalidRequest, Message: "empty batch"}, ID: json.RawMessage("null")}
		}
		var out []response
		for _, b := range batch {
			if r := s.handle(ctx, b); r != nil {
				out = append(out, *r)
			}
		}
		if out == nil {
			return nil
		}
		return out
	}
	if r := s.handle(ctx, line); r != nil {
		return *r
	}
	return nil
}

func parseError(err error) response {
	return response{JSONRPC: "2.0", Error: &Error{Code: CodeParse, Message: "parse error: " + err.Error()}, ID: json.RawMessage("null")}
}

func (s *Server) handle(ctx context.Context, raw []byte) *response {
	var req request
	if err := json.Unmarshal(raw, &req); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			r := parseError(err)
			return &r
		}
		return &response{JSONRPC: "2.0", Error: &Error{Code: CodeInvalidRequest, Message: "invalid request: " + err.Error()}, ID: json.RawMessage("null")}
	}
	id := req.ID
	if req.JSONRPC != "2.0" || req.Method == "" {
		if id == nil {
			id = json.RawMessage("null")
		}
		return &response{JSONRPC: "2.0", Error: &Error{Code: CodeInvalidRequest, Message: `a request needs "jsonrpc":"2.0" and a method`}, ID: id}
	}
	result, rerr := s.call(ctx, req.Method, req.Params)
	if id == nil { // a notification: no answer, even on error
		if rerr != nil {
			s.log.Debug("notification failed", "method", req.Method, "err", rerr.Message)
		}
		return nil
	}
	if rerr != nil {
		return &response{JSONRPC: "2.0", Error: rerr, ID: id}
	}
	if result == nil {
		result = struct{}{}
	}
	return &response{JSONRPC: "2.0", Result: result, ID: id}
}

// params decodes p strictly into v.
func params(p json.RawMessage, v any) *Error {
	if len(p) == 0 || string(p) == "null" {
		p = []byte("{}")
	}
	d := json.NewDecoder(bytes.NewReader(p))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return &Error{Code: CodeInvalidParams, Message: "invalid params: " + err.Error()}
	}
	return nil
}

// appError turns a command's error into a JSON-RPC error.
func appError(err error) *Error {
	e := &Error{Code: -cli.ExitCode(err), Message: err.Error()}
	var re *relayclient.Error
	if errors.As(err, &re) && re.RetryAfter > 0 {
		e.Data = map[string]any{"retry_after_seconds": int(re.RetryAfter.Seconds())}
	}
	return e
}

// recipients accepts signal-cli's "recipient" as one string or a list.
type recipients []string

func (r *recipients) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*r = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("recipient must be a number or a list of numbers")
	}
	*r = many
	return nil
}

// SendResult is one recipient's outcome in a send.
type SendResult struct {
	Recipient string `json:"recipient"`
	// Type is SUCCESS, UNTRUSTED_IDENTITY, RATE_LIMIT, NETWORK_FAILURE,
	// UNREGISTERED or FAILURE.
	Type  string `json:"type"`
	Error string `json:"error,omitempty"`
}

func (s *Server) call(ctx context.Context, method string, p json.RawMessage) (any, *Error) {
	a := s.account
	switch method {
	case "send":
		var in struct {
			Recipient   recipients `json:"recipient"`
			GroupID     string     `json:"groupId"`
			Message     string     `json:"message"`
			Attachments []string   `json:"attachments"`
		}
		if e := params(p, &in); e != nil {
			return nil, e
		}
		if in.GroupID != "" {
			if len(in.Recipient) > 0 {
				return nil, &Error{Code: CodeInvalidParams, Message: "invalid params: give recipient or groupId, not both"}
			}
			ts, err := a.SendGroup(ctx, in.GroupID, in.Message, in.Attachments)
			if err != nil {
				return nil, appError(err)
			}
			return map[string]any{"timestamp": ts}, nil
		}
		if len(in.Recipient) == 0 {
			return nil, &Error{Code: CodeInvalidParams, Message: "invalid params: recipient is required"}
		}
		ts, results, err := a.Send(ctx, in.Message, in.Attachments, in.Recipient...)
		if err != nil {
			return nil, appError(err)
		}
		out := make([]SendResult, len(results))
		for i, r := range results {
			out[i] = SendResult{Recipient: r.Recipient, Type: resultType(r.Err)}
			if r.Err != nil {
				out[i].Error = r.Err.Error()
			}
		}
		return map[string]any{"timestamp": ts, "results": out}, nil
	case "sendTyping":
		var in struct {
			Recipient string `json:"recipient"`
			Stop      bool   `json:"stop"`
		}
		if e := params(p, &in); e != nil {
			return nil, e
		}
		return nil, appErrorOrNil(a.SendTyping(ctx, in.Recipient, !in.Stop))
	case "updateContact":
		var in struct {
			Recipient  string `json:"recipient"`
			Expiration *int64 `json:"expiration"`
		}
		if e := params(p, &in); e != nil {
			return nil, e
		}
		if in.Expiration == nil {
			return nil, &Error{Code: CodeInvalidParams, Message: "invalid params: expiration (seconds, 0: off) is required"}
		}
		return nil, appErrorOrNil(a.SetTimer(ctx, in.Recipient, *in.Expiration))
	case "listGroups":
		if e := params(p, &struct{}{}); e != nil {
			return nil, e
		}
		gs, err := a.Groups(ctx)
		if err != nil {
			return nil, appError(err)
		}
		return gs, nil
	case "listIdentities":
		var in struct {
			Number string `json:"number"`
		}
		if e := params(p, &in); e != nil {
			return nil, e
		}
		ids, err := a.Identities(ctx, in.Number)
		if err != nil {
			return nil, appError(err)
		}
		if ids == nil {
			ids = []cli.Identity{}
		}
		return ids, nil
	case "trust":
		var in struct {
			Recipient            string `json:"recipient"`
			VerifiedSafetyNumber string `json:"verifiedSafetyNumber"`
			TrustAllKnownKeys    bool   `json:"trustAllKnownKeys"`
		}
		if e := params(p, &in); e != nil {
			return nil, e
		}
		if (in.VerifiedSafetyNumber == "") == !in.TrustAllKnownKeys {
			return nil, &Error{Code: CodeInvalidParams, Message: "invalid params: give exactly one of verifiedSafetyNumber or trustAllKnownKeys"}
		}
		return nil, appErrorOrNil(a.Trust(ctx, in.Recipient, in.VerifiedSafetyNumber))
	case "listDevices":
		if e := params(p, &struct{}{}); e != nil {
			return nil, e
		}
		ds, err := a.Devices(ctx)
		if err != nil {
			return nil, appError(err)
		}
		return ds, nil
	case "removeDevice":
		var in struct {
			DeviceID int `json:"deviceId"`
		}
		if e := params(p, &in); e != nil {
			return nil, e
		}
		return nil, appErrorOrNil(a.RemoveDevice(ctx, in.DeviceID))
	case "setPin":
		var in struct {
			Pin string `json:"pin"`
		}
		if e := params(p, &in); e != nil {
			return nil, e
		}
		if in.Pin == "" {
			return nil, &Error{Code: CodeInvalidParams, Message: "invalid params: pin is required (removePin removes it)"}
		}
		return nil, appErrorOrNil(a.SetPin(ctx, in.Pin))
	case "removePin":
		if e := params(p, &struct{}{}); e != nil {
			return nil, e
		}
		return nil, appErrorOrNil(a.SetPin(ctx, ""))
	case "whoami":
		if e := params(p, &struct{}{}); e != nil {
			return nil, e
		}
		return map[string]any{"number": a.Number, "account": a.ID, "deviceId": a.DeviceID}, nil
	}
	return nil, &Error{Code: CodeMethodNotFound, Message: fmt.Sprintf("method %q not found", method)}
}

func appErrorOrNil(err error) *Error {
	if err == nil {
		return nil
	}
	return appError(err)
}

func resultType(err error) string {
	switch cli.ExitCode(err) {
	case cli.ExitOK:
		return "SUCCESS"
	case cli.ExitUntrusted:
		return "UNTRUSTED_IDENTITY"
	case cli.ExitRateLimit:
		return "RATE_LIMIT"
	case cli.ExitIO:
		return "NETWORK_FAILURE"
	}
	if relayclient.IsCode(err, "number_not_registered") {
		return "UNREGISTERED"
	}
	return "FAILURE"
}
