package rpc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
)

// Error codes of signal-cli's JSON-RPC beyond JSON-RPC's own.
const (
	CodeUserError  = -1
	CodeIOError    = -3
	CodeUntrusted  = -4
	CodeRateLimit  = -5
	CodeInternal   = -32603
	codeUnexpected = CodeInternal
)

// params reads a request's parameters the way signal-cli does: by name or
// by its plural for lists, one value or a list where several are allowed,
// unknown names ignored. The first problem is kept in err; getters return
// zero values after it.
type params struct {
	m    map[string]json.RawMessage
	used map[string]bool
	err  *Error
}

func parseParams(raw json.RawMessage) (*params, *Error) {
	p := &params{m: map[string]json.RawMessage{}, used: map[string]bool{}}
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return p, nil
	}
	if err := json.Unmarshal(raw, &p.m); err != nil {
		return nil, &Error{Code: CodeInvalidParams, Message: "invalid params: params must be an object"}
	}
	return p, nil
}

func (p *params) fail(name, want string) {
	if p.err == nil {
		p.err = &Error{Code: CodeInvalidParams, Message: fmt.Sprintf("invalid params: %s must be %s", name, want)}
	}
}

// raw returns the value of name, or of its plural, and which one it was.
func (p *params) raw(name string, plural bool) (json.RawMessage, string) {
	for _, n := range []string{name, name + "s"} {
		p.used[n] = true
		if v, ok := p.m[n]; ok && string(v) != "null" {
			return v, n
		}
		if !plural {
			break
		}
	}
	return nil, name
}

func (p *params) string(name string) string {
	v, n := p.raw(name, false)
	var s string
	if v != nil && json.Unmarshal(v, &s) != nil {
		p.fail(n, "a string")
	}
	return s
}

func (p *params) strings(name string) []string {
	v, n := p.raw(name, true)
	if v == nil {
		return nil
	}
	var one string
	if json.Unmarshal(v, &one) == nil {
		return []string{one}
	}
	var many []string
	if json.Unmarshal(v, &many) != nil {
		p.fail(n, "a string or a list of strings")
	}
	return many
}

func (p *params) bool(name string) bool {
	v, n := p.raw(name, false)
	var b bool
	if v != nil && json.Unmarshal(v, &b) != nil {
		p.fail(n, "true or false")
	}
	return b
}

// int64 returns the number given as name and whether one was.
func (p *params) int64(name string) (int64, bool) {
	v, n := p.raw(name, false)
	if v == nil {
		return 0, false
	}
	var i int64
	if json.Unmarshal(v, &i) != nil {
		p.fail(n, "an integer")
	}
	return i, true
}

func (p *params) int64s(name string) []int64 {
	v, n := p.raw(name, true)
	if v == nil {
		return nil
	}
	var one int64
	if json.Unmarshal(v, &one) == nil {
		return []int64{one}
	}
	var many []int64
	if json.Unmarshal(v, &many) != nil {
		p.fail(n, "an integer or a list of integers")
	}
	return many
}

// unsupported refuses signal-cli parameters that would change what is
// sent if parley ignored them: present and not false, empty or zero.
func (p *params) unsupported(method string, names ...string) {
	for _, name := range names {
		for _, n := range []string{name, name + "s"} {
			p.used[n] = true
			v, ok := p.m[n]
			if !ok || p.err != nil {
				continue
			}
			switch strings.TrimSpace(string(v)) {
			case "null", "false", `""`, "[]", "0", "{}":
				continue
			}
			p.err = &Error{Code: CodeUserError, Message: fmt.Sprintf("%s: parley does not support %s", method, n)}
		}
	}
}

// done returns the first problem and logs parameters nobody read, which
// signal-cli also ignores.
func (p *params) done(log *slog.Logger, method string) *Error {
	var unknown []string
	for n := range p.m {
		if !p.used[n] && n != "account" {
			unknown = append(unknown, n)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		log.Warn("ignoring parameters parley does not know", "method", method, "params", unknown)
	}
	return p.err
}
