-- Back to version 6: no progress, no stall or waiting rules.
-- Rows marked stuck by the new rules keep their status; their stuck_reason
-- becomes one that version knows (stalled: heartbeat_timeout, the worker
-- stopped working; queue_timeout and start_timeout: deadline_exceeded, the
-- row waited too long), with the BEFORE UPDATE trigger (the guard and the
-- bookkeeping) off for that one statement, inside this migration's
-- transaction. Their events keep the reason they were written with (the log
-- is append-only).
ALTER TABLE delegations DISABLE TRIGGER delegations_before_update;
UPDATE delegations
SET stuck_reason = CASE stuck_reason WHEN 'stalled' THEN 'heartbeat_timeout' ELSE 'deadline_exceeded' END
WHERE stuck_reason IN ('stalled', 'queue_timeout', 'start_timeout');
ALTER TABLE delegations ENABLE TRIGGER delegations_before_update;

-- Version 6's functions and triggers, as migration 000006 wrote them.
CREATE OR REPLACE FUNCTION sweeper_delegations_before() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- 1. The lifecycle (ledger/status.go). A terminal row is frozen: any
    --    UPDATE of it is refused. A status moves only to a higher rank. An
    --    unknown status has no rank and is left to the CHECK constraint. An
    --    operator who must repair a row disables this trigger explicitly
    --    (owner only, docs/operations.md).
    IF TG_OP = 'UPDATE' THEN
        IF sweeper_status_rank(OLD.status) = 3 THEN
            RAISE EXCEPTION 'delegation %: status % is terminal, the row is frozen (refused update to %)',
                OLD.delegation_id, OLD.status, NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'delegations_terminal_frozen',
                      TABLE = 'delegations';
        END IF;
        IF sweeper_status_rank(NEW.status) < sweeper_status_rank(OLD.status) THEN
            RAISE EXCEPTION 'delegation %: status may only move forward, refused % -> %',
                OLD.delegation_id, OLD.status, NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'delegations_forward_only',
                      TABLE = 'delegations';
        END IF;
    END IF;

    -- 2. Bookkeeping. Every UPDATE sets updated_at; a row inserted terminal
    --    gets updated_at = now() too. finished_at, a generated column, is
    --    updated_at once the row is terminal: the moment it became terminal.
    IF TG_OP = 'UPDATE' OR sweeper_status_rank(NEW.status) = 3 THEN
        NEW.updated_at := now();
    END IF;

    -- 3. Entering in_progress is a heartbeat (unless the writer sets
    --    last_heartbeat itself), so a row heartbeated while queued does not
    --    enter in_progress already stale; an in_progress row never loses its
    --    heartbeat.
    IF NEW.status = 'in_progress' AND (
        NEW.last_heartbeat IS NULL
        OR (TG_OP = 'UPDATE' AND OLD.status <> 'in_progress'
            AND NEW.last_heartbeat IS NOT DISTINCT FROM OLD.last_heartbeat)) THEN
        NEW.last_heartbeat := now();
    END IF;

    -- 4. The heartbeat expiry bin of a row with its own timeout (version 4):
    --    moves once a bin, so heartbeats within a bin stay HOT updates.
    NEW.heartbeat_expires_at := sweeper_heartbeat_expiry(NEW.last_heartbeat, NEW.heartbeat_timeout);

    RETURN NEW;
END
$$;

DROP TRIGGER delegations_before_update ON delegations;
DROP TRIGGER delegations_before_insert ON delegations;
CREATE TRIGGER delegations_before_update
    BEFORE UPDATE ON delegations
    FOR EACH ROW
    WHEN (sweeper_status_rank(OLD.status) = 3
          OR sweeper_status_rank(NEW.status) < sweeper_status_rank(OLD.status)
          OR NEW.updated_at IS DISTINCT FROM now()
          OR (NEW.status = 'in_progress'
              AND (NEW.last_heartbeat IS NULL
                   OR (OLD.status <> 'in_progress'
                       AND NEW.last_heartbeat IS NOT DISTINCT FROM OLD.last_heartbeat)))
          OR NEW.heartbeat_expires_at IS DISTINCT FROM
             sweeper_heartbeat_expiry(NEW.last_heartbeat, NEW.heartbeat_timeout))
    EXECUTE FUNCTION sweeper_delegations_before();

CREATE TRIGGER delegations_before_insert
    BEFORE INSERT ON delegations
    FOR EACH ROW
    WHEN ((NEW.status = 'in_progress' AND NEW.last_heartbeat IS NULL)
          OR (sweeper_status_rank(NEW.status) = 3 AND NEW.updated_at IS DISTINCT FROM now())
          OR NEW.heartbeat_expires_at IS DISTINCT FROM
             sweeper_heartbeat_expiry(NEW.last_heartbeat, NEW.heartbeat_timeout))
    EXECUTE FUNCTION sweeper_delegations_before();

CREATE OR REPLACE FUNCTION sweeper_delegations_after() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    appended bigint;
BEGIN
    -- 1. The rows whose status changed, with who changed them and why (the
    --    settings are read once per statement), appended as audit events in
    --    the statement's row order.
    IF TG_OP = 'INSERT' THEN
        WITH writer AS (
            SELECT COALESCE(NULLIF(current_setting('sweeper.actor', true), ''), 'db:' || current_user) AS actor,
                   NULLIF(current_setting('sweeper.reason', true), '') AS reason,
                   NULLIF(current_setting('sweeper.detail', true), '')::jsonb AS detail
        ), events AS (
            INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail,
                                           caller_id, callee_id)
            SELECT n.delegation_id, NULL, n.status, COALESCE(w.reason, n.stuck_reason), w.actor, w.detail,
                   n.caller_id, n.callee_id
            FROM new_rows AS n CROSS JOIN writer AS w
            RETURNING 1
        )
        SELECT count(*) INTO appended FROM events;
    ELSE
        WITH changed AS (
            SELECT *
            FROM unnest(ARRAY(SELECT o.status FROM old_rows AS o),
                        ARRAY(SELECT n.delegation_id FROM new_rows AS n),
                        ARRAY(SELECT n.status FROM new_rows AS n),
                        ARRAY(SELECT n.stuck_reason FROM new_rows AS n),
                        ARRAY(SELECT n.caller_id FROM new_rows AS n),
                        ARRAY(SELECT n.callee_id FROM new_rows AS n))
                 AS c(from_status, delegation_id, to_status, stuck_reason, caller_id, callee_id)
            WHERE c.to_status IS DISTINCT FROM c.from_status
        ), writer AS (
            SELECT COALESCE(NULLIF(current_setting('sweeper.actor', true), ''), 'db:' || current_user) AS actor,
                   NULLIF(current_setting('sweeper.reason', true), '') AS reason,
                   NULLIF(current_setting('sweeper.detail', true), '')::jsonb AS detail
            WHERE EXISTS (SELECT FROM changed)
        ), events AS (
            INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail,
                                           caller_id, callee_id)
            SELECT c.delegation_id, c.from_status, c.to_status, COALESCE(w.reason, c.stuck_reason), w.actor, w.detail,
                   c.caller_id, c.callee_id
            FROM changed AS c CROSS JOIN writer AS w
            RETURNING 1
        )
        SELECT count(*) INTO appended FROM events;
    END IF;

    -- 2. One notification for the feed's long polls, at commit.
    IF appended > 0 THEN
        PERFORM pg_notify('sweeper_events', '');
    END IF;
    RETURN NULL;
END
$$;

DROP INDEX idx_delegations_dispatched_own;
DROP INDEX idx_delegations_dispatched;
DROP INDEX idx_delegations_queued_own;
DROP INDEX idx_delegations_queued;
DROP INDEX idx_delegations_inflight_progress_own;
DROP INDEX idx_delegations_inflight_progress;
DROP FUNCTION sweeper_stuck_detail(jsonb, jsonb, timestamptz, timestamptz);
DROP FUNCTION sweeper_wait_expiry(timestamptz, interval);

ALTER TABLE delegations DROP CONSTRAINT delegations_stuck_reason_check;
ALTER TABLE delegations ADD CONSTRAINT delegations_stuck_reason_check CHECK (
    stuck_reason IS NULL
    OR (status = 'stuck' AND stuck_reason IN ('heartbeat_timeout', 'deadline_exceeded')));

ALTER TABLE delegations
    DROP CONSTRAINT delegations_start_timeout_check,
    DROP CONSTRAINT delegations_queue_timeout_check,
    DROP CONSTRAINT delegations_progress_timeout_check,
    DROP CONSTRAINT delegations_progress_check,
    DROP COLUMN start_expires_at,
    DROP COLUMN queue_expires_at,
    DROP COLUMN progress_expires_at,
    DROP COLUMN progress_minute,
    DROP COLUMN dispatched_at,
    DROP COLUMN not_before,
    DROP COLUMN start_timeout,
    DROP COLUMN queue_timeout,
    DROP COLUMN progress_timeout,
    DROP COLUMN progress_at,
    DROP COLUMN progress;
