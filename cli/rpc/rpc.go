// Package rpc is parley's JSON-RPC 2.0 interface for bots and
// integrations (`parley jsonRpc`, `parley daemon`), speaking signal-cli's
// dialect (man signal-cli-jsonrpc(5)): one request or batch per line, the
// method and parameter names of signal-cli's commands, its result shapes
// (package signalcli) and every received envelope pushed as a "receive"
// notification, so a bot written for signal-cli drives parley unchanged.
//
// Like signal-cli, a parameter that takes several values accepts one value
// or a list, under its name or its plural, and parameters parley does not
// know are ignored (logged with -v). signal-cli features parley lacks
// (stickers, mentions, quotes, view-once, group admins and links…) are
// refused with a user error rather than silently dropped.
//
// Application errors use signal-cli's codes: -1 user error, -3 server or
// network, -4 untrusted identity, -5 rate limited (with
// data.retry_after_seconds when known), -32603 anything else.
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
	"github.com/parleyhq/parley/cli/signalcli"
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

// ReceiveMode says when received envelopes are pushed.
type ReceiveMode int

const (
	// OnStart pushes every envelope to every connection as it arrives.
	OnStart ReceiveMode = iota
	// Manual pushes envelopes only to subscriptions (subscribeReceive),
	// wrapped with their subscription id, and receiving starts with the
	// first subscription.
	Manual
)

// Server answers requests against one account.
type Server struct {
	account *cli.Account
	log     *slog.Logger
	mode    ReceiveMode

	mu         sync.Mutex
	conns      map[*conn]struct{}
	nextSub    int
	subscribed chan struct{} // closed by the first subscribeReceive
}

// New returns a Server for a.
func New(a *cli.Account, mode ReceiveMode, log *slog.Logger) *Server {
	return &Server{account: a, log: log, mode: mode, conns: make(map[*conn]struct{}), subscribed: make(chan struct{})}
}

// Subscribed is closed once a client has subscribed to received
// envelopes; in OnStart mode it never is.
func (s *Server) Subscribed() <-chan struct{} { return s.subscribed }

type conn struct {
	mu   sync.Mutex
	w    io.Writer
	subs map[int]bool // Manual mode: this connection's subscriptions
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

func (e *Error) Error() string { return e.Message }

type notification struct {
	JSONRPC string `json:"jsonrpc"`
	Method  string `json:"method"`
	Params  any    `json:"params"`
}

// Notify pushes a received event to every connection (OnStart) or
// every subscription (Manual).
func (s *Server) Notify(ev cli.Event) {
	r := signalcli.Receive(s.account.Number, ev)
	s.mu.Lock()
	type target struct {
		c   *conn
		sub int
	}
	var to []target
	for c := range s.conns {
		if s.mode == OnStart {
			to = append(to, target{c, -1})
			continue
		}
		for sub := range c.subs {
			to = append(to, target{c, sub})
		}
	}
	s.mu.Unlock()
	for _, t := range to {
		var params any = r
		if t.sub >= 0 {
			params = map[string]any{"subscription": t.sub, "result": r}
		}
		if err := t.c.write(notification{JSONRPC: "2.0", Method: "receive", Params: params}); err != nil {
			s.log.Debug("notification not delivered", "err", err)
		}
	}
}

// Serve handles one connection until r ends or ctx is done.
func (s *Server) Serve(ctx context.Context, r io.Reader, w io.Writer) error {
	c := &conn{w: w, subs: make(map[int]bool)}
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
		if out := s.handleLine(ctx, c, line); out != nil {
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
func (s *Server) handleLine(ctx context.Context, c *conn, line []byte) any {
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
			if r := s.handle(ctx, c, b); r != nil {
				out = append(out, *r)
			}
		}
		if out == nil {
			return nil
		}
		return out
	}
	if r := s.handle(ctx, c, line); r != nil {
		return *r
	}
	return nil
}

func parseError(err error) response {
	return response{JSONRPC: "2.0", Error: &Error{Code: CodeParse, Message: "parse error: " + err.Error()}, ID: json.RawMessage("null")}
}

func (s *Server) handle(ctx context.Context, c *conn, raw []byte) *response {
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
		return &response{JSONRPC: "2.0", Error: &Error{Code: CodeInvalidRequest, Message: `method field must be set (and "jsonrpc":"2.0")`}, ID: id}
	}
	result, rerr := s.call(ctx, c, req.Method, req.Params)
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
