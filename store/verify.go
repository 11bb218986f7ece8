package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/parleyhq/parley/verify"
)

// CreateSession implements verify.Store.
func (db *DB) CreateSession(ctx context.Context, s verify.Session) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO verification_sessions
		(id_hash, number_hash, code_hash, provider_ref, code_expires_at, sends, next_send_at, attempts, verified_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		s.IDHash[:], s.Number[:], s.CodeHash, s.ProviderRef, ms(s.CodeExpires), s.Sends, ms(s.NextSend), s.Attempts, ms(s.Verified), ms(s.Expires))
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	return nil
}

// sessionColumns are a verification session's columns, read by scanSession.
const sessionColumns = `number_hash, code_hash, provider_ref, code_expires_at, sends, next_send_at, attempts, verified_at, expires_at`

// scanSession reads sessionColumns of one row; no row is notFound.
func scanSession(row *sql.Row, idHash [32]byte, notFound error, what string) (verify.Session, error) {
	s := verify.Session{IDHash: idHash}
	var number []byte
	var codeExp, next, verified, exp int64
	err := row.Scan(&number, &s.CodeHash, &s.ProviderRef, &codeExp, &s.Sends, &next, &s.Attempts, &verified, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return s, notFound
	}
	if err != nil {
		return s, fmt.Errorf("%s: %w", what, err)
	}
	copy(s.Number[:], number)
	s.CodeExpires, s.NextSend, s.Verified, s.Expires = fromMS(codeExp), fromMS(next), fromMS(verified), fromMS(exp)
	return s, nil
}

// Session implements verify.Store.
func (db *DB) Session(ctx context.Context, idHash [32]byte, now time.Time) (verify.Session, error) {
	return scanSession(db.r.QueryRowContext(ctx, `SELECT `+sessionColumns+`
		FROM verification_sessions WHERE id_hash = $1 AND expires_at > $2`, idHash[:], ms(now)), idHash, verify.ErrNotFound, "load session")
}

// ReserveSend implements verify.Store: one conditional UPDATE, so the
// check and the count cannot be separated by another request's send. The
// previous code is forgotten at once, so it cannot verify the session
// while the new one is being sent.
func (db *DB) ReserveSend(ctx context.Context, idHash [32]byte, sends int, now, nextSend time.Time) error {
	return db.updateSession(ctx, "reserve send", `UPDATE verification_sessions
		SET sends = sends + 1, next_send_at = $4, code_hash = NULL, provider_ref = ''
		WHERE id_hash = $1 AND sends = $2 AND next_send_at <= $3 AND verified_at = 0 AND expires_at > $3`,
		idHash[:], sends, ms(now), ms(nextSend))
}

// SetCode implements verify.Store.
func (db *DB) SetCode(ctx context.Context, idHash [32]byte, sends int, codeHash []byte, providerRef string, codeExpires time.Time) error {
	return db.updateSession(ctx, "store code", `UPDATE verification_sessions
		SET code_hash = $2, provider_ref = $3, code_expires_at = $4 WHERE id_hash = $1 AND sends = $5 AND verified_at = 0`,
		idHash[:], codeHash, providerRef, ms(codeExpires), sends)
}

// ReserveAttempt implements verify.Store: the count and the read of the
// code happen in one statement on the writer, so the code checked is the
// one stored when the attempt was counted.
func (db *DB) ReserveAttempt(ctx context.Context, idHash [32]byte, limit int, now time.Time) (verify.Session, error) {
	return scanSession(db.w.QueryRowContext(ctx, `UPDATE verification_sessions SET attempts = attempts + 1
		WHERE id_hash = $1 AND attempts < $2 AND expires_at > $3 RETURNING `+sessionColumns,
		idHash[:], limit, ms(now)), idHash, verify.ErrNoAttemptsLeft, "reserve attempt")
}

// MarkVerified implements verify.Store: only while no code was sent since
// the one checked (sends unchanged) and the session is not yet verified.
func (db *DB) MarkVerified(ctx context.Context, idHash [32]byte, sends int, at time.Time) error {
	return db.updateSession(ctx, "mark verified", `UPDATE verification_sessions
		SET verified_at = $2, code_hash = NULL, provider_ref = '' WHERE id_hash = $1 AND sends = $3 AND verified_at = 0`,
		idHash[:], ms(at), sends)
}

// DeleteExpiredSessions implements verify.Store.
func (db *DB) DeleteExpiredSessions(ctx context.Context, now time.Time) (int64, error) {
	res, err := db.w.ExecContext(ctx, `DELETE FROM verification_sessions WHERE expires_at <= $1`, ms(now))
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	if _, err := db.w.ExecContext(ctx, `DELETE FROM sms_budget WHERE hour < $1`, now.Unix()/3600-1); err != nil {
		return 0, fmt.Errorf("delete old SMS budget counts: %w", err)
	}
	return res.RowsAffected()
}

// errBudgetSpent rolls back TakeSendBudget's transaction.
type errBudgetSpent struct{ scope string }

func (e errBudgetSpent) Error() string { return "budget " + e.scope + " spent" }

// TakeSendBudget implements verify.Store. Each count is one upsert that
// adds 1 only while the stored count is under the limit (the conflict
// update's WHERE sees the row as locked by this statement, so concurrent
// replicas cannot both take the last unit); one that adds nothing rolls the
// whole transaction back. Budgets are taken in the caller's order, so
// concurrent transactions lock rows in the same order.
func (db *DB) TakeSendBudget(ctx context.Context, hour int64, budgets []verify.Budget) (string, error) {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		for _, b := range budgets {
			var sent int
			err := tx.QueryRowContext(ctx, `INSERT INTO sms_budget (scope, hour, sent) VALUES ($1, $2, 1)
				ON CONFLICT (scope, hour) DO UPDATE SET sent = sms_budget.sent + 1 WHERE sms_budget.sent < $3
				RETURNING sent`, b.Scope, hour, b.Limit).Scan(&sent)
			if errors.Is(err, sql.ErrNoRows) || err == nil && sent > b.Limit {
				return errBudgetSpent{b.Scope}
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	var spent errBudgetSpent
	if errors.As(err, &spent) {
		return spent.scope, nil
	}
	if err != nil {
		return "", fmt.Errorf("take SMS budget: %w", err)
	}
	return "", nil
}

func (db *DB) updateSession(ctx context.Context, what, q string, args ...any) error {
	res, err := db.w.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return verify.ErrNotFound
	}
	return nil
}
