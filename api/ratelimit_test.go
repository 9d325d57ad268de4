package api_test

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/tasksweeper/sweeper/api"
)

var rateLimitField = regexp.MustCompile(`^"token";r=([0-9]+);t=([0-9]+)$`)

// TestRateLimitHeaders: every answer to a recognised token carries its
// bucket in RateLimit-Policy and RateLimit (errors too), a 429 adds
// Retry-After, each token has its own bucket, and an unlimited API sends
// none of them.
func TestRateLimitHeaders(t *testing.T) {
	t.Parallel()
	// 3 requests, then one per 1000 s: the clock cannot refill a request
	// while the test runs.
	e := newEnv(t, api.Options{RateLimit: 0.001, RateBurst: 3})
	state := func(r resp) (remaining, reset int) {
		t.Helper()
		if got := r.Header.Get("RateLimit-Policy"); got != `"token";q=3;w=3000` {
			t.Fatalf("%d: RateLimit-Policy %q", r.Code, got)
		}
		m := rateLimitField.FindStringSubmatch(r.Header.Get("RateLimit"))
		if m == nil {
			t.Fatalf("%d: RateLimit %q", r.Code, r.Header.Get("RateLimit"))
		}
		remaining, _ = strconv.Atoi(m[1])
		reset, _ = strconv.Atoi(m[2])
		return remaining, reset
	}
	// t is the seconds until the bucket is full: 1000 per request spent,
	// less the time the test took (under a second; 100 s would be absurd).
	near := func(got, want int) bool { return got <= want && got > want-100 }
	for i, path := range []string{"/v1/summary", "/v1/delegations/nope", "/v1/summary"} {
		r := e.do("reader", "GET", path, nil)
		if rem, reset := state(r); rem != 2-i || !near(reset, 1000*(i+1)) {
			t.Fatalf("request %d (%d): r=%d t=%d, want r=%d t=%d", i, r.Code, rem, reset, 2-i, 1000*(i+1))
		}
	}
	r := e.do("reader", "GET", "/v1/summary", nil)
	if r.Code != 429 {
		t.Fatalf("over the limit: %d", r.Code)
	}
	if rem, reset := state(r); rem != 0 || !near(reset, 3000) {
		t.Fatalf("429: r=%d t=%d", rem, reset)
	}
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || !near(ra, 1000) {
		t.Fatalf("429: Retry-After %q", r.Header.Get("Retry-After"))
	}
	// Another token has its own bucket.
	if rem, _ := state(e.do("admin", "GET", "/v1/summary", nil)); rem != 2 {
		t.Fatalf("other token: r=%d", rem)
	}
	// No token recognised: no bucket to tell of.
	if r := e.do("", "GET", "/v1/summary", nil); r.Code != 401 || r.Header.Get("RateLimit") != "" {
		t.Fatalf("unauthenticated: %d %v", r.Code, r.Header)
	}

	unlimited := newEnvOn(t, e.db, api.Options{})
	unlimited.tokens = e.tokens
	if r := unlimited.do("reader", "GET", "/v1/summary", nil); r.Code != 200 || r.Header.Get("RateLimit") != "" || r.Header.Get("RateLimit-Policy") != "" {
		t.Fatalf("unlimited: %d %v", r.Code, r.Header)
	}
}
