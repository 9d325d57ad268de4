package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/ledger"
)

// singleBeats configures the Coalescer that single heartbeats
// (POST /v1/delegations/{id}/heartbeat) share: concurrent requests are sent
// as one HeartbeatMany statement, so at a thousand requests a second the
// database commits a few hundred statements, not a thousand, and each
// request still gets its own answer. A beat waits at most MaxDelay for
// others to join while a flusher is free; while all Flushers are busy,
// beats gather (group commit). A lone request pays MaxDelay, 1 ms.
var singleBeats = ledger.CoalescerConfig{
	MaxBatch: 1000,
	MaxDelay: time.Millisecond,
	Flushers: 4,
}

// HeartbeatRequest is the optional body of POST /v1/delegations/{id}/heartbeat.
type HeartbeatRequest struct {
	// Progress, a JSON object of at most 8 KiB, replaces the delegation's
	// progress; absent or null leaves it as it is.
	Progress json.RawMessage `json:"progress"`
}

// HeartbeatResponse answers POST /v1/delegations/{id}/heartbeat.
type HeartbeatResponse struct {
	// Live is false once the delegation is terminal: the worker should stop.
	Live bool `json:"live"`
	// Status is the delegation's status as read just before the heartbeat
	// (when Live, never terminal).
	Status ledger.Status `json:"status"`
	// Reason says why a stuck delegation was marked stuck (stalled,
	// heartbeat_timeout, ...); absent otherwise.
	Reason string `json:"reason,omitempty"`
}

// heartbeat records one heartbeat, with the progress of its optional body.
//
// A worker's or an admin's beat goes straight to h.beats (shared with
// concurrent requests), guarded in the statement by the worker's callee:
// a live answer then costs no statement of its own, and a beat on another
// callee's delegation writes nothing. Every other case (not live, another
// role, a bad body, the Coalescer stopped) takes the path below, which reads
// the delegation first and answers as if the fast path had not been tried:
// 404 when the principal does not see it, 403 when it may not beat it, 400
// or 422 for the body, live=false with the status when it is terminal. The
// token was checked from memory (auth.Cache) when recently seen.
func (h *Handler) heartbeat(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	ctx := r.Context()
	var req HeartbeatRequest
	bodyErr := decodeOptionalJSON(r, &req)
	if bodyErr == nil && (p.Role == auth.RoleWorker || p.Role == auth.RoleAdmin) {
		callee := ""
		if p.Role == auth.RoleWorker {
			callee = p.ID
		}
		res, err := h.beats.BeatFor(ctx, callee, r.PathValue("id"), req.Progress)
		if err == nil && res.Live {
			writeJSON(w, http.StatusOK, HeartbeatResponse{Live: true, Status: res.Status})
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	d, err := h.visible(ctx, r, p)
	if err != nil {
		return err
	}
	if !p.CanHeartbeat(d) {
		return errForbidden("only the delegation's worker (or an admin) heartbeats it")
	}
	if bodyErr != nil {
		return bodyErr
	}
	if d.Status.Terminal() {
		writeJSON(w, http.StatusOK, HeartbeatResponse{Live: false, Status: d.Status, Reason: d.StuckReason})
		return nil
	}
	live, err := h.beats.BeatProgress(ctx, d.DelegationID, req.Progress)
	if errors.Is(err, ledger.ErrCoalescerStopped) {
		// The handler is stopping (or was never started): one statement of
		// its own.
		res, err := h.ledger.HeartbeatProgress(ctx, d.DelegationID, req.Progress)
		if err != nil {
			return err
		}
		if res.Status == "" {
			return errNotFound
		}
		writeJSON(w, http.StatusOK, HeartbeatResponse{Live: res.Live, Status: res.Status, Reason: res.Reason})
		return nil
	}
	if err != nil {
		return err
	}
	if live {
		writeJSON(w, http.StatusOK, HeartbeatResponse{Live: true, Status: d.Status})
		return nil
	}
	// It became terminal (or was deleted) between the read and the beat.
	d, err = h.ledger.Get(ctx, d.DelegationID)
	if errors.Is(err, ledger.ErrNotFound) {
		return errNotFound
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, HeartbeatResponse{Live: false, Status: d.Status, Reason: d.StuckReason})
	return nil
}
