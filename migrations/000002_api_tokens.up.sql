-- sweeper schema, version 2: the ledger over HTTP.
--   * api_tokens: bearer tokens of the HTTP API, stored as SHA-256 hashes.
--   * delegation_events gains caller_id and callee_id (copied by the audit
--     trigger), so the durable feed filtered by caller or callee is an index
--     range on (caller_id, id) or (callee_id, id), not a join over history.
--   * delegation_events gains tx_id, the writing transaction's id: ids are
--     drawn before commit, so a transaction that commits late can add an id
--     below one a consumer has already read. The feed reads in (tx_id, id)
--     order and only transactions older than every running one
--     (pg_snapshot_xmin), which never gain another event: nothing is missed.
--   * one notification per statement that appends events, on channel
--     sweeper_events: the feed's long poll wakes on it.
--   * a partial index of in-flight rows by caller, for the summary and the
--     in-flight list (status and caller_id never change on a heartbeat, so
--     heartbeats stay HOT updates).

CREATE TABLE api_tokens (
    name       text        NOT NULL,
    role       text        NOT NULL,
    principal  text        NOT NULL DEFAULT '',
    hash       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,

    CONSTRAINT api_tokens_pkey PRIMARY KEY (name),
    CONSTRAINT api_tokens_hash_key UNIQUE (hash),
    CONSTRAINT api_tokens_name_check CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    CONSTRAINT api_tokens_role_check CHECK (role IN ('caller', 'worker', 'reader', 'admin')),
    -- caller and worker tokens act for one caller_id or callee_id.
    CONSTRAINT api_tokens_principal_check CHECK (
        octet_length(principal) <= 255
        AND (role IN ('reader', 'admin') OR btrim(principal) <> '')),
    CONSTRAINT api_tokens_hash_check CHECK (octet_length(hash) = 32)
);

ALTER TABLE delegation_events
    ADD COLUMN caller_id text,
    ADD COLUMN callee_id text,
    ADD COLUMN tx_id xid8 NOT NULL DEFAULT pg_current_xact_id();

-- Backfill the events written before this version. The audit log is
-- append-only; this is its one sanctioned rewrite, inside the migration's
-- transaction.
ALTER TABLE delegation_events DISABLE TRIGGER delegation_events_append_only;
UPDATE delegation_events AS e
SET caller_id = d.caller_id, callee_id = d.callee_id
FROM delegations AS d
WHERE d.delegation_id = e.delegation_id;
ALTER TABLE delegation_events ENABLE TRIGGER delegation_events_append_only;

-- The feed: events after a cursor, in id order, optionally for one caller,
-- one callee or one target status.
CREATE INDEX idx_delegation_events_feed ON delegation_events (tx_id, id);
CREATE INDEX idx_delegation_events_caller ON delegation_events (caller_id, tx_id, id);
CREATE INDEX idx_delegation_events_callee ON delegation_events (callee_id, tx_id, id);
CREATE INDEX idx_delegation_events_to_status ON delegation_events (to_status, tx_id, id);

-- In-flight rows by caller, newest first: the summary and the in-flight list.
CREATE INDEX idx_delegations_inflight_caller
    ON delegations (caller_id, created_at DESC, delegation_id DESC)
    WHERE status IN ('queued', 'dispatched', 'in_progress');

-- The audit trigger of version 1, now also recording caller_id and callee_id.
CREATE OR REPLACE FUNCTION sweeper_delegations_audit() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail,
                                   caller_id, callee_id)
    VALUES (
        NEW.delegation_id,
        CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
        NEW.status,
        COALESCE(NULLIF(current_setting('sweeper.reason', true), ''), NEW.stuck_reason),
        COALESCE(NULLIF(current_setting('sweeper.actor', true), ''), 'db:' || current_user),
        NULLIF(current_setting('sweeper.detail', true), '')::jsonb,
        NEW.caller_id,
        NEW.callee_id
    );
    RETURN NULL;
END
$$;

-- One notification per statement that appended events (a sweep batch of a
-- thousand rows sends one), delivered when the transaction commits. The
-- payload is empty: listeners read the feed from their own cursor.
CREATE FUNCTION sweeper_delegation_events_notify() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('sweeper_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER delegation_events_notify
    AFTER INSERT ON delegation_events
    FOR EACH STATEMENT
    EXECUTE FUNCTION sweeper_delegation_events_notify();
