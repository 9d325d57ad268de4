// Command caller is the Go side of the three-language example: it records
// delegations with a retry policy over the HTTP API (apiclient), half for
// the Python pool and half for the TypeScript pool, then follows the feed
// until every chain of attempts has settled (completed, or exhausted its
// retries) and prints a summary as one JSON line.
//
//	SWEEPER_API=http://127.0.0.1:8080 SWEEPER_TOKEN=swp_... go run ./examples/polyglot/caller -n 100
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tasksweeper/sweeper/apiclient"
)

func main() {
	n := flag.Int("n", 100, "delegations to record")
	prefix := flag.String("prefix", "poly", "delegation id prefix")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	flag.Parse()
	if err := run(*n, *prefix, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "caller:", err)
		os.Exit(1)
	}
}

func run(n int, prefix string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := apiclient.New(os.Getenv("SWEEPER_API"), os.Getenv("SWEEPER_TOKEN"))
	// A chain retries a crash (failed) and a wedge (stuck: heartbeats
	// without progress, the stalled rule) up to 4 attempts in all.
	policy := &apiclient.RetryPolicy{MaxAttempts: 4, BackoffSeconds: 0.2, BackoffMaxSeconds: 1,
		On: []apiclient.Status{apiclient.StatusFailed, apiclient.StatusStuck}}
	pending := map[string]bool{}
	for i := range n {
		id := fmt.Sprintf("%s-%03d", prefix, i)
		callee := "py-pool"
		if i%2 == 1 {
			callee = "ts-pool"
		}
		if _, err := c.Insert(ctx, apiclient.InsertRequest{DelegationID: id, CalleeID: callee,
			TaskPreview: "render page " + id, TimeoutSeconds: 600, HeartbeatTimeoutSeconds: 5,
			ProgressTimeoutSeconds: 1, Retry: policy}); err != nil {
			return err
		}
		pending[id] = true
	}
	fmt.Fprintf(os.Stderr, "caller: recorded %d delegations\n", n)

	// Every terminal event may settle a chain: completed, or exhausted.
	sum := struct {
		Inserted  int `json:"inserted"`
		Completed int `json:"completed"`
		Exhausted int `json:"exhausted"`
		Retries   int `json:"retries"`
	}{Inserted: n}
	for ev, err := range c.Follow(ctx, apiclient.FeedQuery{Wait: 10 * time.Second}) {
		if err != nil {
			return fmt.Errorf("following the feed with %d chains pending: %w", len(pending), err)
		}
		if !ev.ToStatus.Terminal() {
			continue
		}
		root, _, _ := strings.Cut(ev.DelegationID, "#")
		if !pending[root] {
			continue
		}
		d, err := c.Get(ctx, ev.DelegationID)
		if err != nil {
			return err
		}
		switch {
		case d.Status == apiclient.StatusCompleted:
			sum.Completed++
		case d.Exhausted:
			sum.Exhausted++
		default:
			sum.Retries++ // the database records the next attempt
			continue
		}
		delete(pending, root)
		if len(pending) == 0 {
			break
		}
	}
	return json.NewEncoder(os.Stdout).Encode(sum)
}
