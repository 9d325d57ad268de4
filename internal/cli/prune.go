package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tasksweeper/sweeper/internal/daemon"
	"github.com/tasksweeper/sweeper/retention"
)

// pruneSummary is the --output json line of `sweeper prune`. Field names are
// a contract.
type pruneSummary struct {
	Pruned       int            `json:"pruned"`
	EventsPruned int            `json:"events_pruned"`
	ByStatus     pruneByStatus  `json:"by_status"`
	Batches      int            `json:"batches"`
	DurationMS   int64          `json:"duration_ms"`
	DryRun       bool           `json:"dry_run"`
	ArchiveFiles int            `json:"archive_files"`
	ArchiveBytes int64          `json:"archive_bytes"`
	OverdueRows  map[string]int `json:"overdue_rows"`
	Interrupted  bool           `json:"interrupted,omitempty"`
}

// pruneByStatus is by_status of the summary, in the documented key order.
type pruneByStatus struct {
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
	Stuck     int `json:"stuck"`
}

// runPrune runs one full prune pass (`sweeper prune [--dry-run]`) with the
// retention.* configuration and prints what it deleted.
func (inv *invocation) runPrune(ctx context.Context) error {
	cfg, log, pool, closeAll, err := inv.openLedger(ctx)
	if err != nil {
		return err
	}
	defer closeAll()
	p, err := retention.New(pool, daemon.RetentionConfig(cfg, log))
	if err != nil {
		return err
	}
	res, err := p.RunOnce(ctx)
	interrupted := errors.Is(err, context.Canceled) && ctx.Err() != nil
	if err != nil && !interrupted {
		return err
	}
	if inv.opts.output == "json" {
		sum := pruneSummary{
			Pruned: res.Pruned, EventsPruned: res.EventsPruned,
			ByStatus: pruneByStatus{Completed: res.ByStatus["completed"], Failed: res.ByStatus["failed"], Stuck: res.ByStatus["stuck"]},
			Batches:  res.Batches, DurationMS: res.Duration.Milliseconds(), DryRun: res.DryRun,
			ArchiveFiles: res.ArchiveFiles, ArchiveBytes: res.ArchiveBytes,
			OverdueRows: map[string]int{}, Interrupted: interrupted,
		}
		for s, n := range res.OverdueRows {
			sum.OverdueRows[s] = int(n)
		}
		b, _ := json.Marshal(sum)
		fmt.Fprintln(inv.stdout, string(b))
		return nil
	}
	verb := "deleted"
	if res.DryRun {
		verb = "would delete"
	}
	line := fmt.Sprintf("%s %d delegations (completed %d, failed %d, stuck %d) and %d events in %d batches, %s",
		verb, res.Pruned, res.ByStatus["completed"], res.ByStatus["failed"], res.ByStatus["stuck"],
		res.EventsPruned, res.Batches, res.Duration.Round(time.Millisecond))
	if res.ArchiveFiles > 0 {
		line += fmt.Sprintf("; archived in %d files, %d bytes", res.ArchiveFiles, res.ArchiveBytes)
	}
	if interrupted {
		line += " (interrupted)"
	}
	fmt.Fprintln(inv.stdout, line)
	return nil
}

// errArchiveProblems is returned by `sweeper archive verify` after printing
// the problems it found (exit 1).
var errArchiveProblems = errors.New("the archive has problems (listed above)")

// runArchive runs `sweeper archive verify DIR`.
func (inv *invocation) runArchive(args []string) error {
	if len(args) != 2 || args[0] != "verify" {
		return usagef("usage: sweeper archive verify DIR")
	}
	rep, err := retention.VerifyArchive(args[1])
	if err != nil {
		return err
	}
	if inv.opts.output == "json" {
		b, _ := json.Marshal(map[string]any{"ok": rep.OK(), "report": rep})
		fmt.Fprintln(inv.stdout, string(b))
	} else {
		fmt.Fprintf(inv.stdout, "%d files, %d delegations, %d events, %d bytes; %d delegations in more than one file\n",
			rep.Files, rep.Delegations, rep.Events, rep.Bytes, rep.Duplicates)
		if len(rep.Incomplete) > 0 {
			fmt.Fprintf(inv.stdout, "incomplete (a crash during the write; the batch was not deleted): %s\n",
				strings.Join(rep.Incomplete, ", "))
		}
		for _, p := range rep.Problems {
			fmt.Fprintln(inv.stdout, "problem:", p)
		}
	}
	if !rep.OK() {
		return errArchiveProblems
	}
	return nil
}
