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
// Status changes go through Transition, the lifecycle's one table: a move
// that the table rejects changes nothing and is reported as an Outcome, not
// an error. The database enforces the same rules with a trigger for writers
// that do not use this package, and records every status change, whoever
// made it, in the delegation_events audit table.
//
// Errors wrap ErrNotFound, ErrInvalid (with a *FieldError naming the
// argument) or ErrConflict where they apply.
package ledger
