package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/parleyhq/parley/store"
)

// queueTx runs f in a transaction on one of db's connections, speaking
// pgx directly so that each Run goes out as one pipelined batch. BEGIN
// rides with the first Run, so a batch of sends costs four round trips
// (lock-and-read, insert, count, commit) instead of one per statement,
// whatever its size.
func queueTx(ctx context.Context, db *sql.DB, f func(store.QueueTx) error) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) (err error) {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("postgres: unexpected driver connection %T", dc)
		}
		t := &pgxQueueTx{conn: c.Conn()}
		committed := false
		defer func() {
			// Whatever ended f (an error, a failed batch that left the
			// transaction aborted, a panic), the connection goes back to
			// the pool outside any transaction. A fresh context: ctx may
			// be what failed.
			if t.begun && !committed {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				if _, rerr := t.conn.Exec(rctx, "ROLLBACK"); rerr != nil {
					err = errors.Join(err, rerr)
				}
			}
		}()
		if err = f(t); err != nil || !t.begun {
			return err
		}
		if _, err = t.conn.Exec(ctx, "COMMIT"); err == nil {
			committed = true
		}
		return err
	})
}

// pgxQueueTx is a store.QueueTx whose Run is one pgx batch.
type pgxQueueTx struct {
	conn  *pgx.Conn
	begun bool // BEGIN was sent
}

func (t *pgxQueueTx) Run(ctx context.Context, stmts ...store.Statement) error {
	if len(stmts) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	if !t.begun {
		b.Queue("BEGIN")
		t.begun = true
	}
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
	return t.conn.SendBatch(ctx, b).Close()
}
