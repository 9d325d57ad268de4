package api

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiters hold one token bucket per API token name.
type limiters struct {
	limit rate.Limit
	burst int

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func newLimiters(perSecond float64, burst int) *limiters {
	if perSecond <= 0 {
		return nil
	}
	if burst <= 0 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	return &limiters{limit: rate.Limit(perSecond), burst: burst, m: map[string]*rate.Limiter{}}
}

// allow takes one request from name's bucket; when it is empty it returns
// false and how long until a request would be allowed.
func (l *limiters) allow(name string, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	lim, ok := l.m[name]
	if !ok {
		lim = rate.NewLimiter(l.limit, l.burst)
		l.m[name] = lim
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}
