// Package ledger is sweeper's delegation ledger: a durable record, in
// PostgreSQL, of tasks that a caller handed to a callee, and of how each one
// moved through its lifecycle (see Status).
//
// Every write can run inside the caller's own transaction, so a service can
// record a delegation atomically with its own data:
//
//	tx, err := pool.Begin(ctx)
//	...
//	res, err := ledger.New(pool).WithTx(tx).Insert(ctx, ledger.NewDelegation{
//		DelegationID: "task-42", CallerID: "billing", CalleeID: "invoice-agent",
//		TaskPreview: "render invoice 2026-11",
//	})
//	...
//	err = tx.Commit(ctx)
//
// A service on database/sql (github.com/lib/pq, pgx's stdlib, any
// PostgreSQL driver) gets the same Ledger from NewSQL, over a *sql.DB, a
// *sql.Conn or its own *sql.Tx:
//
//	tx, err := db.BeginTx(ctx, nil)
//	...
//	res, err := ledger.NewSQL(tx).Insert(ctx, ledger.NewDelegation{...})
//	...
//	err = tx.Commit()
//
// Status changes go through Transition, the lifecycle's one table: a move
// that the table rejects changes nothing and is reported as an Outcome, not
// an error. The database enforces the same rules with a trigger for writers
// that do not use this package, and records every status change, whoever
// made it, in the delegation_events audit table.
//
// Errors wrap ErrNotFound, ErrInvalid (with a *FieldError naming the
// argument) or ErrConflict where they apply.
//
// # Behind a connection pooler
//
// The ledger keeps no session state: its settings (the audit actor and
// reason) are transaction-local (set_config(..., true)), and each write is
// one statement or one transaction. Behind a pooler in transaction mode
// (PgBouncer pool_mode=transaction, RDS Proxy, Supavisor), give the pool a
// query exec mode that leaves no prepared statement on the server connection,
// since pgx's default (a named statement cache) fails there with SQLSTATE
// 42P05 ("prepared statement ... already exists") or 26000:
//
//	cfg, err := pgxpool.ParseConfig(dsn) // through the pooler
//	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec // or QueryExecModeSimpleProtocol
//	pool, err := pgxpool.NewWithConfig(ctx, cfg)
//
// Two things need a session and so a direct connection (or a session-mode
// pool): migrations (migrations.Up holds a session advisory lock), and a
// Waiter, whose connection LISTENs; NewPollingWaiter holds no connection and
// serves long polls by re-reading the feed. See docs/operations.md, "Behind a
// connection pooler".
package ledger
