package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// Sessions are kept server-side, in memory: the cookie holds only a random
// session id (32 bytes), the server maps its hash to the token the user
// signed in with. Every request authenticates that token again
// (auth.Store.Authenticate, one indexed read), so a revoked token ends its
// sessions at once. A restart of the process signs everyone out; several
// replicas behind a load balancer need sticky sessions (or Bearer tokens).
type sessions struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[[32]byte]*session
}

type session struct {
	token   string // the API token: kept in memory only, never logged
	csrf    string
	expires time.Time
}

// maxSessions bounds the memory sessions take; past it the sessions that
// expire soonest are dropped.
const maxSessions = 10000

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{ttl: ttl, max: maxSessions, now: now, m: map[[32]byte]*session{}}
}

// randomString returns n random bytes, base64url-encoded.
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session for token and returns its id and CSRF token.
func (s *sessions) create(token string) (id string, sess session) {
	id = randomString(32)
	sess = session{token: token, csrf: randomString(32), expires: s.now().Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evictLocked()
	s.m[sha256.Sum256([]byte(id))] = &sess
	return id, sess
}

func (s *sessions) evictLocked() {
	now := s.now()
	for k, v := range s.m {
		if !now.Before(v.expires) {
			delete(s.m, k)
		}
	}
	for len(s.m) >= s.max {
		var oldest [32]byte
		var at time.Time
		for k, v := range s.m {
			if at.IsZero() || v.expires.Before(at) {
				oldest, at = k, v.expires
			}
		}
		delete(s.m, oldest)
	}
}

// get returns the live session of id.
func (s *sessions) get(id string) (session, bool) {
	if id == "" {
		return session{}, false
	}
	k := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.m[k]
	if !ok {
		return session{}, false
	}
	if !s.now().Before(sess.expires) {
		delete(s.m, k)
		return session{}, false
	}
	return *sess, true
}

// drop ends the session id.
func (s *sessions) drop(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, sha256.Sum256([]byte(id)))
}

// equalSecret compares two secrets in constant time.
func equalSecret(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
