package webhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksweeper/sweeper/ledger"
)

// State is a subscription's delivery state.
type State string

// The states of a subscription.
const (
	// Active: delivered by one replica at a time.
	Active State = "active"
	// Paused: its head event kept failing for Config.MaxRetryAge; nothing
	// is delivered until it is resumed, from its cursor (nothing is lost).
	Paused State = "paused"
	// Disabled: the endpoint answered 410 Gone; resume it to deliver again.
	Disabled State = "disabled"
)

// RotationGrace is how long the previous secret keeps signing after
// RotateSecret: deliveries carry both signatures meanwhile, so receivers
// can switch to the new secret at any moment within it.
const RotationGrace = 24 * time.Hour

// Subscription is a webhook subscription as it is listed: never its secret.
type Subscription struct {
	ID  string `db:"id" json:"id"`
	URL string `db:"url" json:"url"`
	// Events are the statuses whose events it receives (the event type is
	// "delegation." + status); empty means every event.
	Events   []ledger.Status `db:"events" json:"events"`
	CallerID string          `db:"caller_id" json:"caller_id,omitempty"`
	CalleeID string          `db:"callee_id" json:"callee_id,omitempty"`
	State    State           `db:"state" json:"state"`
	// StateReason says why it is paused or disabled.
	StateReason string `db:"state_reason" json:"state_reason,omitempty"`
	// Cursor is the id of the last event delivered (or passed over as not
	// matching): the subscription resumes after it.
	Cursor         int64      `db:"cursor_id" json:"cursor"`
	FailedAttempts int        `db:"failed_attempts" json:"failed_attempts"`
	FailingSince   *time.Time `db:"failing_since" json:"failing_since,omitempty"`
	NextAttemptAt  *time.Time `db:"next_attempt_at" json:"next_attempt_at,omitempty"`
	LastDeliveryAt *time.Time `db:"last_delivery_at" json:"last_delivery_at,omitempty"`
	// RotationEndsAt, while a rotation lasts, is when the previous secret
	// stops signing.
	RotationEndsAt *time.Time `db:"rotation_ends_at" json:"rotation_ends_at,omitempty"`
	// LeaseOwner is the replica delivering it ("" when none).
	LeaseOwner string    `db:"lease_owner" json:"lease_owner,omitempty"`
	CreatedAt  time.Time `db:"created_at" json:"created_at"`
	UpdatedAt  time.Time `db:"updated_at" json:"updated_at"`
}

// Matches reports whether ev is one the subscription receives.
func (s *Subscription) Matches(ev ledger.Event) bool {
	if s.CallerID != "" && ev.CallerID != s.CallerID || s.CalleeID != "" && ev.CalleeID != s.CalleeID {
		return false
	}
	return len(s.Events) == 0 || slices.Contains(s.Events, ev.ToStatus)
}

// NewSubscription is what Create records.
type NewSubscription struct {
	// URL is the destination: https, unless AllowHTTP (CheckURL).
	URL string
	// Events are the statuses to receive events of; empty: all.
	Events []ledger.Status
	// CallerID and CalleeID, when set, narrow it to one caller's or one
	// callee's delegations.
	CallerID, CalleeID string
	// AllowHTTP and AllowPrivate are webhooks.allow_http and
	// webhooks.allow_private_networks.
	AllowHTTP, AllowPrivate bool
}

// Created is the answer of Create and RotateSecret: the subscription and
// its secret, shown this once.
type Created struct {
	Subscription
	Secret string `json:"secret"`
}

// Attempt is one logged delivery attempt.
type Attempt struct {
	ID         int64     `db:"id" json:"id"`
	EventID    int64     `db:"event_id" json:"event_id"`
	WebhookID  string    `db:"webhook_id" json:"webhook_id"`
	At         time.Time `db:"at" json:"at"`
	StatusCode *int      `db:"status_code" json:"status_code,omitempty"`
	LatencyMS  int       `db:"latency_ms" json:"latency_ms"`
	// Outcome is delivered, failed, gone (410) or refused (the address or
	// URL was refused before any request).
	Outcome string `db:"outcome" json:"outcome"`
	Error   string `db:"error" json:"error,omitempty"`
	// Response is at most ResponseKeepBytes of the response body.
	Response string `db:"response" json:"response,omitempty"`
}

// MaxAttemptsListed bounds Attempts.
const MaxAttemptsListed = 50

// MaxEvents bounds a subscription's events: each status at most once.
const MaxEvents = 6

// ErrNotFound is returned for a subscription id that names none.
var ErrNotFound = errors.New("webhook: no such subscription")

// Store reads and writes subscriptions.
type Store struct{ db ledger.DB }

// NewStore returns a store over db (usually a *pgxpool.Pool).
func NewStore(db ledger.DB) *Store { return &Store{db: db} }

// CheckID reports whether id has the form of a subscription id (wh_ and 24
// hex digits), as a *ledger.FieldError naming field.
func CheckID(field, id string) error {
	if len(id) != 27 || !strings.HasPrefix(id, "wh_") {
		return &ledger.FieldError{Field: field, Reason: "is not a subscription id (wh_ and 24 hex digits)"}
	}
	if _, err := hex.DecodeString(id[3:]); err != nil || strings.ToLower(id) != id {
		return &ledger.FieldError{Field: field, Reason: "is not a subscription id (wh_ and 24 hex digits)"}
	}
	return nil
}

func newID() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("webhook: drawing an id: %w", err)
	}
	return "wh_" + hex.EncodeToString(b), nil
}

// validate checks n; errors are *ledger.FieldError naming the field.
func (n *NewSubscription) validate() error {
	if n.URL == "" {
		return &ledger.FieldError{Field: "url", Reason: "is required"}
	}
	if err := CheckURL(n.URL, n.AllowHTTP, n.AllowPrivate); err != nil {
		return &ledger.FieldError{Field: "url", Reason: strings.TrimPrefix(err.Error(), "url ")}
	}
	if len(n.Events) > MaxEvents {
		return &ledger.FieldError{Field: "events", Reason: fmt.Sprintf("has %d statuses; there are %d, each at most once", len(n.Events), MaxEvents)}
	}
	seen := map[ledger.Status]bool{}
	for i, e := range n.Events {
		if !e.Valid() {
			return &ledger.FieldError{Field: fmt.Sprintf("events[%d]", i),
				Reason: fmt.Sprintf("must be a status (queued, dispatched, in_progress, completed, failed, stuck), got %q", e)}
		}
		if seen[e] {
			return &ledger.FieldError{Field: fmt.Sprintf("events[%d]", i), Reason: fmt.Sprintf("repeats %q", e)}
		}
		seen[e] = true
	}
	for _, f := range []struct{ name, v string }{{"caller_id", n.CallerID}, {"callee_id", n.CalleeID}} {
		if f.v == "" {
			continue
		}
		if strings.TrimSpace(f.v) == "" || len(f.v) > ledger.MaxIDBytes || strings.ContainsFunc(f.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return &ledger.FieldError{Field: f.name, Reason: "must be an id: not blank, at most 255 bytes, no control character"}
		}
	}
	return nil
}

// Create records a subscription, which receives the events committed from
// now on, and returns it with its new secret.
func (s *Store) Create(ctx context.Context, n NewSubscription) (Created, error) {
	if err := n.validate(); err != nil {
		return Created{}, fmt.Errorf("creating a webhook subscription: %w", err)
	}
	id, err := newID()
	if err != nil {
		return Created{}, err
	}
	secret, err := NewSecret()
	if err != nil {
		return Created{}, err
	}
	events := make([]string, 0, len(n.Events))
	for _, e := range n.Events {
		events = append(events, string(e))
	}
	sub, err := s.one(ctx, "creating a webhook subscription", insertSubscriptionSQL, id, n.URL, events, n.CallerID, n.CalleeID, secret)
	if err != nil {
		return Created{}, err
	}
	return Created{Subscription: sub, Secret: secret}, nil
}

// Get returns one subscription, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Subscription, error) {
	if err := CheckID("id", id); err != nil {
		return Subscription{}, ErrNotFound
	}
	return s.one(ctx, "reading webhook subscription", getSubscriptionSQL, id)
}

// List returns every subscription, oldest first.
func (s *Store) List(ctx context.Context) ([]Subscription, error) {
	return s.list(ctx, nil)
}

// ListFirst returns the oldest n subscriptions, oldest first.
func (s *Store) ListFirst(ctx context.Context, n int) ([]Subscription, error) {
	return s.list(ctx, n)
}

// list reads subscriptions, at most limit (nil: all).
func (s *Store) list(ctx context.Context, limit any) ([]Subscription, error) {
	rows, err := s.db.Query(ctx, listSubscriptionsSQL, limit)
	if err != nil {
		return nil, fmt.Errorf("listing webhook subscriptions: %w", err)
	}
	subs, err := pgx.CollectRows(rows, pgx.RowToStructByName[Subscription])
	if err != nil {
		return nil, fmt.Errorf("listing webhook subscriptions: %w", err)
	}
	return subs, nil
}

// Delete removes a subscription and its attempts log; ErrNotFound when
// there is none. A delivery in flight ends at the lease's next renewal.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := CheckID("id", id); err != nil {
		return ErrNotFound
	}
	tag, err := s.db.Exec(ctx, deleteSubscriptionSQL, id)
	if err != nil {
		return fmt.Errorf("deleting webhook subscription: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// RotateSecret gives a subscription a new secret, returned this once; the
// current one keeps signing for RotationGrace (a second rotation within it
// drops the oldest).
func (s *Store) RotateSecret(ctx context.Context, id string) (Created, error) {
	if err := CheckID("id", id); err != nil {
		return Created{}, ErrNotFound
	}
	secret, err := NewSecret()
	if err != nil {
		return Created{}, err
	}
	sub, err := s.one(ctx, "rotating the secret of webhook subscription", rotateSecretSQL, id, secret, RotationGrace)
	if err != nil {
		return Created{}, err
	}
	return Created{Subscription: sub, Secret: secret}, nil
}

// Resume makes a paused or disabled subscription active again, from its
// cursor: the event that failed is attempted first.
func (s *Store) Resume(ctx context.Context, id string) (Subscription, error) {
	if err := CheckID("id", id); err != nil {
		return Subscription{}, ErrNotFound
	}
	return s.one(ctx, "resuming webhook subscription", resumeSQL, id)
}

// Attempts returns the newest limit (at most MaxAttemptsListed) attempts
// of a subscription, newest first.
func (s *Store) Attempts(ctx context.Context, id string, limit int) ([]Attempt, error) {
	if err := CheckID("id", id); err != nil {
		return nil, ErrNotFound
	}
	limit = min(max(limit, 1), MaxAttemptsListed)
	rows, err := s.db.Query(ctx, listAttemptsSQL, id, limit)
	if err != nil {
		return nil, fmt.Errorf("listing webhook attempts: %w", err)
	}
	as, err := pgx.CollectRows(rows, pgx.RowToStructByName[Attempt])
	if err != nil {
		return nil, fmt.Errorf("listing webhook attempts: %w", err)
	}
	return as, nil
}

func (s *Store) one(ctx context.Context, action, sql string, args ...any) (Subscription, error) {
	rows, err := s.db.Query(ctx, sql, args...)
	if err != nil {
		return Subscription{}, fmt.Errorf("%s: %w", action, err)
	}
	sub, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Subscription])
	if errors.Is(err, pgx.ErrNoRows) {
		return Subscription{}, ErrNotFound
	}
	if err != nil {
		return Subscription{}, fmt.Errorf("%s: %w", action, err)
	}
	return sub, nil
}
