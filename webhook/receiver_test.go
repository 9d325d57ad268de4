package webhook_test

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/webhook"
	"github.com/tasksweeper/sweeper/webhook/receiver"
)

// Someone else's code verifies every delivery: the Node receiver checks
// each with the Standard Webhooks reference library (npm standardwebhooks),
// across a secret rotation (the receiver switches to the new secret, the
// deliveries still verify); a request signed with another secret is refused
// by the same receiver, so the check can fail.
func TestStandardWebhooksLibraryVerifiesDeliveries(t *testing.T) {
	t.Parallel()
	rcv := receiver.Start(t, 0)
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	store := webhook.NewStore(db.Pool)
	ctx := context.Background()
	sub, err := store.Create(ctx, webhook.NewSubscription{URL: rcv.URL + "/hook/a", AllowHTTP: true, AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	rcv.SetSecret(t, "/hook/a", sub.Secret)
	d := start(t, fast(db))
	lifecycle(t, l, "before-rotation", "c", 3)
	waitDelivered(t, d, 9)

	rotated, err := store.RotateSecret(ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	rcv.SetSecret(t, "/hook/a", rotated.Secret) // the receiver moves to the new secret at once
	lifecycle(t, l, "after-rotation", "c", 3)
	waitDelivered(t, d, 9)

	answered := rcv.Answered(t)
	if len(answered) != 18 {
		t.Fatalf("%d answered, want 18", len(answered))
	}
	for _, a := range answered {
		if !a.Verified || a.WebhookID != webhook.WebhookID(a.EventID) || a.Type == "" {
			t.Fatalf("the library did not verify %+v", a)
		}
	}

	// A forged delivery: signed with a secret that is not the subscription's.
	other, _ := webhook.NewSecret()
	body := []byte(`{"type":"delegation.stuck","timestamp":"2026-01-01T00:00:00Z","data":{"event":{"id":1}}}`)
	ts := time.Now().Unix()
	sig, _ := webhook.Signature([]string{other}, "evt_1", ts, body)
	req, _ := http.NewRequest(http.MethodPost, rcv.URL+"/hook/a", bytes.NewReader(body))
	req.Header.Set("webhook-id", "evt_1")
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a forged delivery got %d", resp.StatusCode)
	}
}
