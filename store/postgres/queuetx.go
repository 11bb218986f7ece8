package postgres

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/parleyhq/parley/store"
)

// queueTx runs f in a pgx transaction on one of db's connections, so that
// each Run goes out as one pipelined batch: a batch of sends costs five
// round trips (begin, lock-and-read, insert, count, commit) instead of one
// per statement, whatever its size.
func queueTx(ctx context.Context, db *sql.DB, f func(store.QueueTx) error) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("postgres: unexpected driver connection %T", dc)
		}
		return pgx.BeginFunc(ctx, c.Conn(), func(tx pgx.Tx) error { return f(pgxQueueTx{tx}) })
	})
}

// pgxQueueTx is a store.QueueTx whose Run is one pgx batch.
type pgxQueueTx struct{ tx pgx.Tx }

func (t pgxQueueTx) Run(ctx context.Context, stmts ...store.Statement) error {
	if len(stmts) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, s := range stmts {
		qq := b.Queue(s.Query, s.Args...)
		switch {
		case s.Scan != nil:
			scan := s.Scan
			qq.Query(func(rows pgx.Rows) error {
				for rows.Next() {
					if err := scan(rows); err != nil {
						return err
					}
				}
				return rows.Err()
			})
		case s.RowsAffected != nil:
			affected := s.RowsAffected
			qq.Exec(func(ct pgconn.CommandTag) error {
				*affected = ct.RowsAffected()
				return nil
			})
		}
	}
	return t.tx.SendBatch(ctx, b).Close()
}
