package api

// SetOnWait makes h call f each time a feed long poll starts waiting: the
// test signal that a request is parked on the waiter.
func SetOnWait(h *Handler, f func()) { h.onWait = f }
