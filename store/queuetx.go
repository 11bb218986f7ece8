package store

import (
	"context"
	"database/sql"
)

// QueueTx is a transaction on the relay's queue tables. Its statements are
// gathered into Run calls: a driver that can pipeline (pgx) sends each Run
// in one round trip; database/sql runs them one after another. A batch of
// sends takes three or four Runs whatever its size.
type QueueTx interface {
	// Run executes stmts in order, handing each statement's rows to its
	// Scan; it stops at the first error.
	Run(ctx context.Context, stmts ...Statement) error
}

// Statement is one statement of a QueueTx.Run.
type Statement struct {
	Query string
	Args  []any
	// Scan is called for every row the statement returns (nil: it
	// returns none).
	Scan func(Row) error
	// RowsAffected, if not nil, receives how many rows a statement
	// without Scan changed.
	RowsAffected *int64
}

// Row is one row of a statement's result.
type Row interface {
	Scan(dest ...any) error
}

// queueTx runs f in a transaction on the queue: the dialect's native one
// if it has one, else database/sql's on the writer.
func (db *DB) queueTx(ctx context.Context, f func(QueueTx) error) error {
	if db.d.QueueTx != nil {
		return db.d.QueueTx(ctx, db.w, f)
	}
	return db.tx(ctx, func(tx *sql.Tx) error { return f(sqlQueueTx{db, tx}) })
}

// sqlQueueTx runs statements through database/sql, one at a time, with
// the writer's prepared statements.
type sqlQueueTx struct {
	db *DB
	tx *sql.Tx
}

func (t sqlQueueTx) Run(ctx context.Context, stmts ...Statement) error {
	for _, s := range stmts {
		st, err := t.db.txStmt(ctx, t.tx, s.Query)
		if err != nil {
			return err
		}
		if s.Scan == nil {
			res, err := st.ExecContext(ctx, s.Args...)
			if err != nil {
				return err
			}
			if s.RowsAffected != nil {
				if *s.RowsAffected, err = res.RowsAffected(); err != nil {
					return err
				}
			}
			continue
		}
		if err := scanRows(ctx, st, s.Args, s.Scan); err != nil {
			return err
		}
	}
	return nil
}

// scanRows runs a prepared query and calls scan for every row.
func scanRows(ctx context.Context, st *sql.Stmt, args []any, scan func(Row) error) error {
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
