package auth

import (
	"context"
	"sync"
	"time"
)

// CacheTTLDefault is how long a Cache trusts a token it has authenticated:
// the bound within which a revoked token is refused.
const CacheTTLDefault = time.Second

// cacheMaxEntries bounds a Cache's memory: when it holds this many tokens,
// the expired ones are dropped, and if none has expired, all of them.
const cacheMaxEntries = 10_000

// Cache authenticates tokens through a Store and remembers each token it
// accepted for a TTL, so that a busy client's requests cost no database
// round trip for their token. A token revoked (or its row deleted) is
// refused at the latest TTL after the revoke commits. Only accepted tokens
// are remembered, by their SHA-256 hash (never the token itself); an
// unknown, malformed or revoked token goes to the Store every time. It is
// safe for concurrent use.
type Cache struct {
	store *Store
	ttl   time.Duration
	now   func() time.Time

	mu      sync.Mutex
	entries map[[32]byte]cacheEntry
}

type cacheEntry struct {
	p       Principal
	expires time.Time
}

// NewCache returns a Cache over store that trusts an accepted token for ttl
// (CacheTTLDefault when 0). A negative ttl remembers nothing: every call
// goes to the Store.
func NewCache(store *Store, ttl time.Duration) *Cache {
	if ttl == 0 {
		ttl = CacheTTLDefault
	}
	return &Cache{store: store, ttl: ttl, now: time.Now, entries: map[[32]byte]cacheEntry{}}
}

// Authenticate is Store.Authenticate, answered from memory for a token the
// Store accepted less than the TTL ago.
func (c *Cache) Authenticate(ctx context.Context, token string) (Principal, error) {
	if c.ttl < 0 || !wellFormed(token) {
		return c.store.Authenticate(ctx, token)
	}
	h := hash(token)
	c.mu.Lock()
	e, ok := c.entries[h]
	now := c.now()
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.p, nil
	}
	p, err := c.store.Authenticate(ctx, token)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		delete(c.entries, h)
		return p, err
	}
	if len(c.entries) >= cacheMaxEntries {
		for k, old := range c.entries {
			if !now.Before(old.expires) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= cacheMaxEntries {
			clear(c.entries)
		}
	}
	// The entry expires TTL after the read began: a revoke that committed
	// after that read is seen at most TTL after it.
	c.entries[h] = cacheEntry{p: p, expires: now.Add(c.ttl)}
	return p, nil
}
