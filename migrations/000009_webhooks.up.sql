-- sweeper schema, version 9: webhook subscriptions and their delivery log
-- (issue 22), and the W3C traceparent of the request that inserted a
-- delegation.
--
-- A subscription is a consumer of the durable feed (delegation_events in
-- (tx_id, id) order) with its own persisted cursor: cursor_id is the last
-- event it has delivered (or skipped as not matching), cursor_tx that
-- event's transaction, kept so the cursor stays usable after the retention
-- prune has deleted the event itself. The cursor moves only after a 2xx.
--
-- One replica delivers a subscription at a time: lease_owner holds it until
-- lease_expires_at (database clock); the owner renews it, another replica
-- takes it once it has expired. No leader.
--
-- The secret signs deliveries (HMAC-SHA256), so it is kept as such, not
-- hashed: protect the database as you protect the DSN. After a rotation,
-- previous_secret also signs until previous_secret_expires_at.
CREATE TABLE webhook_subscriptions (
    id                         text        PRIMARY KEY,
    url                        text        NOT NULL,
    events                     text[]      NOT NULL DEFAULT '{}',
    caller_id                  text        NULL,
    callee_id                  text        NULL,
    secret                     text        NOT NULL,
    previous_secret            text        NULL,
    previous_secret_expires_at timestamptz NULL,
    state                      text        NOT NULL DEFAULT 'active',
    state_reason               text        NULL,
    cursor_id                  bigint      NOT NULL DEFAULT 0,
    cursor_tx                  text        NOT NULL DEFAULT '0',
    failed_attempts            integer     NOT NULL DEFAULT 0,
    failing_since              timestamptz NULL,
    next_attempt_at            timestamptz NULL,
    last_delivery_at           timestamptz NULL,
    lease_owner                text        NULL,
    lease_expires_at           timestamptz NULL,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_subscriptions_id_check CHECK (id ~ '^wh_[0-9a-f]{24}$'),
    CONSTRAINT webhook_subscriptions_url_check CHECK (
        char_length(url) BETWEEN 10 AND 2048 AND url ~ '^https?://'),
    CONSTRAINT webhook_subscriptions_events_check CHECK (
        cardinality(events) <= 6
        AND events <@ ARRAY['queued', 'dispatched', 'in_progress', 'completed', 'failed', 'stuck']),
    CONSTRAINT webhook_subscriptions_caller_id_check CHECK (
        caller_id IS NULL OR octet_length(caller_id) BETWEEN 1 AND 255),
    CONSTRAINT webhook_subscriptions_callee_id_check CHECK (
        callee_id IS NULL OR octet_length(callee_id) BETWEEN 1 AND 255),
    CONSTRAINT webhook_subscriptions_secret_check CHECK (secret ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$'),
    CONSTRAINT webhook_subscriptions_previous_secret_check CHECK (
        (previous_secret IS NULL) = (previous_secret_expires_at IS NULL)
        AND (previous_secret IS NULL OR previous_secret ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$')),
    CONSTRAINT webhook_subscriptions_state_check CHECK (state IN ('active', 'paused', 'disabled')),
    CONSTRAINT webhook_subscriptions_state_reason_check CHECK (char_length(state_reason) <= 1024),
    CONSTRAINT webhook_subscriptions_cursor_check CHECK (cursor_id >= 0 AND cursor_tx ~ '^[0-9]{1,20}$'),
    CONSTRAINT webhook_subscriptions_failed_attempts_check CHECK (failed_attempts >= 0),
    CONSTRAINT webhook_subscriptions_lease_check CHECK (
        (lease_owner IS NULL) = (lease_expires_at IS NULL)
        AND (lease_owner IS NULL OR char_length(lease_owner) BETWEEN 1 AND 200))
);

-- Every attempt to deliver an event: what the console shows (the last 50
-- of a subscription, newest first, from this index). At most 1 KiB of the
-- response body and of the error is kept. Rows leave with their
-- subscription; the delivering replica trims each subscription's log to its
-- newest 1000 rows.
CREATE TABLE webhook_attempts (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id text        NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event_id        bigint      NOT NULL,
    webhook_id      text        NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    status_code     integer     NULL,
    latency_ms      integer     NOT NULL,
    outcome         text        NOT NULL,
    error           text        NULL,
    response        text        NULL,
    CONSTRAINT webhook_attempts_status_code_check CHECK (status_code BETWEEN 100 AND 599),
    CONSTRAINT webhook_attempts_latency_check CHECK (latency_ms >= 0),
    CONSTRAINT webhook_attempts_outcome_check CHECK (outcome IN ('delivered', 'failed', 'gone', 'refused')),
    CONSTRAINT webhook_attempts_error_check CHECK (octet_length(error) <= 1024),
    CONSTRAINT webhook_attempts_response_check CHECK (octet_length(response) <= 1024)
);
CREATE INDEX idx_webhook_attempts_subscription ON webhook_attempts (subscription_id, id);

-- The W3C trace context of the request that inserted the delegation
-- (version-traceid-parentid-flags, lower-case hex), so that what happens to
-- it later (stuck, delivered) is linked to the caller's trace. The column
-- is NULL on every existing row, so the CHECK is added NOT VALID: it holds
-- for every write from now on, without a scan of the whole table under
-- this migration's lock.
ALTER TABLE delegations
    ADD COLUMN traceparent text NULL,
    ADD CONSTRAINT delegations_traceparent_check CHECK (
        traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
        AND traceparent !~ '^ff-' AND traceparent !~ '^[0-9a-f]{2}-0{32}-' AND traceparent !~ '-0{16}-[0-9a-f]{2}$'
    ) NOT VALID;
