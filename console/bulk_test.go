package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/ledger"
)

var bulkCountRE = regexp.MustCompile(`data-testid="bulk-count">(\d+)<`)

// bulkCount is the count a bulk confirmation page shows ("" when none).
func bulkCount(body string) string {
	if m := bulkCountRE.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

// Bulk actions on the list's filter: the confirmation page counts exactly
// the rows the action acts on (in flight for "mark failed", failed or stuck
// without a next attempt for "retry"), the POST needs an admin and the
// session's CSRF token, acts on those rows only, each audited as
// console:<token name>, and a retry keeps the rows' retry policy.
func TestBulkActions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	for i := range 30 {
		st := ledger.StatusInProgress
		if i%3 == 0 {
			st = ledger.StatusQueued
		}
		e.insert(fmt.Sprintf("bulk-%02d", i), "billing", "indexer", st, "")
	}
	e.insert("other-caller", "search", "indexer", ledger.StatusInProgress, "")
	e.insert("done", "billing", "indexer", ledger.StatusInProgress, "")
	if _, err := e.ledger.SetStatus(ctx, "done", ledger.StatusCompleted, ledger.Change{}); err != nil {
		t.Fatal(err)
	}
	admin := e.client()
	csrf := admin.signIn(e.tokens[auth.RoleAdmin])

	list := admin.get("/delegations?caller_id=billing")
	if !strings.Contains(list.body, `href="/bulk?action=fail&amp;caller_id=billing"`) {
		t.Fatalf("the list offers no bulk action on its filter:\n%s", list.body)
	}
	page := admin.get("/bulk?action=fail&caller_id=billing")
	if page.code != http.StatusOK || bulkCount(page.body) != "30" {
		t.Fatalf("confirmation: %d, count %q:\n%s", page.code, bulkCount(page.body), page.body)
	}
	if got := bulkCount(admin.get("/bulk?action=fail&caller_id=billing&status=queued").body); got != "10" {
		t.Fatalf("queued count %q, want 10", got)
	}
	if body := admin.get("/bulk?action=retry&caller_id=billing").body; bulkCount(body) != "" || !strings.Contains(body, "Nothing to do") {
		t.Fatalf("retry confirmation with nothing failed:\n%s", body)
	}
	if r := admin.get("/bulk?action=delete&caller_id=billing"); r.code != http.StatusBadRequest {
		t.Fatalf("unknown action: %d", r.code)
	}

	form := url.Values{"action": {"fail"}, "caller_id": {"billing"}, "status": {"queued"}, "reason": {"drain"}}
	for _, c := range []struct {
		name string
		csrf string
		hdr  []string
		code int
	}{
		{"no CSRF token", "", nil, http.StatusForbidden},
		{"wrong CSRF token", "AAAA", nil, http.StatusForbidden},
		{"cross-site", csrf, []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
	} {
		f := url.Values{}
		for k, v := range form {
			f[k] = v
		}
		if c.csrf != "" {
			f.Set("csrf", c.csrf)
		}
		if r := admin.post("/bulk", f, c.hdr...); r.code != c.code {
			t.Errorf("%s: %d, want %d", c.name, r.code, c.code)
		}
	}
	for _, role := range []auth.Role{auth.RoleReader, auth.RoleCaller, auth.RoleWorker} {
		u := e.client()
		tok := u.signIn(e.tokens[role])
		if r := u.get("/bulk?action=fail&caller_id=billing"); r.code != http.StatusForbidden {
			t.Errorf("%s confirmation = %d, want 403", role, r.code)
		}
		f := url.Values{"csrf": {tok}}
		for k, v := range form {
			f[k] = v
		}
		if r := u.post("/bulk", f); r.code != http.StatusForbidden {
			t.Errorf("%s POST = %d, want 403", role, r.code)
		}
	}
	var failed int
	if err := e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM delegations WHERE status = 'failed'`).Scan(&failed); err != nil || failed != 0 {
		t.Fatalf("refused requests failed %d rows (%v)", failed, err)
	}

	form.Set("csrf", csrf)
	r := admin.post("/bulk", form)
	if r.code != http.StatusOK || !strings.Contains(r.body, `data-testid="bulk-applied">10<`) {
		t.Fatalf("bulk fail: %d\n%s", r.code, r.body)
	}
	if err := e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM delegation_events e JOIN delegations d USING (delegation_id)
		WHERE e.to_status = 'failed' AND e.actor = 'console:root' AND e.reason = 'drain' AND d.caller_id = 'billing'`).Scan(&failed); err != nil || failed != 10 {
		t.Fatalf("%d audited failed rows (%v), want 10", failed, err)
	}

	// Retry the ten: a confirmation of 10, then their next attempts.
	if got := bulkCount(admin.get("/bulk?action=retry&caller_id=billing").body); got != "10" {
		t.Fatalf("retry count %q, want 10", got)
	}
	r = admin.post("/bulk", url.Values{"action": {"retry"}, "caller_id": {"billing"}, "reason": {"again"}, "csrf": {csrf}})
	if r.code != http.StatusOK || !strings.Contains(r.body, `data-testid="bulk-applied">10<`) {
		t.Fatalf("bulk retry: %d\n%s", r.code, r.body)
	}
	d, err := e.ledger.Get(ctx, "bulk-00#2")
	if err != nil || d.Status != ledger.StatusQueued || d.RetryOf != "bulk-00" {
		t.Fatalf("bulk-00#2: %+v %v", d, err)
	}
	if got := bulkCount(admin.get("/bulk?action=retry&caller_id=billing").body); got != "" {
		t.Fatalf("retry count after the retry %q, want none", got)
	}
}

// One bulk action acts on at most 10,000 rows: the confirmation says so,
// the action writes that many and says more remain; a second run does the
// rest.
func TestBulkActionIsBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	const rows = ledger.MaxBulk + 25
	if _, err := e.db.Pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status)
		SELECT 'many-' || g, 'billing', 'indexer', 'dispatched' FROM generate_series(1, $1) g`, rows); err != nil {
		t.Fatal(err)
	}
	admin := e.client()
	csrf := admin.signIn(e.tokens[auth.RoleAdmin])
	page := admin.get("/bulk?action=fail&status=dispatched")
	if bulkCount(page.body) != fmt.Sprint(ledger.MaxBulk) || !strings.Contains(page.body, "more match") {
		t.Fatalf("confirmation count %q:\n%s", bulkCount(page.body), page.body)
	}
	form := url.Values{"action": {"fail"}, "status": {"dispatched"}, "reason": {"drain"}, "csrf": {csrf}}
	r := admin.post("/bulk", form)
	if r.code != http.StatusOK || !strings.Contains(r.body, fmt.Sprintf(`data-testid="bulk-applied">%d<`, ledger.MaxBulk)) || !strings.Contains(r.body, "run it again") {
		t.Fatalf("first run: %d\n%s", r.code, r.body)
	}
	if r := admin.post("/bulk", form); !strings.Contains(r.body, `data-testid="bulk-applied">25<`) {
		t.Fatalf("second run:\n%s", r.body)
	}
	var failed int
	if err := e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM delegation_events WHERE to_status = 'failed' AND actor = 'console:root'`).Scan(&failed); err != nil || failed != rows {
		t.Fatalf("%d failed events (%v), want %d", failed, err, rows)
	}
}

// "Retry now" on a failed or stuck delegation's page: admin only, CSRF,
// the next attempt due now, audited; the chain and the policy are shown;
// the overview counts the retries and the exhausted attempts.
func TestRetryNowAndChain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	if _, err := e.ledger.Insert(ctx, ledger.NewDelegation{DelegationID: "job", CallerID: "billing", CalleeID: "indexer",
		Status: ledger.StatusInProgress, Retry: ledger.RetryPolicy{MaxAttempts: 3, On: []ledger.Status{ledger.StatusFailed}}}); err != nil {
		t.Fatal(err)
	}
	admin := e.client()
	csrf := admin.signIn(e.tokens[auth.RoleAdmin])
	if body := admin.get("/delegations/job").body; strings.Contains(body, `data-testid="retry-action"`) ||
		!strings.Contains(body, "on failed, up to 3 attempts; backoff 30s doubling to 1h0m0s") {
		t.Fatalf("live delegation's page:\n%s", body)
	}
	// Failed: the policy schedules job#2 (not due for 30 s); job#2 failed by
	// hand too, then job#3 is the last.
	if _, err := e.ledger.SetStatus(ctx, "job", ledger.StatusFailed, ledger.Change{}); err != nil {
		t.Fatal(err)
	}
	if body := admin.get("/delegations/job").body; strings.Contains(body, `data-testid="retry-action"`) {
		t.Fatal("a delegation the policy already retried offers Retry now")
	}
	if _, err := e.ledger.SetStatus(ctx, "job#2", ledger.StatusFailed, ledger.Change{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ledger.SetStatus(ctx, "job#3", ledger.StatusFailed, ledger.Change{}); err != nil {
		t.Fatal(err)
	}
	body := admin.get("/delegations/job%233").body
	if !strings.Contains(body, `data-testid="exhausted"`) || !strings.Contains(body, `data-testid="retry-action"`) ||
		strings.Count(body, `data-testid="attempt-outcome"`) != 3 {
		t.Fatalf("exhausted attempt's page:\n%s", body)
	}
	reader := e.client()
	tok := reader.signIn(e.tokens[auth.RoleReader])
	if r := reader.post("/delegations/job%233/retry", url.Values{"csrf": {tok}}); r.code != http.StatusForbidden {
		t.Fatalf("reader retry = %d", r.code)
	}
	if r := admin.post("/delegations/job%233/retry", url.Values{}); r.code != http.StatusForbidden {
		t.Fatalf("retry without CSRF = %d", r.code)
	}
	r := admin.post("/delegations/job%233/retry", url.Values{"csrf": {csrf}})
	if r.code != http.StatusSeeOther || r.header.Get("Location") != "/delegations/job%234?outcome=created" {
		t.Fatalf("retry now = %d %q", r.code, r.header.Get("Location"))
	}
	d, err := e.ledger.Get(ctx, "job#4")
	if err != nil || d.Status != ledger.StatusQueued || d.NotBefore == nil || d.MaxAttempts != 3 {
		t.Fatalf("job#4 = %+v, %v", d, err)
	}
	evs, err := e.ledger.Events(ctx, "job#4")
	if err != nil || len(evs) != 1 || evs[0].Actor != "console:root" {
		t.Fatalf("job#4 events %+v, %v", evs, err)
	}
	if body := admin.get("/delegations/job%234?outcome=created").body; !strings.Contains(body, "Retried: its next attempt is queued") {
		t.Fatalf("notice missing:\n%s", body)
	}
	ov := admin.get("/").body
	for _, want := range []string{`data-testid="retries-hour">3<`, `data-testid="retries-day">3<`, `data-testid="exhausted-hour">1<`, `data-testid="exhausted-day">1<`} {
		if !strings.Contains(ov, want) {
			t.Errorf("overview lacks %s", want)
		}
	}
}
