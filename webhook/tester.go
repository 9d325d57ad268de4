package webhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksweeper/sweeper/ledger"
)

// TestType is the type of a test delivery.
const TestType = "webhook.test"

// TesterConfig configures a Tester: the same rules as the Deliverer's.
type TesterConfig struct {
	Timeout                         time.Duration
	AllowHTTP, AllowPrivateNetworks bool
	// Resolver, when set, resolves destination names (tests).
	Resolver *net.Resolver
}

// testerConns is how many idle connections a Tester keeps per host: test
// deliveries go one at a time, at a person's pace.
const testerConns = 4

// Tester sends test deliveries (the console's "send test event"): signed
// as real ones, of type webhook.test, with a webhook-id of their own
// (test_ and random hex), through the same address checks. They are logged
// with the subscription's attempts (event id 0) and move no cursor.
type Tester struct {
	db   ledger.DB
	send sender
}

// NewTester returns a Tester over db.
func NewTester(db ledger.DB, cfg TesterConfig) *Tester {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = TimeoutDefault
	}
	return &Tester{db: db, send: sender{client: newClient(timeout, cfg.AllowPrivateNetworks, cfg.Resolver, testerConns),
		allowHTTP: cfg.AllowHTTP, allowPrivate: cfg.AllowPrivateNetworks}}
}

// Send sends one test delivery to subscription id, whatever its state, and
// returns the attempt as logged; ErrNotFound when there is none.
func (t *Tester) Send(ctx context.Context, id string) (Attempt, error) {
	if err := CheckID("id", id); err != nil {
		return Attempt{}, ErrNotFound
	}
	var url, secret, previous string
	err := t.db.QueryRow(ctx, testSubscriptionSQL, id).Scan(&url, &secret, &previous)
	if errors.Is(err, pgx.ErrNoRows) {
		return Attempt{}, ErrNotFound
	}
	if err != nil {
		return Attempt{}, fmt.Errorf("reading webhook subscription: %w", err)
	}
	secrets := signingSecrets(secret, previous)
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	wid := "test_" + hex.EncodeToString(b)
	body, err := json.Marshal(map[string]any{
		"type": TestType, "timestamp": time.Now().UTC(),
		"data": map[string]string{"subscription_id": id, "message": "a test delivery from the sweeper console"},
	})
	if err != nil {
		return Attempt{}, err
	}
	res := t.send.post(ctx, url, wid, secrets, body)
	var code *int
	if res.status != 0 {
		code = &res.status
	}
	a := Attempt{WebhookID: wid, StatusCode: code, LatencyMS: int(res.latency.Milliseconds()), Outcome: string(res.outcome),
		Error: res.err, Response: res.response}
	if err := t.db.QueryRow(ctx, insertTestAttemptSQL, id, wid, code, a.LatencyMS, a.Outcome, a.Error, a.Response).Scan(&a.ID, &a.At); err != nil {
		return Attempt{}, fmt.Errorf("logging the test delivery: %w", err)
	}
	return a, nil
}
