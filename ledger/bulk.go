package ledger

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
)

// Bulk writes act on many delegations named by id, for operators (the
// console's actions on every delegation matching a filter). Each chunk of
// BulkChunk ids is one transaction; every row goes through the same rules
// and audit trigger as a single write.

// BulkChunk is the most rows one transaction of a bulk write touches.
const BulkChunk = 1000

// MaxBulk bounds the ids of one bulk write.
const MaxBulk = 10000

// BulkResult is what a bulk write did.
type BulkResult struct {
	// Applied counts the rows written: moved (SetStatusMany) or retried
	// (RetryMany). The others had moved, finished, been retried or deleted
	// since they were chosen, and were left as they are.
	Applied int
	// Retried and Exhausted count, for SetStatusMany, the rows moved whose
	// retry policy scheduled their next attempt, or had none left.
	Retried, Exhausted int
}

// checkBulk validates ids (at most MaxBulk) and returns them sorted and
// unique: concurrent bulk writes then lock rows in the same order.
func checkBulk(ids []string) ([]string, error) {
	if len(ids) > MaxBulk {
		return nil, &FieldError{Field: "delegation_ids", Reason: fmt.Sprintf("holds %d ids; at most %d per bulk write", len(ids), MaxBulk)}
	}
	for i, id := range ids {
		if err := checkID("", id); err != nil {
			return nil, named(err, "delegation_ids[%d]", i)
		}
	}
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	return slices.Compact(sorted), nil
}

// SetStatusMany moves each delegation of ids (at most MaxBulk) to to, where
// the lifecycle allows it, in transactions of BulkChunk rows; rows it does
// not allow are left as they are. c is recorded for each row as SetStatus
// records it.
func (l *Ledger) SetStatusMany(ctx context.Context, ids []string, to Status, c Change) (BulkResult, error) {
	var res BulkResult
	if !to.Valid() {
		return res, fmt.Errorf("setting status: %w", &UnknownStatusError{Value: string(to)})
	}
	if err := c.validate(); err != nil {
		return res, fmt.Errorf("setting status: %w", err)
	}
	sorted, err := checkBulk(ids)
	if err != nil {
		return res, fmt.Errorf("setting status: %w", err)
	}
	for chunk := range slices.Chunk(sorted, BulkChunk) {
		batch := &pgx.Batch{}
		batch.Queue(setWriterSQL, c.Actor, c.Reason, "")
		batch.Queue(setStatusManySQL, chunk, to, StatusStrings(Sources(to)),
			Truncate(c.Result, MaxResultPreviewRunes), Truncate(c.Error, MaxErrorDetailRunes))
		br := l.db.SendBatch(ctx, batch)
		_, err := br.Exec()
		var n, retried, exhausted int
		if err == nil {
			err = br.QueryRow().Scan(&n, &retried, &exhausted)
		}
		if closeErr := br.Close(); err == nil {
			err = closeErr
		}
		if err != nil {
			return res, wrapDBError(fmt.Sprintf("setting %d delegations to %s", len(chunk), to), err)
		}
		res.Applied += n
		res.Retried += retried
		res.Exhausted += exhausted
	}
	return res, nil
}

// RetryMany records the next attempt of each delegation of ids (at most
// MaxBulk) that failed or got stuck and has none yet, as Retry does with
// zero RetryOptions: the derived id (NextAttemptID), the same caller,
// callee, preview, idempotency key, heartbeat timeout and retry policy, due
// now, with a new DefaultTimeout deadline. Rows that are live, completed or
// already retried, or whose derived id is taken or too long, are left as
// they are. actor and reason are recorded in the new attempts' events.
func (l *Ledger) RetryMany(ctx context.Context, ids []string, actor, reason string) (BulkResult, error) {
	var res BulkResult
	for _, f := range []struct{ name, v string }{{"actor", actor}, {"reason", reason}} {
		if err := checkText(f.name, f.v, false); err != nil {
			return res, fmt.Errorf("retrying delegations: %w", err)
		}
	}
	sorted, err := checkBulk(ids)
	if err != nil {
		return res, fmt.Errorf("retrying delegations: %w", err)
	}
	for chunk := range slices.Chunk(sorted, BulkChunk) {
		batch := &pgx.Batch{}
		batch.Queue(setWriterSQL, actor, reason, "")
		batch.Queue(retryManySQL, chunk, retryableNames, DefaultTimeout.Seconds())
		br := l.db.SendBatch(ctx, batch)
		_, err := br.Exec()
		var n int
		if err == nil {
			err = br.QueryRow().Scan(&n)
		}
		if closeErr := br.Close(); err == nil {
			err = closeErr
		}
		if err != nil {
			return res, wrapDBError(fmt.Sprintf("retrying %d delegations", len(chunk)), err)
		}
		res.Applied += n
	}
	return res, nil
}
