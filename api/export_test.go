package api

import "github.com/tasksweeper/sweeper/ledger"

// SetOnWait makes h call f each time a feed long poll starts waiting: the
// test signal that a request is parked on the waiter.
func SetOnWait(h *Handler, f func()) { h.onWait = f }

// SetSingleBeats makes the handler built from o coalesce single heartbeats
// with cfg.
func SetSingleBeats(o *Options, cfg ledger.CoalescerConfig) { o.singleBeats = &cfg }

// SingleBeatStats is what the coalescer of single heartbeats did so far.
func SingleBeatStats(h *Handler) ledger.CoalescerStats { return h.beats.Stats() }
