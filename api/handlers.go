package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/ledger"
)

// MaxTimeoutSeconds bounds timeout_seconds of an insert (one year).
const MaxTimeoutSeconds = 366 * 24 * 3600

// InsertRequest is the body of POST /v1/delegations.
type InsertRequest struct {
	DelegationID string `json:"delegation_id"`
	// CallerID defaults to a caller token's principal.
	CallerID       string        `json:"caller_id"`
	CalleeID       string        `json:"callee_id"`
	TaskPreview    string        `json:"task_preview"`
	IdempotencyKey string        `json:"idempotency_key"`
	Status         ledger.Status `json:"status"`
	// Deadline is RFC 3339; or TimeoutSeconds from now; or the default.
	Deadline       string   `json:"deadline"`
	TimeoutSeconds *float64 `json:"timeout_seconds"`
	// HeartbeatTimeoutSeconds is the delegation's own heartbeat timeout
	// (1 s to 7 days); absent: the sweeper's global one.
	HeartbeatTimeoutSeconds *float64 `json:"heartbeat_timeout_seconds"`
	// ProgressTimeoutSeconds, QueueTimeoutSeconds and StartTimeoutSeconds
	// are the delegation's own timeouts of the stalled, queue_timeout and
	// start_timeout rules (1 s to 7 days); absent: the sweeper's global ones.
	ProgressTimeoutSeconds *float64 `json:"progress_timeout_seconds"`
	QueueTimeoutSeconds    *float64 `json:"queue_timeout_seconds"`
	StartTimeoutSeconds    *float64 `json:"start_timeout_seconds"`
	// Retry is the retry policy; absent: one attempt, no automatic retry.
	Retry *RetryPolicyInput `json:"retry"`
}

// RetryPolicy is a delegation's retry policy in the API's units (see
// ledger.RetryPolicy). On input, absent fields take the defaults.
type RetryPolicy struct {
	MaxAttempts       int             `json:"max_attempts"`
	BackoffSeconds    float64         `json:"backoff_seconds"`
	BackoffMaxSeconds float64         `json:"backoff_max_seconds"`
	On                []ledger.Status `json:"on"`
}

// RetryPolicyInput is a request's retry policy: absent fields (nil) take
// the ledger's defaults, present ones must be in the documented bounds (a
// max_attempts or backoff of 0 is refused, not read as the default).
type RetryPolicyInput struct {
	MaxAttempts       *int            `json:"max_attempts"`
	BackoffSeconds    *float64        `json:"backoff_seconds"`
	BackoffMaxSeconds *float64        `json:"backoff_max_seconds"`
	On                []ledger.Status `json:"on"`
}

// ledgerPolicy reads a request's retry policy (the zero policy, the
// defaults, when absent); the ledger validates the rest (on's members).
func ledgerPolicy(p *RetryPolicyInput) (ledger.RetryPolicy, error) {
	if p == nil {
		return ledger.RetryPolicy{}, nil
	}
	var out ledger.RetryPolicy
	if p.MaxAttempts != nil {
		if *p.MaxAttempts < 1 || *p.MaxAttempts > ledger.MaxMaxAttempts {
			return out, errInvalidField("retry.max_attempts", fmt.Sprintf("must be from 1 to %d", ledger.MaxMaxAttempts))
		}
		out.MaxAttempts = *p.MaxAttempts
	}
	for _, f := range []struct {
		name string
		v    *float64
		max  time.Duration
		to   *time.Duration
	}{
		{"retry.backoff_seconds", p.BackoffSeconds, ledger.MaxRetryBackoff, &out.Backoff},
		{"retry.backoff_max_seconds", p.BackoffMaxSeconds, ledger.MaxRetryBackoffMax, &out.BackoffMax},
	} {
		if f.v == nil {
			continue
		}
		if v := *f.v; math.IsNaN(v) || v < ledger.MinRetryBackoff.Seconds() || v > f.max.Seconds() {
			return out, errInvalidField(f.name, fmt.Sprintf("must be from %g to %g seconds", ledger.MinRetryBackoff.Seconds(), f.max.Seconds()))
		}
		*f.to = time.Duration(*f.v * float64(time.Second))
	}
	if backoff := cmp.Or(out.Backoff, ledger.DefaultRetryBackoff); out.BackoffMax != 0 && out.BackoffMax < backoff {
		return out, errInvalidField("retry.backoff_max_seconds", fmt.Sprintf("must be at least backoff_seconds (%g)", backoff.Seconds()))
	}
	if p.On != nil && len(p.On) == 0 {
		return out, errInvalidField("retry.on", "is empty: list stuck, failed or both (absent: stuck)")
	}
	out.On = p.On
	return out, nil
}

// Delegation is a delegation as the API renders it: the ledger's fields,
// its own heartbeat timeout in seconds, absent when it has none (the
// sweeper's global timeout applies), and its retry policy.
type Delegation struct {
	ledger.Delegation
	HeartbeatTimeoutSeconds *float64    `json:"heartbeat_timeout_seconds,omitempty"`
	ProgressTimeoutSeconds  *float64    `json:"progress_timeout_seconds,omitempty"`
	QueueTimeoutSeconds     *float64    `json:"queue_timeout_seconds,omitempty"`
	StartTimeoutSeconds     *float64    `json:"start_timeout_seconds,omitempty"`
	Retry                   RetryPolicy `json:"retry"`
}

// secondsOf is d in seconds, nil when d is.
func secondsOf(d *time.Duration) *float64 {
	if d == nil {
		return nil
	}
	s := d.Seconds()
	return &s
}

// RenderDelegation is a delegation as GET /v1/delegations/{id} renders it
// (what a webhook delivery carries too).
func RenderDelegation(d ledger.Delegation) Delegation { return apiDelegation(d) }

func apiDelegation(d ledger.Delegation) Delegation {
	out := Delegation{Delegation: d,
		HeartbeatTimeoutSeconds: secondsOf(d.HeartbeatTimeout),
		ProgressTimeoutSeconds:  secondsOf(d.ProgressTimeout),
		QueueTimeoutSeconds:     secondsOf(d.QueueTimeout),
		StartTimeoutSeconds:     secondsOf(d.StartTimeout),
		Retry: RetryPolicy{
			MaxAttempts: d.MaxAttempts, BackoffSeconds: d.RetryBackoff.Seconds(),
			BackoffMaxSeconds: d.RetryBackoffMax.Seconds(), On: d.RetryOn,
		},
	}
	if out.Retry.On == nil {
		out.Retry.On = []ledger.Status{}
	}
	return out
}

func apiDelegations(ds []ledger.Delegation) []Delegation {
	out := make([]Delegation, 0, len(ds))
	for _, d := range ds {
		out = append(out, apiDelegation(d))
	}
	return out
}

// deadlineOf reads the deadline and timeout_seconds fields of a request
// body (at most one of them set) into a deadline or a timeout.
func deadlineOf(deadline string, timeoutSeconds *float64) (time.Time, time.Duration, error) {
	var d time.Time
	if len(deadline) > MaxDateTimeBytes {
		return time.Time{}, 0, errInvalidField("deadline", fmt.Sprintf("is longer than %d bytes; send an RFC 3339 time such as 2026-12-01T18:00:00Z", MaxDateTimeBytes))
	}
	if deadline != "" {
		var err error
		if d, err = time.Parse(time.RFC3339Nano, deadline); err != nil {
			return time.Time{}, 0, errInvalidField("deadline", "must be an RFC 3339 time such as 2026-12-01T18:00:00Z")
		}
	}
	if timeoutSeconds == nil {
		return d, 0, nil
	}
	s := *timeoutSeconds
	if !(s > 0 && s <= MaxTimeoutSeconds) {
		return time.Time{}, 0, errInvalidField("timeout_seconds", fmt.Sprintf("must be more than 0 and at most %d", MaxTimeoutSeconds))
	}
	if deadline != "" {
		return time.Time{}, 0, errInvalidField("deadline", "and timeout_seconds are both set; set one")
	}
	return time.Time{}, time.Duration(s * float64(time.Second)), nil
}

// heartbeatTimeoutOf reads heartbeat_timeout_seconds (zero when absent).
func heartbeatTimeoutOf(seconds *float64) (time.Duration, error) {
	if seconds == nil {
		return 0, nil
	}
	lo, hi := ledger.MinHeartbeatTimeout.Seconds(), ledger.MaxHeartbeatTimeout.Seconds()
	if s := *seconds; !(s >= lo && s <= hi) {
		return 0, errInvalidField("heartbeat_timeout_seconds", fmt.Sprintf("must be from %g to %g (1 s to 7 days)", lo, hi))
	}
	return time.Duration(*seconds * float64(time.Second)), nil
}

// waitTimeoutOf reads one of progress_timeout_seconds, queue_timeout_seconds
// and start_timeout_seconds (zero when absent).
func waitTimeoutOf(field string, seconds *float64) (time.Duration, error) {
	if seconds == nil {
		return 0, nil
	}
	lo, hi := ledger.MinWaitTimeout.Seconds(), ledger.MaxWaitTimeout.Seconds()
	if s := *seconds; !(s >= lo && s <= hi) {
		return 0, errInvalidField(field, fmt.Sprintf("must be from %g to %g (1 s to 7 days)", lo, hi))
	}
	return time.Duration(*seconds * float64(time.Second)), nil
}

// InsertResponse answers POST /v1/delegations.
type InsertResponse struct {
	Outcome      string `json:"outcome"`
	DelegationID string `json:"delegation_id"`
}

func (h *Handler) insert(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req InsertRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := checkRunes("task_preview", req.TaskPreview, MaxInputTextRunes); err != nil {
		return err
	}
	if req.CallerID == "" && p.Role == auth.RoleCaller {
		req.CallerID = p.ID
	}
	if !p.CanInsert(req.CallerID) {
		if p.Role == auth.RoleCaller {
			return errForbidden("a caller token inserts only with its own caller_id")
		}
		return errForbidden("only caller and admin tokens insert delegations")
	}
	n := ledger.NewDelegation{
		DelegationID: req.DelegationID, CallerID: req.CallerID, CalleeID: req.CalleeID,
		TaskPreview: req.TaskPreview, IdempotencyKey: req.IdempotencyKey, Status: req.Status,
		Actor: p.Actor(),
	}
	// The caller's trace context travels with the delegation: its webhook
	// deliveries join that trace. An invalid header is ignored, as the W3C
	// Trace Context asks of receivers.
	if tp := r.Header.Get("traceparent"); ledger.CheckTraceParent(tp) == nil {
		n.TraceParent = tp
	}
	var err error
	if n.Deadline, n.Timeout, err = deadlineOf(req.Deadline, req.TimeoutSeconds); err != nil {
		return err
	}
	if n.HeartbeatTimeout, err = heartbeatTimeoutOf(req.HeartbeatTimeoutSeconds); err != nil {
		return err
	}
	if n.ProgressTimeout, err = waitTimeoutOf("progress_timeout_seconds", req.ProgressTimeoutSeconds); err != nil {
		return err
	}
	if n.QueueTimeout, err = waitTimeoutOf("queue_timeout_seconds", req.QueueTimeoutSeconds); err != nil {
		return err
	}
	if n.StartTimeout, err = waitTimeoutOf("start_timeout_seconds", req.StartTimeoutSeconds); err != nil {
		return err
	}
	if n.Retry, err = ledgerPolicy(req.Retry); err != nil {
		return err
	}
	res, err := h.ledger.Insert(r.Context(), n)
	if err != nil {
		return err
	}
	code := http.StatusOK
	if res.Outcome == ledger.Inserted || res.Outcome == ledger.Retried { // a new row
		code = http.StatusCreated
		w.Header().Set("Location", "/v1/delegations/"+url.PathEscape(res.DelegationID))
	}
	writeJSON(w, code, InsertResponse{Outcome: res.Outcome.String(), DelegationID: res.DelegationID})
	return nil
}

// visible reads the delegation named in the path, or errNotFound when it is
// missing or outside p's scope (the two are not told apart).
func (h *Handler) visible(ctx context.Context, r *http.Request, p auth.Principal) (ledger.Delegation, error) {
	d, err := h.ledger.Get(ctx, r.PathValue("id"))
	if errors.Is(err, ledger.ErrNotFound) || (err == nil && !p.CanSee(d)) {
		return ledger.Delegation{}, errNotFound
	}
	return d, err
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	d, err := h.visible(r.Context(), r, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiDelegation(d))
	return nil
}

// RetryRequest is the optional body of POST /v1/delegations/{id}/retry: what
// the next attempt does not copy from the one it retries (see
// ledger.RetryOptions). Absent fields keep the previous attempt's values,
// except the deadline, which starts again.
type RetryRequest struct {
	// DelegationID of the next attempt; derived ("<id>#<n>") when absent.
	DelegationID   string `json:"delegation_id"`
	CalleeID       string `json:"callee_id"`
	TaskPreview    string `json:"task_preview"`
	IdempotencyKey string `json:"idempotency_key"`
	// ClearIdempotencyKey records the next attempt without a key.
	ClearIdempotencyKey bool          `json:"clear_idempotency_key"`
	Status              ledger.Status `json:"status"`
	// Deadline is RFC 3339; or TimeoutSeconds from now; or the default.
	Deadline                string   `json:"deadline"`
	TimeoutSeconds          *float64 `json:"timeout_seconds"`
	HeartbeatTimeoutSeconds *float64 `json:"heartbeat_timeout_seconds"`
	// Reason is recorded in the new attempt's audit event.
	Reason string `json:"reason"`
}

// RetryResponse answers POST /v1/delegations/{id}/retry when the next
// attempt exists: created now (201) or already (200, already_retried).
type RetryResponse struct {
	Outcome      string `json:"outcome"`
	DelegationID string `json:"delegation_id"`
	Attempt      int    `json:"attempt"`
}

func (h *Handler) retry(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req RetryRequest
	if err := decodeOptionalJSON(r, &req); err != nil {
		return err
	}
	if err := checkTexts(textField{"task_preview", req.TaskPreview, MaxInputTextRunes},
		textField{"reason", req.Reason, MaxReasonRunes}); err != nil {
		return err
	}
	opts := ledger.RetryOptions{
		DelegationID: req.DelegationID, CalleeID: req.CalleeID, TaskPreview: req.TaskPreview,
		IdempotencyKey: req.IdempotencyKey, ClearIdempotencyKey: req.ClearIdempotencyKey,
		Status: req.Status, Actor: p.Actor(), Reason: req.Reason,
	}
	var err error
	if opts.Deadline, opts.Timeout, err = deadlineOf(req.Deadline, req.TimeoutSeconds); err != nil {
		return err
	}
	if opts.HeartbeatTimeout, err = heartbeatTimeoutOf(req.HeartbeatTimeoutSeconds); err != nil {
		return err
	}
	d, err := h.visible(r.Context(), r, p)
	if err != nil {
		return err
	}
	switch {
	case p.Role == auth.RoleAdmin:
	case p.Role == auth.RoleCaller && d.CallerID == p.ID:
	default:
		return errForbidden("only the delegation's caller (or an admin) retries it")
	}
	res, err := h.ledger.Retry(r.Context(), d.DelegationID, opts)
	if err != nil {
		return err
	}
	switch res.Outcome {
	case ledger.RetryCreated:
		w.Header().Set("Location", "/v1/delegations/"+url.PathEscape(res.DelegationID))
		writeJSON(w, http.StatusCreated, RetryResponse{Outcome: res.Outcome.String(), DelegationID: res.DelegationID, Attempt: res.Attempt})
		return nil
	case ledger.RetryAlreadyRetried:
		writeJSON(w, http.StatusOK, RetryResponse{Outcome: res.Outcome.String(), DelegationID: res.DelegationID, Attempt: res.Attempt})
		return nil
	case ledger.RetryNotFound:
		return errNotFound
	}
	c := newProblem(http.StatusConflict, "not-retryable", "Only a failed or stuck delegation is retried",
		fmt.Sprintf("delegation %q is %s", d.DelegationID, res.Status))
	c.Outcome, c.CurrentStatus = res.Outcome.String(), string(res.Status)
	return c
}

// AttemptsResponse answers GET /v1/delegations/{id}/attempts.
type AttemptsResponse struct {
	// Attempts is the chain the delegation belongs to, first attempt first,
	// narrowed to the attempts the token may see.
	Attempts []Delegation `json:"attempts"`
}

func (h *Handler) attempts(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	d, err := h.visible(r.Context(), r, p)
	if err != nil {
		return err
	}
	chain, err := h.ledger.Attempts(r.Context(), d.DelegationID)
	if err != nil {
		return err
	}
	var seen []ledger.Delegation
	for _, a := range chain {
		if p.CanSee(a) && len(seen) < MaxResponseItems {
			seen = append(seen, a)
		}
	}
	writeJSON(w, http.StatusOK, AttemptsResponse{Attempts: apiDelegations(seen)})
	return nil
}

// ListResponse answers GET /v1/delegations.
type ListResponse struct {
	Delegations []Delegation `json:"delegations"`
	// NextCursor continues the list; absent on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	q, err := query(r, "caller_id", "callee_id", "status", "in_flight", "exhausted", "limit", "cursor")
	if err != nil {
		return err
	}
	f := ledger.ListFilter{Status: ledger.Status(q.Get("status")), Cursor: q.Get("cursor")}
	if f.CallerID, err = idParam(q, "caller_id"); err != nil {
		return err
	}
	if f.CalleeID, err = idParam(q, "callee_id"); err != nil {
		return err
	}
	if len(f.Cursor) > MaxCursorBytes || !cursorPattern.MatchString(f.Cursor) {
		return errInvalidParam("cursor", "is not a cursor returned by a list")
	}
	if f.InFlight, err = boolParam(q, "in_flight"); err != nil {
		return err
	}
	if f.Exhausted, err = boolParam(q, "exhausted"); err != nil {
		return err
	}
	if f.Limit, err = intParam(q, "limit", 0, ledger.MaxListLimit); err != nil {
		return err
	}
	if err := scopeFilter(p, &f.CallerID, &f.CalleeID); err != nil {
		return err
	}
	page, err := h.reads.List(r.Context(), f)
	if err != nil {
		return paramError(err)
	}
	writeJSON(w, http.StatusOK, ListResponse{Delegations: apiDelegations(page.Delegations), NextCursor: page.Next})
	return nil
}

// scopeFilter narrows a read of many rows to p's scope: a caller sees its
// own caller_id, a worker its own callee_id; asking for another's is 403.
func scopeFilter(p auth.Principal, callerID, calleeID *string) error {
	switch p.Role {
	case auth.RoleCaller:
		if *callerID != "" && *callerID != p.ID {
			return errForbidden("a caller token reads only its own caller_id")
		}
		*callerID = p.ID
	case auth.RoleWorker:
		if *calleeID != "" && *calleeID != p.ID {
			return errForbidden("a worker token reads only its own callee_id")
		}
		*calleeID = p.ID
	}
	return nil
}

// paramError turns the ledger's field errors on a GET into 400s naming the
// query parameter.
func paramError(err error) error {
	var fe *ledger.FieldError
	var use *ledger.UnknownStatusError
	switch {
	case errors.As(err, &fe):
		return errInvalidParam(fe.Field, fe.Error())
	case errors.As(err, &use):
		return errInvalidParam("status", use.Error())
	}
	return err
}

// TransitionRequest is the body of POST /v1/delegations/{id}/transitions.
type TransitionRequest struct {
	To     ledger.Status `json:"to"`
	Result string        `json:"result"`
	Error  string        `json:"error"`
	Reason string        `json:"reason"`
}

// TransitionResponse answers a transition that was applied or a replay.
type TransitionResponse struct {
	Outcome string        `json:"outcome"`
	Status  ledger.Status `json:"status"`
}

func (h *Handler) transition(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req TransitionRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := checkTexts(textField{"result", req.Result, MaxInputTextRunes},
		textField{"error", req.Error, MaxInputTextRunes}, textField{"reason", req.Reason, MaxReasonRunes}); err != nil {
		return err
	}
	if req.To == "" {
		return errInvalidField("to", "is required: the status to move to")
	}
	if !req.To.Valid() {
		return errInvalidField("to", fmt.Sprintf("must be one of queued, dispatched, in_progress, completed, failed, stuck, got %q", req.To))
	}
	d, err := h.visible(r.Context(), r, p)
	if err != nil {
		return err
	}
	if !p.CanTransition(d, req.To) {
		if p.Role == auth.RoleCaller {
			return errForbidden("a caller token may only cancel (to failed) its own delegations")
		}
		return errForbidden("this token may not change this delegation")
	}
	res, err := h.ledger.SetStatus(r.Context(), d.DelegationID, req.To, ledger.Change{
		Actor: p.Actor(), Reason: req.Reason, Result: req.Result, Error: req.Error,
	})
	if err != nil {
		return err
	}
	h.metrics.countRetry(res, string(req.To))
	switch res.Outcome {
	case ledger.OutcomeApplied, ledger.OutcomeUnchanged:
		writeJSON(w, http.StatusOK, TransitionResponse{Outcome: res.Outcome.String(), Status: res.Status})
		return nil
	case ledger.OutcomeNotFound:
		return errNotFound
	}
	c := newProblem(http.StatusConflict, "transition-refused", "The lifecycle refuses this transition",
		fmt.Sprintf("%s -> %s: %s", res.Status, req.To, res.Outcome))
	c.Outcome, c.CurrentStatus = res.Outcome.String(), string(res.Status)
	return c
}

// HeartbeatsRequest is the body of POST /v1/heartbeats: ids to beat, beats
// with a progress each, or both (at most MaxBatch in all).
type HeartbeatsRequest struct {
	IDs   []string      `json:"ids"`
	Beats []BeatRequest `json:"beats"`
}

// BeatRequest is one beat of HeartbeatsRequest.Beats.
type BeatRequest struct {
	ID string `json:"id"`
	// Progress as in HeartbeatRequest.
	Progress json.RawMessage `json:"progress"`
}

// HeartbeatsResponse lists the ids whose workers should stop: terminal,
// missing, or not the token's.
type HeartbeatsResponse struct {
	NotLive []string `json:"not_live"`
}

func (h *Handler) heartbeats(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if p.Role != auth.RoleWorker && p.Role != auth.RoleAdmin {
		return errForbidden("only worker and admin tokens heartbeat")
	}
	var req HeartbeatsRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if n := len(req.IDs) + len(req.Beats); n > h.opts.MaxBatch {
		field := "ids"
		if len(req.Beats) > 0 {
			field = "beats"
		}
		return errInvalidField(field, fmt.Sprintf("holds %d beats; at most %d per request", n, h.opts.MaxBatch))
	}
	beats := make([]ledger.Beat, 0, len(req.IDs)+len(req.Beats))
	for _, id := range req.IDs {
		beats = append(beats, ledger.Beat{ID: id})
	}
	for _, b := range req.Beats {
		beats = append(beats, ledger.Beat{ID: b.ID, Progress: b.Progress})
	}
	var notLive []string
	var err error
	if p.Role == auth.RoleWorker {
		notLive, err = h.ledger.HeartbeatBeatsFor(r.Context(), p.ID, beats)
	} else {
		notLive, err = h.ledger.HeartbeatBeats(r.Context(), beats)
	}
	if err != nil {
		var fe *ledger.FieldError
		if errors.As(err, &fe) {
			if field, ok := beatField(fe.Field, len(req.IDs)); ok {
				return errInvalidField(field, fe.Reason)
			}
		}
		return err
	}
	if notLive == nil {
		notLive = []string{}
	}
	writeJSON(w, http.StatusOK, HeartbeatsResponse{NotLive: notLive})
	return nil
}

// EventsResponse answers GET /v1/delegations/{id}/events.
type EventsResponse struct {
	Events []ledger.Event `json:"events"`
}

func (h *Handler) events(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	d, err := h.visible(r.Context(), r, p)
	if err != nil {
		return err
	}
	evs, err := h.ledger.Events(r.Context(), d.DelegationID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, EventsResponse{Events: apiEvents(evs, MaxResponseItems)})
	return nil
}

// FeedResponse answers GET /v1/events.
type FeedResponse struct {
	Events []ledger.Event `json:"events"`
	// NextAfter is the cursor of the next request: the last event's id, or
	// the request's after when no event came.
	NextAfter int64 `json:"next_after"`
	// Pending reports matching events held back until an older
	// transaction ends; ask again.
	Pending bool `json:"pending"`
}

func (h *Handler) feed(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	q, err := query(r, "after", "limit", "to_status", "caller_id", "callee_id", "wait")
	if err != nil {
		return err
	}
	f := ledger.FeedFilter{ToStatus: ledger.Status(q.Get("to_status"))}
	if f.CallerID, err = idParam(q, "caller_id"); err != nil {
		return err
	}
	if f.CalleeID, err = idParam(q, "callee_id"); err != nil {
		return err
	}
	after, err := intParam(q, "after", 0, math.MaxInt64)
	if err != nil {
		return err
	}
	f.After = int64(after)
	if f.Limit, err = intParam(q, "limit", 0, ledger.MaxFeedLimit); err != nil {
		return err
	}
	if f.ToStatus != "" && !f.ToStatus.Valid() {
		return errInvalidParam("to_status", fmt.Sprintf("is not a status: %q", f.ToStatus))
	}
	wait, err := durationParam(q, "wait", h.opts.MaxWait)
	if err != nil {
		return err
	}
	if err := scopeFilter(p, &f.CallerID, &f.CalleeID); err != nil {
		return err
	}
	ctx := r.Context()
	var page ledger.FeedPage
	if wait > 0 {
		h.metrics.longPolls.Inc()
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		go func() {
			select {
			case <-h.stopped:
				cancel()
			case <-ctx.Done():
			}
		}()
		if h.onWait != nil {
			h.onWait()
		}
		page, err = h.ledger.FeedWait(ctx, h.waiter, f, wait)
		cancel()
		h.metrics.longPolls.Dec()
		if errors.Is(err, context.Canceled) && r.Context().Err() == nil {
			err, page = nil, ledger.FeedPage{} // the server is stopping: answer empty
		}
	} else {
		page, err = h.ledger.Feed(ctx, f)
	}
	if err != nil {
		return paramError(err)
	}
	resp := FeedResponse{Events: apiEvents(page.Events, ledger.MaxFeedLimit), NextAfter: f.After, Pending: page.Pending}
	if n := len(resp.Events); n > 0 {
		resp.NextAfter = resp.Events[n-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (h *Handler) summary(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	q, err := query(r, "caller_id")
	if err != nil {
		return err
	}
	caller, err := idParam(q, "caller_id")
	if err != nil {
		return err
	}
	switch p.Role {
	case auth.RoleWorker:
		return errForbidden("the summary is per caller: use a caller, reader or admin token")
	case auth.RoleCaller:
		if caller != "" && caller != p.ID {
			return errForbidden("a caller token reads only its own caller_id")
		}
		caller = p.ID
	}
	sum, err := h.reads.Summary(r.Context(), caller)
	if err != nil {
		return paramError(err)
	}
	if len(sum.ByCaller) > MaxSummaryCallers {
		sum.ByCaller = sum.ByCaller[:MaxSummaryCallers]
	}
	writeJSON(w, http.StatusOK, sum)
	return nil
}

func (h *Handler) openapi(w http.ResponseWriter, _ *http.Request, _ auth.Principal) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(h.doc)
	return nil
}

// query parses the query string, refusing unknown or repeated parameters.
func query(r *http.Request, known ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, errInvalidParam("", "the query string is malformed")
	}
	for k, vs := range q {
		ok := false
		for _, kn := range known {
			ok = ok || k == kn
		}
		if !ok {
			return nil, errInvalidParam(k, fmt.Sprintf("unknown query parameter %q", k))
		}
		if len(vs) > 1 {
			return nil, errInvalidParam(k, fmt.Sprintf("query parameter %q is repeated", k))
		}
	}
	return q, nil
}

func intParam(q url.Values, name string, lo, hi int) (int, error) {
	s := q.Get(name)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, errInvalidParam(name, fmt.Sprintf("must be an integer from %d to %d", lo, hi))
	}
	return n, nil
}

func boolParam(q url.Values, name string) (bool, error) {
	switch q.Get(name) {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, errInvalidParam(name, "must be true or false")
}

// durationParam reads a wait: a Go duration (30s, 1m) or whole seconds.
func durationParam(q url.Values, name string, limit time.Duration) (time.Duration, error) {
	s := q.Get(name)
	if s == "" {
		return 0, nil
	}
	if len(s) > MaxWaitBytes || !waitPattern.MatchString(s) {
		return 0, errInvalidParam(name, "must be a duration such as 30s, or whole seconds")
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.Atoi(s)
		if nerr != nil {
			return 0, errInvalidParam(name, "must be a duration such as 30s, or whole seconds")
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 || d > limit {
		return 0, errInvalidParam(name, fmt.Sprintf("must be from 0 to %s", limit))
	}
	return d, nil
}

// beatField names, in the request's terms, the field of beat i of the
// ledger's call (the ids first, then the beats) that a *ledger.FieldError
// names: delegation_ids[i] or beats[i].progress.
func beatField(field string, ids int) (string, bool) {
	var i int
	var rest string
	switch {
	case strings.HasPrefix(field, "delegation_ids["):
		if _, err := fmt.Sscanf(field, "delegation_ids[%d]", &i); err != nil {
			return "", false
		}
		rest = ".id"
	case strings.HasPrefix(field, "beats["):
		if _, err := fmt.Sscanf(field, "beats[%d]", &i); err != nil {
			return "", false
		}
		rest = ".progress"
	default:
		return "", false
	}
	if i < ids {
		return fmt.Sprintf("ids[%d]", i), true
	}
	return fmt.Sprintf("beats[%d]%s", i-ids, rest), true
}

// ClaimRequest is the body of POST /v1/claims.
type ClaimRequest struct {
	// CalleeID defaults (when absent) to a worker token's principal; an
	// admin token must name one.
	CalleeID *string `json:"callee_id"`
	// Limit is the most rows to claim (1 to ledger.MaxClaimLimit).
	Limit int `json:"limit"`
}

// ClaimResponse answers POST /v1/claims: the delegations claimed, now
// dispatched, the longest due first (none when nothing is due).
type ClaimResponse struct {
	Delegations []Delegation `json:"delegations"`
}

func (h *Handler) claim(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req ClaimRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	var callee string
	if req.CalleeID != nil {
		// Present, it is an identifier (an empty one is not absent).
		if err := checkID("callee_id", *req.CalleeID); err != nil {
			return err
		}
		callee = *req.CalleeID
	}
	switch p.Role {
	case auth.RoleWorker:
		if req.CalleeID == nil {
			callee = p.ID
		}
		if callee != p.ID {
			return errForbidden("a worker token claims only for its own callee_id")
		}
	case auth.RoleAdmin:
		if req.CalleeID == nil {
			return errInvalidField("callee_id", "is required")
		}
	default:
		return errForbidden("only worker and admin tokens claim delegations")
	}
	if req.Limit < 1 || req.Limit > ledger.MaxClaimLimit {
		return errInvalidField("limit", fmt.Sprintf("must be from 1 to %d", ledger.MaxClaimLimit))
	}
	ds, err := h.ledger.ClaimBy(r.Context(), p.Actor(), callee, req.Limit)
	if err != nil {
		return err
	}
	h.metrics.claimed.Add(float64(len(ds)))
	writeJSON(w, http.StatusOK, ClaimResponse{Delegations: apiDelegations(ds)})
	return nil
}
