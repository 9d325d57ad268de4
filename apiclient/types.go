package apiclient

import (
	"encoding/json"
	"time"
)

// Status is a delegation's status: queued, dispatched, in_progress,
// completed, failed or stuck.
type Status string

// The statuses of the lifecycle.
const (
	StatusQueued     Status = "queued"
	StatusDispatched Status = "dispatched"
	StatusInProgress Status = "in_progress"
	StatusCompleted  Status = "completed"
	StatusFailed     Status = "failed"
	StatusStuck      Status = "stuck"
)

// Terminal reports whether s is final: completed, failed or stuck.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusStuck
}

// Delegation is one delegation (schema Delegation).
type Delegation struct {
	DelegationID   string     `json:"delegation_id"`
	CallerID       string     `json:"caller_id"`
	CalleeID       string     `json:"callee_id"`
	TaskPreview    string     `json:"task_preview"`
	ResultPreview  string     `json:"result_preview,omitempty"`
	ErrorDetail    string     `json:"error_detail,omitempty"`
	Status         Status     `json:"status"`
	IdempotencyKey string     `json:"idempotency_key,omitempty"`
	LastHeartbeat  *time.Time `json:"last_heartbeat,omitempty"`
	Deadline       time.Time  `json:"deadline"`
	StuckReason    string     `json:"stuck_reason,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
	Attempt        int        `json:"attempt,omitempty"`
	RetryOf        string     `json:"retry_of,omitempty"`
	// HeartbeatTimeoutSeconds is the delegation's own heartbeat timeout;
	// nil means the sweeper's global one.
	HeartbeatTimeoutSeconds *float64 `json:"heartbeat_timeout_seconds,omitempty"`
	// Progress is the worker's latest progress report (a JSON object);
	// ProgressAt when it last changed, or the row entered in_progress.
	Progress   json.RawMessage `json:"progress,omitempty"`
	ProgressAt *time.Time      `json:"progress_at,omitempty"`
	// NotBefore: a queued delegation is not due before it (a retry's
	// backoff). DispatchedAt is when it entered dispatched.
	NotBefore    *time.Time `json:"not_before,omitempty"`
	DispatchedAt *time.Time `json:"dispatched_at,omitempty"`
	// The delegation's own progress, queue and start timeouts; nil means
	// the sweeper's global ones.
	ProgressTimeoutSeconds *float64 `json:"progress_timeout_seconds,omitempty"`
	QueueTimeoutSeconds    *float64 `json:"queue_timeout_seconds,omitempty"`
	StartTimeoutSeconds    *float64 `json:"start_timeout_seconds,omitempty"`
	// Retry is the retry policy, copied to every attempt; Exhausted marks
	// an attempt whose policy had retries and used them all.
	Retry     *RetryPolicy `json:"retry,omitempty"`
	Exhausted bool         `json:"exhausted,omitempty"`
}

// RetryPolicy says how a delegation retries itself (schema RetryPolicy,
// and RetryPolicyInput where zero fields take the server's defaults): when
// an attempt moves to a status in On and its attempt is below MaxAttempts,
// the database inserts the next attempt, queued, due after
// min(BackoffMaxSeconds, BackoffSeconds × 2^(n-1)) ±10%.
type RetryPolicy struct {
	MaxAttempts       int      `json:"max_attempts,omitempty"`
	BackoffSeconds    float64  `json:"backoff_seconds,omitempty"`
	BackoffMaxSeconds float64  `json:"backoff_max_seconds,omitempty"`
	On                []Status `json:"on,omitempty"`
}

// Event is one status change of a delegation (schema Event).
type Event struct {
	ID           int64           `json:"id"`
	DelegationID string          `json:"delegation_id"`
	FromStatus   Status          `json:"from_status,omitempty"`
	ToStatus     Status          `json:"to_status"`
	Reason       string          `json:"reason,omitempty"`
	Actor        string          `json:"actor"`
	At           time.Time       `json:"at"`
	Detail       json.RawMessage `json:"detail,omitempty"`
	CallerID     string          `json:"caller_id"`
	CalleeID     string          `json:"callee_id"`
}

// InsertRequest is the body of Insert (schema InsertRequest). Zero values
// are left out.
type InsertRequest struct {
	DelegationID string `json:"delegation_id"`
	// CallerID defaults to a caller token's principal.
	CallerID       string `json:"caller_id,omitempty"`
	CalleeID       string `json:"callee_id"`
	TaskPreview    string `json:"task_preview,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	Status         Status `json:"status,omitempty"`
	// Deadline, or TimeoutSeconds from now, or the server's default.
	Deadline                *time.Time `json:"deadline,omitempty"`
	TimeoutSeconds          float64    `json:"timeout_seconds,omitempty"`
	HeartbeatTimeoutSeconds float64    `json:"heartbeat_timeout_seconds,omitempty"`
	// The delegation's own progress (stalled), queue and start timeouts.
	ProgressTimeoutSeconds float64 `json:"progress_timeout_seconds,omitempty"`
	QueueTimeoutSeconds    float64 `json:"queue_timeout_seconds,omitempty"`
	StartTimeoutSeconds    float64 `json:"start_timeout_seconds,omitempty"`
	// Retry, when set, is the delegation's retry policy.
	Retry *RetryPolicy `json:"retry,omitempty"`
}

// InsertResponse says what Insert did (schema InsertResponse): Outcome is
// inserted, already_exists, duplicate_key or retried.
type InsertResponse struct {
	Outcome      string `json:"outcome"`
	DelegationID string `json:"delegation_id"`
}

// RetryRequest is the body of Retry (schema RetryRequest); every field is
// optional.
type RetryRequest struct {
	DelegationID            string     `json:"delegation_id,omitempty"`
	CalleeID                string     `json:"callee_id,omitempty"`
	TaskPreview             string     `json:"task_preview,omitempty"`
	IdempotencyKey          string     `json:"idempotency_key,omitempty"`
	ClearIdempotencyKey     bool       `json:"clear_idempotency_key,omitempty"`
	Status                  Status     `json:"status,omitempty"`
	Deadline                *time.Time `json:"deadline,omitempty"`
	TimeoutSeconds          float64    `json:"timeout_seconds,omitempty"`
	HeartbeatTimeoutSeconds float64    `json:"heartbeat_timeout_seconds,omitempty"`
	Reason                  string     `json:"reason,omitempty"`
}

// RetryResponse is the next attempt (schema RetryResponse): Outcome is
// created or already_retried.
type RetryResponse struct {
	Outcome      string `json:"outcome"`
	DelegationID string `json:"delegation_id"`
	Attempt      int    `json:"attempt"`
}

// ListQuery selects delegations for List; one of CallerID, CalleeID and
// Status is required (callers and workers are narrowed to their own).
type ListQuery struct {
	CallerID string
	CalleeID string
	Status   Status
	InFlight bool
	// Exhausted keeps the attempts whose retry policy used all its retries.
	Exhausted bool
	Limit     int
	Cursor    string
}

// ListResponse is one page of List, newest first (schema ListResponse).
type ListResponse struct {
	Delegations []Delegation `json:"delegations"`
	// NextCursor continues the list; "" on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// TransitionRequest is the body of Transition (schema TransitionRequest).
type TransitionRequest struct {
	To     Status `json:"to"`
	Result string `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// TransitionResponse is an applied or unchanged (replayed) status change
// (schema TransitionResponse).
type TransitionResponse struct {
	Outcome string `json:"outcome"`
	Status  Status `json:"status"`
}

// HeartbeatRequest is the body of HeartbeatProgress (schema
// HeartbeatRequest).
type HeartbeatRequest struct {
	// Progress replaces the delegation's progress (a JSON object).
	Progress json.RawMessage `json:"progress,omitempty"`
}

// HeartbeatResponse answers Heartbeat (schema HeartbeatResponse): Live
// false means the delegation is terminal and its worker should stop.
type HeartbeatResponse struct {
	Live   bool   `json:"live"`
	Status Status `json:"status"`
	// Reason says why a stuck delegation was marked stuck.
	Reason string `json:"reason,omitempty"`
}

// Beat is one heartbeat of Beats: a delegation and, optionally, its
// progress (a JSON object).
type Beat struct {
	ID       string          `json:"id"`
	Progress json.RawMessage `json:"progress,omitempty"`
}

// HeartbeatsRequest is the body of Heartbeats and Beats (schema
// HeartbeatsRequest).
type HeartbeatsRequest struct {
	IDs   []string `json:"ids,omitempty"`
	Beats []Beat   `json:"beats,omitempty"`
}

// HeartbeatsResponse lists the ids not live (schema HeartbeatsResponse).
type HeartbeatsResponse struct {
	NotLive []string `json:"not_live"`
}

// EventsResponse is a delegation's audit log (schema EventsResponse).
type EventsResponse struct {
	Events []Event `json:"events"`
}

// AttemptsResponse is an attempt chain (schema AttemptsResponse).
type AttemptsResponse struct {
	Attempts []Delegation `json:"attempts"`
}

// FeedQuery selects events of the durable feed.
type FeedQuery struct {
	// After is the cursor: the id of the last event processed (0: from the
	// beginning).
	After    int64
	Limit    int
	ToStatus Status
	CallerID string
	CalleeID string
	// Wait makes the request a long poll of at most this long (whole
	// seconds; the server bounds it by api.max_wait).
	Wait time.Duration
}

// FeedResponse is one page of the feed (schema FeedResponse).
type FeedResponse struct {
	Events []Event `json:"events"`
	// NextAfter is the cursor to ask from next.
	NextAfter int64 `json:"next_after"`
	// Pending says matching events wait for an older transaction to end.
	Pending bool `json:"pending"`
}

// Counts are in-flight delegations per status (schema Counts).
type Counts struct {
	Queued     int64 `json:"queued"`
	Dispatched int64 `json:"dispatched"`
	InProgress int64 `json:"in_progress"`
}

// CallerSummary is one caller's in-flight delegations.
type CallerSummary struct {
	CallerID string `json:"caller_id"`
	InFlight int64  `json:"in_flight"`
	ByStatus Counts `json:"by_status"`
}

// Summary is what is in flight (schema Summary).
type Summary struct {
	InFlight int64           `json:"in_flight"`
	ByStatus Counts          `json:"by_status"`
	ByCaller []CallerSummary `json:"by_caller"`
}

// ClaimRequest is the body of Claim (schema ClaimRequest).
type ClaimRequest struct {
	// CalleeID defaults to a worker token's principal.
	CalleeID string `json:"callee_id,omitempty"`
	Limit    int    `json:"limit"`
}

// ClaimResponse is what Claim took (schema ClaimResponse).
type ClaimResponse struct {
	Delegations []Delegation `json:"delegations"`
}

// WebhookRequest is the body of CreateWebhook (schema WebhookRequest).
type WebhookRequest struct {
	// URL is the destination: https:// (http:// with webhooks.allow_http).
	URL string `json:"url"`
	// Events lists the statuses whose events to send; empty: all.
	Events []Status `json:"events,omitempty"`
	// CallerID and CalleeID, when set, keep only that caller's or callee's
	// delegations.
	CallerID string `json:"caller_id,omitempty"`
	CalleeID string `json:"callee_id,omitempty"`
}

// WebhookSubscription is a webhook subscription as listed, never with its
// secret (schema WebhookSubscription).
type WebhookSubscription struct {
	ID       string   `json:"id"`
	URL      string   `json:"url"`
	Events   []Status `json:"events"`
	CallerID string   `json:"caller_id,omitempty"`
	CalleeID string   `json:"callee_id,omitempty"`
	// State is active, paused (its head event failed for
	// webhooks.max_retry_age) or disabled (the endpoint answered 410).
	State       string `json:"state"`
	StateReason string `json:"state_reason,omitempty"`
	// Cursor is the id of the last event delivered or passed over.
	Cursor         int64      `json:"cursor"`
	FailedAttempts int        `json:"failed_attempts"`
	FailingSince   *time.Time `json:"failing_since,omitempty"`
	NextAttemptAt  *time.Time `json:"next_attempt_at,omitempty"`
	LastDeliveryAt *time.Time `json:"last_delivery_at,omitempty"`
	// RotationEndsAt is, while a rotation lasts, when the previous secret
	// stops signing.
	RotationEndsAt *time.Time `json:"rotation_ends_at,omitempty"`
	LeaseOwner     string     `json:"lease_owner,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
}

// WebhookSecret is a subscription with its signing secret, which the API
// shows only in the answer of CreateWebhook and RotateWebhookSecret
// (schema WebhookSecret).
type WebhookSecret struct {
	WebhookSubscription
	// Secret is whsec_ and the base64 of the HMAC-SHA256 key.
	Secret string `json:"secret"`
}

// WebhooksResponse is what ListWebhooks reads (schema WebhooksResponse).
type WebhooksResponse struct {
	Subscriptions []WebhookSubscription `json:"subscriptions"`
}

// WebhookAttempt is one delivery attempt of a subscription (schema
// WebhookAttempt).
type WebhookAttempt struct {
	ID int64 `json:"id"`
	// EventID is the event delivered; WebhookID the webhook-id header sent.
	EventID   int64     `json:"event_id"`
	WebhookID string    `json:"webhook_id"`
	At        time.Time `json:"at"`
	// StatusCode is the endpoint's status; 0 when no answer came.
	StatusCode int `json:"status_code,omitempty"`
	LatencyMS  int `json:"latency_ms"`
	// Outcome is delivered, failed, gone or refused.
	Outcome  string `json:"outcome"`
	Error    string `json:"error,omitempty"`
	Response string `json:"response,omitempty"`
}

// WebhookAttemptsResponse is what WebhookAttempts reads (schema
// WebhookAttemptsResponse).
type WebhookAttemptsResponse struct {
	Attempts []WebhookAttempt `json:"attempts"`
}
