package api

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiters hold one token bucket per API token name.
//
// Every answer to an authenticated request carries the bucket's state in the
// IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers):
//
//	RateLimit-Policy: "token";q=<burst>;w=<seconds to refill an empty bucket>
//	RateLimit: "token";r=<requests allowed now>;t=<seconds until full>
//
// A client that spends at most q requests per w seconds is never refused;
// a 429 adds Retry-After, the seconds until the next request is allowed.
type limiters struct {
	limit  rate.Limit
	burst  int
	policy string // the RateLimit-Policy value, the same on every answer

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

// rateState is a token's bucket after a request: what RateLimit says.
type rateState struct {
	remaining int           // whole requests allowed now
	full      time.Duration // until the bucket is full again
	wait      time.Duration // until the next request is allowed; 0 when allowed now
}

func newLimiters(perSecond float64, burst int) *limiters {
	if perSecond <= 0 {
		return nil
	}
	if burst <= 0 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	window := ceilSeconds(time.Duration(float64(burst) / perSecond * float64(time.Second)))
	return &limiters{
		limit: rate.Limit(perSecond), burst: burst, m: map[string]*rate.Limiter{},
		policy: `"token";q=` + strconv.Itoa(burst) + ";w=" + strconv.FormatInt(window, 10),
	}
}

// allow takes one request from name's bucket, and reports whether it was
// allowed and the bucket's state after it.
func (l *limiters) allow(name string, now time.Time) (bool, rateState) {
	l.mu.Lock()
	lim, ok := l.m[name]
	if !ok {
		lim = rate.NewLimiter(l.limit, l.burst)
		l.m[name] = lim
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	allowed := true
	var st rateState
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		allowed, st.wait = false, d
	}
	tokens := max(0, lim.TokensAt(now))
	st.remaining = int(math.Floor(tokens))
	st.full = time.Duration((float64(l.burst) - tokens) / float64(l.limit) * float64(time.Second))
	return allowed, st
}

// setHeaders writes the RateLimit-Policy and RateLimit fields of st.
func (l *limiters) setHeaders(h http.Header, st rateState) {
	h.Set("RateLimit-Policy", l.policy)
	h.Set("RateLimit", `"token";r=`+strconv.Itoa(st.remaining)+";t="+strconv.FormatInt(ceilSeconds(st.full), 10))
}

// ceilSeconds is d in whole seconds, rounded up (delay-seconds of HTTP).
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(math.Ceil(d.Seconds()))
}
