package api

import (
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/attachments"
	"github.com/parleyhq/parley/directory"
	"github.com/parleyhq/parley/keys"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/prekeys"
	"github.com/parleyhq/parley/provisioning"
	"github.com/parleyhq/parley/push"
	"github.com/parleyhq/parley/ratelimit"
	"github.com/parleyhq/parley/relay"
	"github.com/parleyhq/parley/verify"
)

// Error is an HTTP error answer. Code and Message go to the client; Err is
// logged only, so internal detail never leaks.
type Error struct {
	Status  int
	Code    string // stable, machine-readable
	Message string // human-readable, safe to show
	Extra   map[string]any
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func errorf(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

// errorBody is the one error format every endpoint uses.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

// classify maps domain errors to HTTP answers; anything unknown is a 500
// whose detail is logged, not sent.
func classify(err error) *Error {
	var he *Error
	if errors.As(err, &he) {
		return he
	}
	var rl *ratelimit.Error
	if errors.As(err, &rl) {
		secs := int(math.Ceil(rl.RetryAfter.Seconds()))
		return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited", Message: "too many requests; retry later",
			Extra: map[string]any{"retry_after_seconds": max(1, secs)}}
	}
	var locked *accounts.LockedError
	if errors.As(err, &locked) {
		// Nothing here may depend on when the account was last seen: the
		// caller is whoever has the number, not the account's owner.
		return &Error{Status: http.StatusLocked, Code: "registration_locked", Message: locked.Error(), Extra: map[string]any{
			"attempts_left": locked.AttemptsLeft,
		}}
	}
	var budget *verify.BudgetError
	if errors.As(err, &budget) {
		secs := int(math.Ceil(budget.RetryAfter.Seconds()))
		return &Error{Status: http.StatusTooManyRequests, Code: "sms_budget_exhausted", Message: "verification codes cannot be sent right now; retry later",
			Extra: map[string]any{"retry_after_seconds": max(1, secs)}, Err: err}
	}
	var mismatch *relay.MismatchedDevicesError
	if errors.As(err, &mismatch) {
		return &Error{Status: http.StatusConflict, Code: "mismatched_devices", Message: "the request does not address exactly the account's devices",
			Extra: map[string]any{"missing_devices": orEmpty(mismatch.Missing), "extra_devices": orEmpty(mismatch.Extra)}}
	}
	var stale *relay.StaleDevicesError
	if errors.As(err, &stale) {
		return &Error{Status: http.StatusGone, Code: "stale_devices", Message: "some devices were re-installed; fetch their keys again",
			Extra: map[string]any{"stale_devices": stale.Stale}}
	}
	var full *relay.QueueFullError
	if errors.As(err, &full) {
		return &Error{Status: http.StatusTooManyRequests, Code: "queue_full", Message: "a recipient device's queue is full; retry after it has received its messages",
			Extra: map[string]any{"account_id": full.Account.String(), "devices": full.Devices, "retry_after_seconds": 60}}
	}
	var multi *relay.MultiDeviceError
	if errors.As(err, &multi) {
		mismatched, stale := []map[string]any{}, []map[string]any{}
		for account, m := range multi.Mismatched {
			mismatched = append(mismatched, map[string]any{"account_id": account.String(), "missing_devices": orEmpty(m.Missing), "extra_devices": orEmpty(m.Extra)})
		}
		for account, st := range multi.Stale {
			stale = append(stale, map[string]any{"account_id": account.String(), "stale_devices": st.Stale})
		}
		extra := map[string]any{"mismatched": mismatched, "stale": stale}
		if len(mismatched) > 0 {
			return &Error{Status: http.StatusConflict, Code: "mismatched_devices", Message: "some recipients' devices are not exactly those addressed", Extra: extra}
		}
		return &Error{Status: http.StatusGone, Code: "stale_devices", Message: "some recipients' devices were re-installed; fetch their keys again", Extra: extra}
	}
	// detail: the wrapped error text is safe and useful to the client
	// (offsets, lengths, key ids); otherwise only the sentinel's text is sent.
	type mapping struct {
		target error
		status int
		code   string
		detail bool
	}
	for _, m := range []mapping{
		{phone.ErrInvalid, 422, "invalid_number", true},
		{verify.ErrCallingCodeBlocked, 422, "calling_code_not_served", false},
		{verify.ErrUndeliverable, 422, "number_undeliverable", false},
		{verify.ErrNotFound, 404, "session_not_found", false},
		{verify.ErrBadCode, 400, "invalid_code_format", false},
		{verify.ErrWrongCode, 403, "wrong_code", false},
		{verify.ErrCodeExpired, 410, "code_expired", false},
		{verify.ErrNoAttemptsLeft, 429, "no_attempts_left", false},
		{verify.ErrTooManySends, 429, "too_many_sends", false},
		{verify.ErrNotVerified, 403, "session_not_verified", false},
		{verify.ErrAlreadyVerified, 409, "session_already_verified", false},
		{verify.ErrProvider, 502, "sms_provider_failed", false},
		{accounts.ErrSessionUsed, 403, "session_not_verified", false},
		{accounts.ErrBadCredential, 422, "invalid_credential", false},
		{accounts.ErrBadRegistrationID, 422, "invalid_registration_id", false},
		{accounts.ErrBadLockToken, 422, "invalid_lock_token", false},
		{accounts.ErrUnauthorized, 401, "unauthorized", false},
		{accounts.ErrUnidentifiedAccess, 401, "unauthorized", false},
		{push.ErrInvalidTarget, 422, "invalid_push_target", true},
		{accounts.ErrBadUnidentifiedAccessKey, 422, "invalid_unidentified_access_key", false},
		{accounts.ErrForbidden, 403, "forbidden", false},
		{accounts.ErrPrimary, 409, "primary_device", false},
		{accounts.ErrNotFound, 404, "not_found", false},
		{keys.ErrBadSignature, 422, "bad_signature", true},
		{keys.ErrBadKey, 422, "invalid_key", true},
		{keys.ErrBadKeyID, 422, "invalid_key_id", true},
		{keys.ErrDuplicateID, 422, "duplicate_key_id", true},
		{keys.ErrTooMany, 422, "too_many_keys", true},
		{keys.ErrNoDevice, 401, "unauthorized", false},
		{prekeys.ErrNotFound, 404, "not_found", false},
		{directory.ErrNotRegistered, 404, "number_not_registered", false},
		{relay.ErrInvalid, 422, "invalid_message", true},
		{relay.ErrNoAccount, 404, "account_not_found", false},
		{relay.ErrIdempotencyKeyUsed, 422, "idempotency_key_reused", false},
		{relay.ErrShuttingDown, 503, "shutting_down", false},
		{accounts.ErrBadLinkCode, 403, "invalid_link_code", false},
		{accounts.ErrTooManyDevices, 409, "too_many_devices", false},
		{provisioning.ErrNoMailbox, 404, "provisioning_address_not_found", false},
		{provisioning.ErrBusy, 503, "provisioning_busy", false},
		{provisioning.ErrTooManySockets, 429, "too_many_sockets", false},
		{provisioning.ErrInvalid, 422, "invalid_provisioning_message", true},
		{attachments.ErrNotFound, 404, "attachment_not_found", false},
		{attachments.ErrForbidden, 403, "bucket_forbidden", false},
		{attachments.ErrInvalid, 422, "invalid_attachment_request", true},
		{attachments.ErrTooLarge, 413, "object_too_large", true},
		{attachments.ErrQuota, 413, "bucket_quota_exceeded", true},
		{attachments.ErrBadURL, 403, "invalid_object_url", false},
		{attachments.ErrConflict, 409, "bucket_changed", false},
		{attachments.ErrExists, 409, "object_exists", false},
	} {
		if errors.Is(err, m.target) {
			msg := m.target.Error()
			if m.detail {
				msg = err.Error()
			}
			return &Error{Status: m.status, Code: m.code, Message: msg, Err: err}
		}
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error", Err: err}
}

func orEmpty(s []int) []int {
	if s == nil {
		return []int{}
	}
	return s
}

// writeError sends e as the standard error body.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	e := classify(err)
	if e.Status >= 500 {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "route", r.Pattern, "err", err)
	}
	if s, ok := e.Extra["retry_after_seconds"]; ok {
		w.Header().Set("Retry-After", strconv.Itoa(s.(int)))
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="parley", charset="UTF-8"`)
	}
	writeJSON(w, e.Status, errorBody{Error: errorDetail{Code: e.Code, Message: e.Message, Details: e.Extra}})
}
