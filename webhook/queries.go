package webhook

// The statements of webhook subscriptions and deliveries (migration
// 000009). A subscription is read and written by its primary key; the
// deliverer's lease statements read webhook_subscriptions whole, which
// holds one row per subscription (tens, not millions).

const subscriptionColumns = `
    id, url, events, COALESCE(caller_id, '') AS caller_id, COALESCE(callee_id, '') AS callee_id,
    state, COALESCE(state_reason, '') AS state_reason, cursor_id, failed_attempts, failing_since,
    next_attempt_at, last_delivery_at, previous_secret_expires_at AS rotation_ends_at,
    COALESCE(lease_owner, '') AS lease_owner, created_at, updated_at`

const insertSubscriptionSQL = `
INSERT INTO webhook_subscriptions (id, url, events, caller_id, callee_id, secret, cursor_id, cursor_tx)
VALUES ($1, $2, $3, NULLIF($4, ''), NULLIF($5, ''), $6,
        COALESCE((SELECT max(id) FROM delegation_events), 0),
        COALESCE((SELECT tx_id::text FROM delegation_events ORDER BY id DESC LIMIT 1), '0'))
RETURNING ` + subscriptionColumns

const getSubscriptionSQL = `SELECT ` + subscriptionColumns + ` FROM webhook_subscriptions WHERE id = $1`

// listSubscriptionsSQL lists at most $1 subscriptions (NULL: all).
const listSubscriptionsSQL = `SELECT ` + subscriptionColumns + ` FROM webhook_subscriptions ORDER BY created_at, id LIMIT $1::bigint`

const deleteSubscriptionSQL = `DELETE FROM webhook_subscriptions WHERE id = $1`

// rotateSecretSQL keeps the current secret as the previous one, which also
// signs until now() + $3.
const rotateSecretSQL = `
UPDATE webhook_subscriptions
SET previous_secret = secret, previous_secret_expires_at = now() + $3::interval, secret = $2, updated_at = now()
WHERE id = $1
RETURNING ` + subscriptionColumns

// resumeSQL makes a paused or disabled subscription active again, from its
// cursor, with no failure on record.
const resumeSQL = `
UPDATE webhook_subscriptions
SET state = 'active', state_reason = NULL, failed_attempts = 0, failing_since = NULL,
    next_attempt_at = NULL, updated_at = now()
WHERE id = $1
RETURNING ` + subscriptionColumns

// listAttemptsSQL: the newest $2 attempts of a subscription.
const listAttemptsSQL = `
SELECT id, event_id, webhook_id, at, status_code, latency_ms, outcome,
       COALESCE(error, '') AS error, COALESCE(response, '') AS response
FROM webhook_attempts WHERE subscription_id = $1
ORDER BY id DESC LIMIT $2`

// acquireLeasesSQL renews the leases $1 holds on active subscriptions and
// takes those no one holds or whose lease expired, for $2 from now; it
// returns every subscription $1 then holds. Its own rows are renewed
// without SKIP LOCKED (a worker's cursor update holds the row for a moment:
// skipping it would drop a lease still held); free rows are taken with it,
// so replicas that acquire at the same moment split them between them.
const acquireLeasesSQL = `
WITH renewed AS (
    UPDATE webhook_subscriptions SET lease_expires_at = now() + $2::interval
    WHERE lease_owner = $1 AND state = 'active'
    RETURNING id
), taken AS (
    UPDATE webhook_subscriptions AS s
    SET lease_owner = $1, lease_expires_at = now() + $2::interval
    WHERE s.id IN (
        SELECT id FROM webhook_subscriptions
        WHERE state = 'active' AND lease_owner IS DISTINCT FROM $1
          AND (lease_owner IS NULL OR lease_expires_at < now())
        FOR UPDATE SKIP LOCKED)
    RETURNING s.id
)
SELECT id FROM renewed UNION ALL SELECT id FROM taken`

// releaseLeasesSQL gives up the leases of $1 (a clean stop), so another
// replica takes them at its next acquisition rather than at expiry.
const releaseLeasesSQL = `
UPDATE webhook_subscriptions SET lease_owner = NULL, lease_expires_at = NULL
WHERE lease_owner = $1`

// leasedSubscriptionSQL reads a subscription $2 holds, with the seconds to
// wait before the next attempt (0 when due).
const leasedSubscriptionSQL = `
SELECT ` + subscriptionColumns + `, cursor_tx,
       GREATEST(extract(epoch FROM next_attempt_at - now()), 0)::float8 AS wait_seconds
FROM webhook_subscriptions
WHERE id = $1 AND lease_owner = $2 AND lease_expires_at > now() AND state = 'active'`

// signingSecretsColumns are the secrets that sign a subscription's
// deliveries: the current one, and the previous one while its rotation
// lasts (” after).
const signingSecretsColumns = `secret, CASE WHEN previous_secret_expires_at > now() THEN previous_secret ELSE '' END`

// signingSecretsSQL reads the secrets that sign subscription $1's deliveries.
const signingSecretsSQL = `
SELECT ` + signingSecretsColumns + `
FROM webhook_subscriptions WHERE id = $1`

// advanceCursorSQL moves the cursor of $1 to event $3 of transaction $4
// (the end of a page's delivered prefix: events answered 2xx and events
// that do not match), when $2 still holds the lease, renews the lease for
// $6 and clears the failure record; $5 says whether an event was
// delivered. An empty $4 is read from the event (or, if the prune deleted
// it meanwhile, the cursor keeps its transaction: events of later
// transactions may then come again, never be skipped).
const advanceCursorSQL = `
UPDATE webhook_subscriptions
SET cursor_id = $3,
    cursor_tx = COALESCE(NULLIF($4, ''), (SELECT tx_id::text FROM delegation_events WHERE id = $3), cursor_tx),
    failed_attempts = 0, failing_since = NULL, next_attempt_at = NULL,
    last_delivery_at = CASE WHEN $5 THEN now() ELSE last_delivery_at END,
    lease_expires_at = now() + $6::interval, updated_at = now()
WHERE id = $1 AND lease_owner = $2
RETURNING cursor_tx`

// failedAttemptSQL records a failed delivery of the head event: the next
// attempt in $3, or, once the failures have lasted $4, the pause ($5 the
// reason). It returns the state.
const failedAttemptSQL = `
UPDATE webhook_subscriptions
SET failed_attempts = failed_attempts + 1,
    failing_since = COALESCE(failing_since, now()),
    next_attempt_at = now() + $3::interval,
    state = CASE WHEN now() - COALESCE(failing_since, now()) >= $4::interval THEN 'paused' ELSE state END,
    state_reason = CASE WHEN now() - COALESCE(failing_since, now()) >= $4::interval THEN $5 ELSE state_reason END,
    updated_at = now()
WHERE id = $1 AND lease_owner = $2
RETURNING state, failed_attempts`

// disableSQL disables $1 (the endpoint answered 410 Gone).
const disableSQL = `
UPDATE webhook_subscriptions
SET state = 'disabled', state_reason = $3, updated_at = now()
WHERE id = $1 AND lease_owner = $2`

// insertAttemptsSQL logs attempts of subscription $1, one row per element
// of the arrays, in their order: $2 the event ids, $3 the webhook-ids, $4
// how long ago each attempt ended, in microseconds (its at is the
// database clock's now less that), $5 the status codes (0: no answer), $6
// the latencies in ms, $7 the outcomes, $8 the errors and $9 the responses
// (empty: none).
const insertAttemptsSQL = `
INSERT INTO webhook_attempts (subscription_id, event_id, webhook_id, at, status_code, latency_ms, outcome, error, response)
SELECT $1, a.event_id, a.webhook_id, now() - a.age_us * interval '1 microsecond', NULLIF(a.status_code, 0),
       a.latency_ms, a.outcome, NULLIF(a.error, ''), NULLIF(a.response, '')
FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::int[], $6::int[], $7::text[], $8::text[], $9::text[])
     WITH ORDINALITY AS a (event_id, webhook_id, age_us, status_code, latency_ms, outcome, error, response, n)
ORDER BY a.n`

// trimAttemptsSQL keeps the newest $2 attempts of $1.
const trimAttemptsSQL = `
DELETE FROM webhook_attempts
WHERE subscription_id = $1 AND id < (
    SELECT id FROM webhook_attempts WHERE subscription_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)`

// statesSQL counts subscriptions by state, for the paused gauge.
const statesSQL = `SELECT state, count(*) FROM webhook_subscriptions GROUP BY state`

// lagSQL is, for each subscription, how many event ids lie between its
// cursor and the feed's head: what it has yet to deliver (or skip).
const lagSQL = `
SELECT s.id, GREATEST(COALESCE((SELECT max(id) FROM delegation_events), 0) - s.cursor_id, 0)
FROM webhook_subscriptions AS s`

// testSubscriptionSQL reads what a test delivery needs.
const testSubscriptionSQL = `
SELECT url, ` + signingSecretsColumns + `
FROM webhook_subscriptions WHERE id = $1`

// insertTestAttemptSQL logs a test delivery (event 0).
const insertTestAttemptSQL = `
INSERT INTO webhook_attempts (subscription_id, event_id, webhook_id, status_code, latency_ms, outcome, error, response)
VALUES ($1, 0, $2, $3, $4, $5, NULLIF($6, ''), NULLIF($7, ''))
RETURNING id, at`

// traceParentsSQL is the trace context each delegation of $1 was inserted
// under (” for none).
const traceParentsSQL = `SELECT delegation_id, COALESCE(traceparent, '') FROM delegations WHERE delegation_id = ANY($1)`
