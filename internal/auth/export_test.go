package auth

import "time"

// SetCacheClock makes c read the time from now (tests move it by hand).
func SetCacheClock(c *Cache, now func() time.Time) { c.now = now }
