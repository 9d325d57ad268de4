package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults of a Client's fields.
const (
	MaxRetriesDefault    = 3
	MaxRetryDelayDefault = 30 * time.Second
	// TimeoutDefault bounds a request, above the API's longest long poll
	// (api.max_wait, 1 minute by default).
	TimeoutDefault = 70 * time.Second
)

// Client calls the API with one token. It is safe for concurrent use; set
// its fields before the first call.
type Client struct {
	baseURL string
	token   string

	// HTTPClient sends the requests (a client with Timeout TimeoutDefault
	// by default).
	HTTPClient *http.Client
	// MaxRetries is how many times an answer 429 or 503 is retried.
	MaxRetries int
	// MaxRetryDelay bounds the wait before a retry, whatever Retry-After says.
	MaxRetryDelay time.Duration

	strict bool // tests: refuse fields the types do not know
}

// New returns a client of the API at baseURL (http://host:port) that
// authenticates with token. The token is never printed.
func New(baseURL, token string) *Client {
	return &Client{
		baseURL:       strings.TrimRight(baseURL, "/"),
		token:         token,
		HTTPClient:    &http.Client{Timeout: TimeoutDefault},
		MaxRetries:    MaxRetriesDefault,
		MaxRetryDelay: MaxRetryDelayDefault,
	}
}

// String names the API, never the token.
func (c *Client) String() string { return "apiclient.Client(" + c.baseURL + ")" }

// ProblemError is an error answer of the API: RFC 9457 problem details.
type ProblemError struct {
	// Status is the HTTP status.
	Status int
	// Type is "urn:sweeper:problem:" and a stable slug (Slug).
	Type     string
	Title    string
	Detail   string
	Instance string
	// Field names the invalid input (invalid-field, invalid-json,
	// invalid-parameter).
	Field string
	// Outcome and CurrentStatus explain a refused transition or retry (409).
	Outcome       string
	CurrentStatus Status
	// RetryAfter is the wait the server asked for (429, 503); 0 when none.
	RetryAfter time.Duration
}

func (e *ProblemError) Error() string {
	msg := fmt.Sprintf("sweeper API: %d %s", e.Status, e.Title)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Slug is the last part of Type, e.g. "invalid-field".
func (e *ProblemError) Slug() string { return e.Type[strings.LastIndex(e.Type, ":")+1:] }

// IsNotFound reports whether err is a 404 answer: the delegation is missing
// or outside the token's scope.
func IsNotFound(err error) bool {
	var p *ProblemError
	return errors.As(err, &p) && p.Status == http.StatusNotFound
}

// do sends a request with a JSON body (nil for none) and decodes the answer
// into out, retrying 429 and 503 after Retry-After.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	u := c.baseURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return fmt.Errorf("sweeper API: encoding the request: %w", err)
		}
	}
	for attempt := 0; ; attempt++ {
		var rd io.Reader
		if raw != nil {
			rd = bytes.NewReader(raw)
		}
		req, err := http.NewRequestWithContext(ctx, method, u, rd)
		if err != nil {
			return fmt.Errorf("sweeper API: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+c.token)
		req.Header.Set("Accept", "application/json")
		if raw != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		res, err := c.HTTPClient.Do(req)
		if err != nil {
			return fmt.Errorf("sweeper API: %s %s: %w", method, path, err)
		}
		b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
		_ = res.Body.Close()
		if err != nil {
			return fmt.Errorf("sweeper API: %s %s: reading the answer: %w", method, path, err)
		}
		if res.StatusCode < 300 {
			return c.decode(b, out)
		}
		p := problemOf(res, b)
		if (res.StatusCode == http.StatusTooManyRequests || res.StatusCode == http.StatusServiceUnavailable) && attempt < c.MaxRetries {
			delay := p.RetryAfter
			if delay == 0 {
				delay = time.Duration(500*math.Pow(2, float64(attempt))) * time.Millisecond
			}
			t := time.NewTimer(min(delay, c.MaxRetryDelay))
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("sweeper API: waiting to retry: %w (after %w)", ctx.Err(), p)
			}
		}
		return p
	}
}

func (c *Client) decode(b []byte, out any) error {
	if out == nil {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], b...)
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if c.strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("sweeper API: decoding the answer: %w", err)
	}
	return nil
}

func problemOf(res *http.Response, body []byte) *ProblemError {
	var p struct {
		Type, Title, Detail, Instance, Field, Outcome string
		CurrentStatus                                 Status `json:"current_status"`
	}
	if json.Unmarshal(body, &p) != nil || p.Title == "" {
		p.Title = http.StatusText(res.StatusCode)
	}
	return &ProblemError{
		Status: res.StatusCode, Type: p.Type, Title: p.Title, Detail: p.Detail, Instance: p.Instance,
		Field: p.Field, Outcome: p.Outcome, CurrentStatus: p.CurrentStatus,
		RetryAfter: retryAfter(res.Header.Get("Retry-After")),
	}
}

// retryAfter reads Retry-After: delta-seconds or an HTTP date.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t))
	}
	return 0
}

func idPath(id, suffix string) string { return "/v1/delegations/" + url.PathEscape(id) + suffix }

// Insert records a delegation. A replay of the same id answers
// already_exists; a caller's idempotency key duplicate_key (with the
// existing id) or retried (a next attempt).
func (c *Client) Insert(ctx context.Context, req InsertRequest) (InsertResponse, error) {
	var out InsertResponse
	return out, c.do(ctx, http.MethodPost, "/v1/delegations", nil, req, &out)
}

// Get returns one delegation; a missing one is a 404 ProblemError (IsNotFound).
func (c *Client) Get(ctx context.Context, id string) (Delegation, error) {
	var out Delegation
	return out, c.do(ctx, http.MethodGet, idPath(id, ""), nil, nil, &out)
}

// List returns one page of delegations, newest first.
func (c *Client) List(ctx context.Context, q ListQuery) (ListResponse, error) {
	v := url.Values{}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	set("caller_id", q.CallerID)
	set("callee_id", q.CalleeID)
	set("status", string(q.Status))
	set("cursor", q.Cursor)
	if q.InFlight {
		v.Set("in_flight", "true")
	}
	if q.Exhausted {
		v.Set("exhausted", "true")
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out ListResponse
	return out, c.do(ctx, http.MethodGet, "/v1/delegations", v, nil, &out)
}

// All yields every delegation that List(q) pages through, then stops; an
// error is yielded once, last.
func (c *Client) All(ctx context.Context, q ListQuery) iter.Seq2[Delegation, error] {
	return func(yield func(Delegation, error) bool) {
		for {
			page, err := c.List(ctx, q)
			if err != nil {
				yield(Delegation{}, err)
				return
			}
			for _, d := range page.Delegations {
				if !yield(d, nil) {
					return
				}
			}
			if page.NextCursor == "" {
				return
			}
			q.Cursor = page.NextCursor
		}
	}
}

// Transition moves a delegation: applied or unchanged; a refused move is a
// 409 ProblemError with Outcome and CurrentStatus.
func (c *Client) Transition(ctx context.Context, id string, req TransitionRequest) (TransitionResponse, error) {
	var out TransitionResponse
	return out, c.do(ctx, http.MethodPost, idPath(id, "/transitions"), nil, req, &out)
}

// Heartbeat records that the delegation's worker is alive; Live false means
// stop.
func (c *Client) Heartbeat(ctx context.Context, id string) (HeartbeatResponse, error) {
	var out HeartbeatResponse
	return out, c.do(ctx, http.MethodPost, idPath(id, "/heartbeat"), nil, nil, &out)
}

// HeartbeatProgress is Heartbeat with a progress report, a value that
// encodes as a JSON object (or json.RawMessage): it replaces the
// delegation's progress; a delegation whose progress stops changing is
// marked stuck (stalled) after its progress timeout.
func (c *Client) HeartbeatProgress(ctx context.Context, id string, progress any) (HeartbeatResponse, error) {
	raw, err := rawJSON(progress)
	if err != nil {
		return HeartbeatResponse{}, err
	}
	var out HeartbeatResponse
	return out, c.do(ctx, http.MethodPost, idPath(id, "/heartbeat"), nil, HeartbeatRequest{Progress: raw}, &out)
}

func rawJSON(v any) (json.RawMessage, error) {
	if raw, ok := v.(json.RawMessage); ok || v == nil {
		return raw, nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("sweeper API: encoding the progress: %w", err)
	}
	return raw, nil
}

// Heartbeats records heartbeats of many delegations in one statement and
// returns the ids that are not live.
func (c *Client) Heartbeats(ctx context.Context, ids []string) ([]string, error) {
	var out HeartbeatsResponse
	err := c.do(ctx, http.MethodPost, "/v1/heartbeats", nil, HeartbeatsRequest{IDs: ids}, &out)
	return out.NotLive, err
}

// Beats is Heartbeats with a progress report per delegation.
func (c *Client) Beats(ctx context.Context, beats []Beat) ([]string, error) {
	var out HeartbeatsResponse
	err := c.do(ctx, http.MethodPost, "/v1/heartbeats", nil, HeartbeatsRequest{Beats: beats}, &out)
	return out.NotLive, err
}

// Events returns the audit log of one delegation, oldest first.
func (c *Client) Events(ctx context.Context, id string) ([]Event, error) {
	var out EventsResponse
	err := c.do(ctx, http.MethodGet, idPath(id, "/events"), nil, nil, &out)
	return out.Events, err
}

// Retry records the next attempt of a failed or stuck delegation.
func (c *Client) Retry(ctx context.Context, id string, req RetryRequest) (RetryResponse, error) {
	var out RetryResponse
	return out, c.do(ctx, http.MethodPost, idPath(id, "/retry"), nil, req, &out)
}

// Attempts returns the attempt chain the delegation belongs to, first
// attempt first.
func (c *Client) Attempts(ctx context.Context, id string) ([]Delegation, error) {
	var out AttemptsResponse
	err := c.do(ctx, http.MethodGet, idPath(id, "/attempts"), nil, nil, &out)
	return out.Attempts, err
}

// Claim moves up to limit due queued delegations of a callee to
// dispatched and returns them, the longest due first; concurrent claimers
// never get the same one. calleeID "" is a worker token's own callee.
func (c *Client) Claim(ctx context.Context, calleeID string, limit int) ([]Delegation, error) {
	var out ClaimResponse
	err := c.do(ctx, http.MethodPost, "/v1/claims", nil, ClaimRequest{CalleeID: calleeID, Limit: limit}, &out)
	return out.Delegations, err
}

func webhookPath(id, suffix string) string { return "/v1/webhooks/" + url.PathEscape(id) + suffix }

// CreateWebhook subscribes an endpoint to the ledger's events (admin
// tokens only). The answer's Secret is shown this once: store it.
func (c *Client) CreateWebhook(ctx context.Context, req WebhookRequest) (WebhookSecret, error) {
	var out WebhookSecret
	return out, c.do(ctx, http.MethodPost, "/v1/webhooks", nil, req, &out)
}

// ListWebhooks returns the oldest 10000 subscriptions, oldest first,
// without their secrets (admin tokens only).
func (c *Client) ListWebhooks(ctx context.Context) ([]WebhookSubscription, error) {
	var out WebhooksResponse
	err := c.do(ctx, http.MethodGet, "/v1/webhooks", nil, nil, &out)
	return out.Subscriptions, err
}

// GetWebhook returns one subscription, without its secret (admin tokens
// only); IsNotFound(err) when there is none.
func (c *Client) GetWebhook(ctx context.Context, id string) (WebhookSubscription, error) {
	var out WebhookSubscription
	return out, c.do(ctx, http.MethodGet, webhookPath(id, ""), nil, nil, &out)
}

// DeleteWebhook deletes a subscription and its attempts (admin tokens
// only); IsNotFound(err) when there is none.
func (c *Client) DeleteWebhook(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, webhookPath(id, ""), nil, nil, nil)
}

// RotateWebhookSecret gives a subscription a new secret, returned this
// once; deliveries are signed with both until RotationEndsAt (admin tokens
// only).
func (c *Client) RotateWebhookSecret(ctx context.Context, id string) (WebhookSecret, error) {
	var out WebhookSecret
	return out, c.do(ctx, http.MethodPost, webhookPath(id, "/rotate-secret"), nil, nil, &out)
}

// ResumeWebhook makes a paused or disabled subscription active again, from
// its cursor (admin tokens only).
func (c *Client) ResumeWebhook(ctx context.Context, id string) (WebhookSubscription, error) {
	var out WebhookSubscription
	return out, c.do(ctx, http.MethodPost, webhookPath(id, "/resume"), nil, nil, &out)
}

// WebhookAttempts returns a subscription's newest delivery attempts, newest
// first: limit of them (1 to 50), or 50 when limit is 0 (admin tokens only).
func (c *Client) WebhookAttempts(ctx context.Context, id string, limit int) ([]WebhookAttempt, error) {
	v := url.Values{}
	if limit != 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var out WebhookAttemptsResponse
	err := c.do(ctx, http.MethodGet, webhookPath(id, "/attempts"), v, nil, &out)
	return out.Attempts, err
}

// Summary counts what is in flight, of callerID or of every caller ("").
func (c *Client) Summary(ctx context.Context, callerID string) (Summary, error) {
	v := url.Values{}
	if callerID != "" {
		v.Set("caller_id", callerID)
	}
	var out Summary
	return out, c.do(ctx, http.MethodGet, "/v1/summary", v, nil, &out)
}

// OpenAPI returns the API's OpenAPI document.
func (c *Client) OpenAPI(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	return out, c.do(ctx, http.MethodGet, "/v1/openapi.json", nil, nil, &out)
}

// Feed returns one page of the durable feed; q.Wait makes it a long poll.
func (c *Client) Feed(ctx context.Context, q FeedQuery) (FeedResponse, error) {
	v := url.Values{}
	if q.After > 0 {
		v.Set("after", strconv.FormatInt(q.After, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	for k, val := range map[string]string{"to_status": string(q.ToStatus), "caller_id": q.CallerID, "callee_id": q.CalleeID} {
		if val != "" {
			v.Set(k, val)
		}
	}
	if q.Wait > 0 {
		v.Set("wait", strconv.Itoa(int(max(time.Second, q.Wait.Round(time.Second))/time.Second))+"s")
	}
	var out FeedResponse
	return out, c.do(ctx, http.MethodGet, "/v1/events", v, nil, &out)
}

// FollowWaitDefault is the long poll of Follow when FeedQuery.Wait is 0.
const FollowWaitDefault = 30 * time.Second

// Follow yields every matching event after q.After, for ever, long-polling,
// until ctx ends or the loop breaks; an error is yielded once, last. Keep
// the id of the last event you processed: following again from it misses
// nothing and repeats nothing.
func (c *Client) Follow(ctx context.Context, q FeedQuery) iter.Seq2[Event, error] {
	if q.Wait == 0 {
		q.Wait = FollowWaitDefault
	}
	return func(yield func(Event, error) bool) {
		for {
			page, err := c.Feed(ctx, q)
			if err != nil {
				yield(Event{}, err)
				return
			}
			for _, ev := range page.Events {
				if !yield(ev, nil) {
					return
				}
				q.After = ev.ID
			}
			q.After = max(q.After, page.NextAfter)
		}
	}
}
