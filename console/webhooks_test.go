package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/console"
	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/webhook"
)

// The /webhooks pages: admin only; each subscription's state and lag behind
// the feed; a paused one shows a banner, its attempts, and a Resume button
// that needs the session's CSRF token; Send test event posts a signed
// webhook.test delivery that verifies with the subscription's secret.
func TestWebhooksPage(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []*http.Request
	var bodies [][]byte
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, bodies = append(got, r), append(bodies, b)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(rcv.Close)
	var tester *webhook.Tester
	e := newEnv(t, false, func(c *console.Config) {
		tester = webhook.NewTester(c.Pool, webhook.TesterConfig{Timeout: 5 * time.Second, AllowHTTP: true, AllowPrivateNetworks: true})
		c.WebhookTester = tester
	})
	ctx := context.Background()
	store := webhook.NewStore(e.db.Pool)
	sub, err := store.Create(ctx, webhook.NewSubscription{URL: rcv.URL + "/hook", AllowHTTP: true, AllowPrivate: true, Events: []ledger.Status{"stuck"}})
	if err != nil {
		t.Fatal(err)
	}
	e.insert("w-1", "billing", "indexer", ledger.StatusQueued, "")
	e.insert("w-2", "billing", "indexer", ledger.StatusQueued, "")
	if _, err := e.db.Pool.Exec(ctx, `UPDATE webhook_subscriptions SET state = 'paused', state_reason = 'paused after failing for 72h0m0s; last error: HTTP 503'`); err != nil {
		t.Fatal(err)
	}

	for _, role := range []auth.Role{auth.RoleReader, auth.RoleCaller, auth.RoleWorker} {
		c := e.client()
		c.signIn(e.tokens[role])
		if r := c.get("/webhooks"); r.code != http.StatusForbidden {
			t.Errorf("%s GET /webhooks = %d", role, r.code)
		}
		if strings.Contains(c.get("/").body, `href="/webhooks"`) {
			t.Errorf("%s sees the Webhooks link", role)
		}
	}
	admin := e.client()
	csrf := admin.signIn(e.tokens[auth.RoleAdmin])
	list := admin.get("/webhooks")
	if list.code != 200 || !strings.Contains(list.body, sub.ID) || !strings.Contains(list.body, `data-testid="paused-banner"`) ||
		!strings.Contains(list.body, `<td data-testid="lag">2</td>`) || strings.Contains(list.body, "whsec_") {
		t.Fatalf("GET /webhooks = %d:\n%s", list.code, list.body)
	}
	page := admin.get("/webhooks/" + sub.ID)
	if page.code != 200 || !strings.Contains(page.body, "HTTP 503") || !strings.Contains(page.body, "Resume</button>") {
		t.Fatalf("GET /webhooks/%s = %d:\n%s", sub.ID, page.code, page.body)
	}
	if r := admin.get("/webhooks/wh_000000000000000000000000"); r.code != http.StatusNotFound {
		t.Fatalf("unknown subscription: %d", r.code)
	}
	if r := admin.post("/webhooks/"+sub.ID+"/resume", url.Values{}); r.code != http.StatusForbidden {
		t.Fatalf("resume without CSRF: %d", r.code)
	}
	r := admin.post("/webhooks/"+sub.ID+"/resume", url.Values{"csrf": {csrf}})
	if r.code != http.StatusSeeOther || r.header.Get("Location") != "/webhooks/"+sub.ID+"?outcome=resumed" {
		t.Fatalf("resume: %d %q", r.code, r.header.Get("Location"))
	}
	if s, _ := store.Get(ctx, sub.ID); s.State != webhook.Active {
		t.Fatalf("after resume: %s", s.State)
	}
	r = admin.post("/webhooks/"+sub.ID+"/test", url.Values{"csrf": {csrf}})
	if r.code != http.StatusSeeOther {
		t.Fatalf("test: %d %s", r.code, r.body)
	}
	mu.Lock()
	if len(got) != 1 {
		mu.Unlock()
		t.Fatalf("%d test deliveries", len(got))
	}
	req, body := got[0], bodies[0]
	mu.Unlock()
	if err := webhook.Verify(sub.Secret, req.Header, body, time.Now(), 0); err != nil || !strings.Contains(string(body), `"type":"webhook.test"`) {
		t.Fatalf("test delivery %s: %v", body, err)
	}
	page = admin.get("/webhooks/" + sub.ID + "?outcome=tested")
	if !strings.Contains(page.body, "Test event sent") || !strings.Contains(page.body, req.Header.Get("webhook-id")) ||
		!strings.Contains(page.body, "<td>202</td>") || strings.Contains(page.body, `data-testid="paused-banner"`) {
		t.Fatalf("after the test:\n%s", page.body)
	}
}
