package auth_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/testdb"
)

// A token the cache accepted is answered from memory until the TTL runs
// out, then read again: a real revoke in the database is refused at the
// first call after the TTL (the clock is moved by hand), and from then on.
// That the answer within the TTL comes from memory shows it: the database
// would refuse the revoked token.
func TestCacheRefusesRevokedTokenWithinTTL(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	store := auth.NewStore(db.Pool)
	tok, err := store.Create(ctx, "worker-a", auth.RoleWorker, "callee-a")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	c := auth.NewCache(store, time.Second)
	auth.SetCacheClock(c, func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	want := auth.Principal{TokenName: "worker-a", Role: auth.RoleWorker, ID: "callee-a"}
	if p, err := c.Authenticate(ctx, tok); err != nil || p != want {
		t.Fatalf("first call = %+v, %v", p, err)
	}
	if err := store.Revoke(ctx, "worker-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Authenticate(ctx, tok); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("the store accepts the revoked token: %v", err)
	}
	advance(999 * time.Millisecond)
	if p, err := c.Authenticate(ctx, tok); err != nil || p != want {
		t.Fatalf("within the TTL (answered from memory) = %+v, %v", p, err)
	}
	advance(time.Millisecond)
	if _, err := c.Authenticate(ctx, tok); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("at the TTL, the revoked token: %v", err)
	}
	if _, err := c.Authenticate(ctx, tok); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("after the TTL, the revoked token: %v", err)
	}

	// A refused token is never remembered: a token created under a name
	// after a failed attempt with a wrong token is accepted at once, and a
	// malformed one is refused without a query.
	tok2, err := store.Create(ctx, "worker-b", auth.RoleWorker, "callee-b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Authenticate(ctx, tok2[:len(tok2)-1]+"x"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("wrong token: %v", err)
	}
	if _, err := c.Authenticate(ctx, "not a token"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("malformed token: %v", err)
	}
	if p, err := c.Authenticate(ctx, tok2); err != nil || p.TokenName != "worker-b" {
		t.Fatalf("second token = %+v, %v", p, err)
	}

	// A negative TTL remembers nothing: a revoke is refused at once.
	off := auth.NewCache(store, -1)
	if _, err := off.Authenticate(ctx, tok2); err != nil {
		t.Fatal(err)
	}
	if err := store.Revoke(ctx, "worker-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := off.Authenticate(ctx, tok2); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("uncached, the revoked token: %v", err)
	}
}
