-- sweeper schema, version 1: the delegation ledger, its audit log, and the
-- database-level guards that every writer (Go, psql, another service) goes
-- through. The lifecycle is documented in ledger/status.go; the rank function
-- below is its SQL twin and TestGuardMatchesTransitionTable keeps them equal.

CREATE TABLE delegations (
    delegation_id   text        NOT NULL,
    caller_id       text        NOT NULL,
    callee_id       text        NOT NULL,
    task_preview    text        NOT NULL DEFAULT '',
    result_preview  text,
    error_detail    text,
    status          text        NOT NULL DEFAULT 'queued',
    idempotency_key text,
    last_heartbeat  timestamptz,
    -- last_heartbeat rounded down to the minute: what the heartbeat rule's
    -- index holds. A heartbeat changes it at most once a minute, so the other
    -- heartbeats change no indexed column and are HOT updates (no new index
    -- entries); fillfactor leaves room on each page for the new row versions.
    heartbeat_minute timestamptz GENERATED ALWAYS AS (
        date_bin('1 minute', last_heartbeat, TIMESTAMPTZ '2000-01-01 00:00:00+00')) STORED,
    deadline        timestamptz NOT NULL DEFAULT now() + interval '6 hours',
    stuck_reason    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT delegations_pkey PRIMARY KEY (delegation_id),
    CONSTRAINT delegations_status_check CHECK (
        status IN ('queued', 'dispatched', 'in_progress', 'completed', 'failed', 'stuck')),
    CONSTRAINT delegations_delegation_id_check CHECK (
        octet_length(delegation_id) BETWEEN 1 AND 255 AND btrim(delegation_id) <> ''),
    CONSTRAINT delegations_caller_id_check CHECK (
        octet_length(caller_id) BETWEEN 1 AND 255 AND btrim(caller_id) <> ''),
    CONSTRAINT delegations_callee_id_check CHECK (
        octet_length(callee_id) BETWEEN 1 AND 255 AND btrim(callee_id) <> ''),
    CONSTRAINT delegations_idempotency_key_check CHECK (
        idempotency_key IS NULL
        OR (octet_length(idempotency_key) BETWEEN 1 AND 255 AND btrim(idempotency_key) <> '')),
    CONSTRAINT delegations_task_preview_check CHECK (char_length(task_preview) <= 2000),
    CONSTRAINT delegations_result_preview_check CHECK (char_length(result_preview) <= 2000),
    CONSTRAINT delegations_error_detail_check CHECK (char_length(error_detail) <= 8000),
    CONSTRAINT delegations_stuck_reason_check CHECK (
        stuck_reason IS NULL
        OR (status = 'stuck' AND stuck_reason IN ('heartbeat_timeout', 'deadline_exceeded'))),
    -- An in_progress row always has a heartbeat (entering in_progress sets it),
    -- so the heartbeat rule can be an index condition on last_heartbeat alone.
    CONSTRAINT delegations_in_progress_heartbeat_check CHECK (
        status <> 'in_progress' OR last_heartbeat IS NOT NULL)
) WITH (fillfactor = 90);

-- Sweep rule 1: in_progress rows by heartbeat age. Only in-flight rows are
-- indexed, so its size follows the work in flight, not the ledger's history.
-- It holds heartbeat_minute, not last_heartbeat: heartbeat_minute <=
-- last_heartbeat, so "heartbeat_minute < now() - timeout" is the index
-- condition of the rule and "last_heartbeat < now() - timeout" its exact
-- filter, which only rows within a minute of the boundary fail.
CREATE INDEX idx_delegations_inflight_heartbeat
    ON delegations (heartbeat_minute)
    WHERE status = 'in_progress';

-- Sweep rule 2: any non-terminal row by deadline.
CREATE INDEX idx_delegations_inflight_deadline
    ON delegations (deadline)
    WHERE status IN ('queued', 'dispatched', 'in_progress');

-- Idempotent inserts: one delegation per (caller, key).
CREATE UNIQUE INDEX idx_delegations_caller_idempotency_key
    ON delegations (caller_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Dashboards: newest first by caller, by callee, by status (keyset pagination).
CREATE INDEX idx_delegations_caller
    ON delegations (caller_id, created_at DESC, delegation_id DESC);
CREATE INDEX idx_delegations_callee
    ON delegations (callee_id, created_at DESC, delegation_id DESC);
CREATE INDEX idx_delegations_status
    ON delegations (status, created_at DESC, delegation_id DESC);

CREATE TABLE delegation_events (
    id            bigint      GENERATED ALWAYS AS IDENTITY,
    delegation_id text        NOT NULL,
    from_status   text,
    to_status     text        NOT NULL,
    reason        text,
    actor         text        NOT NULL,
    at            timestamptz NOT NULL DEFAULT now(),
    detail        jsonb,

    CONSTRAINT delegation_events_pkey PRIMARY KEY (id)
);

CREATE INDEX idx_delegation_events_delegation
    ON delegation_events (delegation_id, id);

-- The lifecycle's ranks: queued 0, dispatched 1, in_progress 2, terminal 3
-- (NULL for NULL or an unknown status). Not STRICT: PostgreSQL inlines a SQL
-- function only when that cannot change its result, and a STRICT function
-- whose body is a CASE is never inlined, so the guard's WHEN clause would
-- call it, at several microseconds a call, for every updated row.
CREATE FUNCTION sweeper_status_rank(status text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE status
        WHEN 'queued' THEN 0
        WHEN 'dispatched' THEN 1
        WHEN 'in_progress' THEN 2
        WHEN 'completed' THEN 3
        WHEN 'failed' THEN 3
        WHEN 'stuck' THEN 3
    END
$$;

-- Forward-only guard. Terminal rows are frozen: any UPDATE of one is refused.
-- A status may only move to a higher rank. An operator who must repair a row
-- disables this trigger explicitly (owner only), see docs/operations.md:
--   ALTER TABLE delegations DISABLE TRIGGER delegations_guard;
CREATE FUNCTION sweeper_delegations_guard() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF sweeper_status_rank(OLD.status) = 3 THEN
        RAISE EXCEPTION 'delegation %: status % is terminal, the row is frozen (refused update to %)',
            OLD.delegation_id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'delegations_terminal_frozen',
                  TABLE = 'delegations';
    END IF;
    IF sweeper_status_rank(NEW.status) <= sweeper_status_rank(OLD.status) THEN
        RAISE EXCEPTION 'delegation %: status may only move forward, refused % -> %',
            OLD.delegation_id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'delegations_forward_only',
                  TABLE = 'delegations';
    END IF;
    RETURN NEW;
END
$$;

-- The WHEN clause is the rule itself (the function only raises), so a legal
-- update, a heartbeat or a forward move, calls no function at all. A NULL or
-- unknown status is left to the NOT NULL and CHECK constraints.
CREATE TRIGGER delegations_guard
    BEFORE UPDATE ON delegations
    FOR EACH ROW
    WHEN (sweeper_status_rank(OLD.status) = 3
          OR sweeper_status_rank(NEW.status) < sweeper_status_rank(OLD.status))
    EXECUTE FUNCTION sweeper_delegations_guard();

-- Bookkeeping every writer gets: updated_at, and entering in_progress counts
-- as a heartbeat (unless the writer sets last_heartbeat itself), so a row
-- that was heartbeated while queued or dispatched does not enter in_progress
-- already stale.
CREATE FUNCTION sweeper_delegations_touch() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    IF NEW.status = 'in_progress' AND (
        NEW.last_heartbeat IS NULL
        OR (TG_OP = 'UPDATE' AND OLD.status <> 'in_progress'
            AND NEW.last_heartbeat IS NOT DISTINCT FROM OLD.last_heartbeat)) THEN
        NEW.last_heartbeat := now();
    END IF;
    RETURN NEW;
END
$$;

-- The WHEN clauses call the function only when it would change the row: a
-- writer that sets updated_at = now() itself (the ledger and the sweep do)
-- skips a PL/pgSQL call per row, which measured as the largest cost of a
-- heartbeat or a sweep batch after the row change itself.
CREATE TRIGGER delegations_touch
    BEFORE UPDATE ON delegations
    FOR EACH ROW
    WHEN (NEW.updated_at IS DISTINCT FROM now()
          OR (NEW.status = 'in_progress'
              AND (NEW.last_heartbeat IS NULL
                   OR (OLD.status <> 'in_progress'
                       AND NEW.last_heartbeat IS NOT DISTINCT FROM OLD.last_heartbeat))))
    EXECUTE FUNCTION sweeper_delegations_touch();

CREATE TRIGGER delegations_touch_insert
    BEFORE INSERT ON delegations
    FOR EACH ROW
    WHEN (NEW.status = 'in_progress' AND NEW.last_heartbeat IS NULL)
    EXECUTE FUNCTION sweeper_delegations_touch();

-- The audit log: exactly one event per status change, whoever made it.
-- Writers name themselves and their reason with transaction-local settings:
--   SELECT set_config('sweeper.actor', 'billing-api', true),
--          set_config('sweeper.reason', 'customer cancelled', true);
-- Without them the actor is the database role and the reason the stuck_reason.
CREATE FUNCTION sweeper_delegations_audit() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail)
    VALUES (
        NEW.delegation_id,
        CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
        NEW.status,
        COALESCE(NULLIF(current_setting('sweeper.reason', true), ''), NEW.stuck_reason),
        COALESCE(NULLIF(current_setting('sweeper.actor', true), ''), 'db:' || current_user),
        NULLIF(current_setting('sweeper.detail', true), '')::jsonb
    );
    RETURN NULL;
END
$$;

CREATE TRIGGER delegations_audit_insert
    AFTER INSERT ON delegations
    FOR EACH ROW
    EXECUTE FUNCTION sweeper_delegations_audit();

CREATE TRIGGER delegations_audit_update
    AFTER UPDATE OF status ON delegations
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION sweeper_delegations_audit();

-- The audit log is append-only.
CREATE FUNCTION sweeper_delegation_events_append_only() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'delegation_events is append-only (refused %)', TG_OP
        USING ERRCODE = 'check_violation', CONSTRAINT = 'delegation_events_append_only',
              TABLE = 'delegation_events';
END
$$;

CREATE TRIGGER delegation_events_append_only
    BEFORE UPDATE OR DELETE ON delegation_events
    FOR EACH ROW
    EXECUTE FUNCTION sweeper_delegation_events_append_only();
