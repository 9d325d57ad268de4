// Package worker runs a delegation's work the way the ledger expects a
// worker to: Run marks the delegation in_progress, heartbeats while the
// work runs (through a ledger.Coalescer, at a third of the delegation's
// heartbeat timeout), stops the work as soon as a heartbeat says the
// delegation is no longer live, and records the outcome:
//
//	err := worker.Run(ctx, l, "task-42", func(ctx context.Context, t *worker.Task) error {
//		_ = t.Progress(map[string]any{"step": "render"}) // sent with the next heartbeat
//		out, err := render(ctx, t.Delegation.TaskPreview) // honours ctx
//		if err != nil {
//			return err // recorded as failed, err's text as error_detail
//		}
//		t.SetResult(out) // recorded as completed, with this result preview
//		return nil
//	})
//
// When the ledger stops answering live (the sweeper marked the delegation
// stuck, its caller failed it, another worker completed it), the work's
// context is cancelled with a *NotLiveError as its cause
// (context.Cause(ctx)) that says which. A panic is recorded as failed and
// panics again.
//
// The task helper has the same shape in the Python (clients/python) and
// TypeScript (clients/typescript) clients, over the HTTP API.
package worker
