package main_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/webhook"
	"github.com/tasksweeper/sweeper/webhook/receiver"
)

// Webhooks through the real binary, to a receiver that verifies each
// delivery with the Standard Webhooks reference library: a subscription
// from the CLI (its secret printed once, never listed), the daemon killed
// with SIGKILL while a delivery is in flight, and a new daemon that takes
// the dead one's lease over once it expires: every event of the run is
// delivered at least once, duplicates carry the same webhook-id, and every
// delivery verifies.
func TestWebhooksSurviveSIGKILLMidDelivery(t *testing.T) {
	t.Parallel()
	rcv := receiver.Start(t, 250*time.Millisecond)
	srv := testdb.StartServer(t, pgserver.Options{})
	env := []string{"SWEEPER_DATABASE_URL=" + srv.URL, "SWEEPER_WEBHOOKS_ALLOW_HTTP=true", "SWEEPER_WEBHOOKS_ALLOW_PRIVATE_NETWORKS=true"}
	if r := run(t, env, "migrate", "up"); r.Code != 0 {
		t.Fatalf("migrate up: %s", r)
	}
	// Refusals: http without webhooks.allow_http, a private address without
	// webhooks.allow_private_networks, an unknown status.
	for _, bad := range [][]string{
		{"SWEEPER_DATABASE_URL=" + srv.URL},
		{"SWEEPER_DATABASE_URL=" + srv.URL, "SWEEPER_WEBHOOKS_ALLOW_HTTP=true"},
	} {
		if r := run(t, bad, "webhook", "create", "--url", rcv.URL+"/hook/a"); r.Code != 2 || !strings.Contains(r.Stderr, "url") {
			t.Fatalf("webhook create without the allow keys: %s", r)
		}
	}
	if r := run(t, env, "webhook", "create", "--url", rcv.URL+"/hook/a", "--events", "stuck,exploded"); r.Code != 2 || !strings.Contains(r.Stderr, "exploded") {
		t.Fatalf("webhook create --events exploded: %s", r)
	}
	r := run(t, env, "webhook", "create", "--url", rcv.URL+"/hook/a", "--output", "json")
	var created struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &created) != nil || !strings.HasPrefix(created.Secret, "whsec_") {
		t.Fatalf("webhook create: %s", r)
	}
	rcv.SetSecret(t, "/hook/a", created.Secret)
	list := run(t, env, "webhook", "list")
	if list.Code != 0 || !strings.Contains(list.Stdout, created.ID) || strings.Contains(list.Stdout+list.Stderr, created.Secret) {
		t.Fatalf("webhook list: %s", list)
	}

	ctx := context.Background()
	pool, err := pgxpool.New(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	// 20 delegations, each inserted and completed: 40 events.
	if _, err := pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id)
		SELECT 'k-' || g, 'c', 'w' FROM generate_series(1, 20) AS g`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE delegations SET status = 'completed'`); err != nil {
		t.Fatal(err)
	}
	var want []int64
	rows, _ := pool.Query(ctx, `SELECT id FROM delegation_events ORDER BY id`)
	for rows.Next() {
		var id int64
		_ = rows.Scan(&id)
		want = append(want, id)
	}
	rows.Close()
	if len(want) != 40 {
		t.Fatalf("%d events, want 40", len(want))
	}

	daemonEnv := append(env, "SWEEPER_SWEEP_SCHEDULE=@every 1h", "SWEEPER_WEBHOOKS_TIMEOUT=5s",
		"SWEEPER_WEBHOOKS_LEASE_TTL=6s", "SWEEPER_WEBHOOKS_POLL_INTERVAL=100ms", "SWEEPER_WEBHOOKS_RETRY_MIN_BACKOFF=50ms")
	first := testbin.StartDaemon(t, binary, "first", daemonEnv)
	// Wait until a delivery is in flight (received, not yet answered) after
	// a few were answered, then kill the daemon.
	var inFlight string
	testbin.Eventually(t, 60*time.Second, "a delivery in flight after five answered", func() bool {
		lines := rcv.Lines(t)
		answered := map[string]int{}
		n := 0
		for _, l := range lines {
			if l.Phase == "answered" {
				answered[l.WebhookID]++
				n++
			}
		}
		if n < 5 || lines[len(lines)-1].Phase != "received" {
			return false
		}
		inFlight = lines[len(lines)-1].WebhookID
		return answered[inFlight] == 0
	})
	if code := first.Stop(t, syscall.SIGKILL, 10*time.Second); code != -1 {
		t.Fatalf("SIGKILL: exit %d", code)
	}
	killedAt := time.Now()

	second := testbin.StartDaemon(t, binary, "second", daemonEnv)
	testbin.Eventually(t, 90*time.Second, "every event delivered", func() bool {
		got := map[int64]bool{}
		for _, l := range rcv.Answered(t) {
			if l.Verified {
				got[l.EventID] = true
			}
		}
		for _, id := range want {
			if !got[id] {
				return false
			}
		}
		return true
	})
	handover := time.Since(killedAt)

	seen := map[string]int{}
	for _, l := range rcv.Answered(t) {
		if !l.Verified || l.WebhookID != webhook.WebhookID(l.EventID) || l.Type != "delegation.queued" && l.Type != "delegation.completed" {
			t.Fatalf("delivery %+v", l)
		}
		seen[l.WebhookID]++
	}
	if seen[inFlight] < 2 {
		t.Fatalf("the delivery in flight at the kill (%s) came %d times, want again after the restart", inFlight, seen[inFlight])
	}
	var dups []string
	for id, n := range seen {
		if n > 1 {
			dups = append(dups, id)
		}
	}
	slices.Sort(dups)
	t.Logf("40 events delivered, all verified by standardwebhooks; duplicates (same webhook-id): %v; handover and the rest in %s",
		dups, handover.Round(time.Millisecond))
	// The cursor ends at the last event, on the second daemon's lease.
	testbin.Eventually(t, 10*time.Second, "the cursor at the last event", func() bool {
		var cursor int64
		_ = pool.QueryRow(ctx, `SELECT cursor_id FROM webhook_subscriptions WHERE id = $1`, created.ID).Scan(&cursor)
		return cursor == want[len(want)-1]
	})
	second.Stop(t, syscall.SIGTERM, 30*time.Second)
	for _, d := range []*testbin.Daemon{first, second} {
		if strings.Contains(d.Logs(), strings.TrimPrefix(created.Secret, "whsec_")) {
			t.Fatalf("%s logged the secret", d.Name)
		}
	}
}

// The other webhook commands through the binary: rotate-secret prints a new
// secret once (the old one keeps signing, said on stderr), resume of a
// paused subscription makes it active, delete removes it, and a second
// delete or a malformed id is a usage error (exit 2).
func TestWebhookCommands(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	env := []string{"SWEEPER_DATABASE_URL=" + db.URL}
	r := run(t, env, "webhook", "create", "--url", "https://hooks.example.com/sweeper", "--events", "stuck,failed", "--caller-id", "billing")
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if r.Code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "wh_") || !strings.HasPrefix(lines[1], "whsec_") ||
		!strings.Contains(r.Stderr, "shown once") {
		t.Fatalf("webhook create: %s", r)
	}
	id, secret := lines[0], lines[1]
	r = run(t, env, "webhook", "rotate-secret", id, "--output", "json")
	var rotated struct {
		ID             string `json:"id"`
		Secret         string `json:"secret"`
		RotationEndsAt string `json:"rotation_ends_at"`
	}
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &rotated) != nil || rotated.ID != id || rotated.Secret == secret ||
		!strings.HasPrefix(rotated.Secret, "whsec_") || rotated.RotationEndsAt == "" {
		t.Fatalf("webhook rotate-secret: %s", r)
	}
	if _, err := db.Pool.Exec(context.Background(), `UPDATE webhook_subscriptions SET state = 'paused', state_reason = 'test'`); err != nil {
		t.Fatal(err)
	}
	if r := run(t, env, "webhook", "resume", id); r.Code != 0 || !strings.Contains(r.Stdout, "resumed webhook subscription "+id) {
		t.Fatalf("webhook resume: %s", r)
	}
	list := run(t, env, "webhook", "list", "--output", "json")
	if list.Code != 0 || !strings.Contains(list.Stdout, `"state":"active"`) || !strings.Contains(list.Stdout, `"events":["stuck","failed"]`) ||
		strings.Contains(list.Stdout, "whsec_") {
		t.Fatalf("webhook list: %s", list)
	}
	if r := run(t, env, "webhook", "delete", id); r.Code != 0 {
		t.Fatalf("webhook delete: %s", r)
	}
	for _, bad := range [][]string{
		{"webhook", "delete", id}, {"webhook", "resume", "wh_nope"}, {"webhook", "rotate-secret"},
		{"webhook", "create"}, {"webhook", "frobnicate"}, {"webhook", "create", "--url", "https://x.example.com", "--callee-id", " "},
	} {
		if r := run(t, env, bad...); r.Code != 2 {
			t.Errorf("%v: want exit 2, got %s", bad, r)
		}
	}
}
