-- Back to the version before 7: no progress, no stall or waiting rules.
-- Rows marked stuck by the new rules keep their status; their stuck_reason
-- becomes one that version knows (stalled: heartbeat_timeout, the worker
-- stopped working; queue_timeout and start_timeout: deadline_exceeded, the
-- row waited too long), with the guard and the bookkeeping off for that one
-- statement, inside this migration's transaction. Their events keep the
-- reason they were written with (the log is append-only).
ALTER TABLE delegations DISABLE TRIGGER delegations_guard, DISABLE TRIGGER delegations_touch;
UPDATE delegations
SET stuck_reason = CASE stuck_reason WHEN 'stalled' THEN 'heartbeat_timeout' ELSE 'deadline_exceeded' END
WHERE stuck_reason IN ('stalled', 'queue_timeout', 'start_timeout');
ALTER TABLE delegations ENABLE TRIGGER delegations_guard, ENABLE TRIGGER delegations_touch;

-- The audit trigger of version 2.
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

DROP INDEX idx_delegations_dispatched_own;
DROP INDEX idx_delegations_dispatched;
DROP INDEX idx_delegations_queued_own;
DROP INDEX idx_delegations_queued;
DROP INDEX idx_delegations_inflight_progress_own;
DROP INDEX idx_delegations_inflight_progress;
DROP TRIGGER delegations_touch_insert_progress ON delegations;
DROP TRIGGER delegations_touch_progress ON delegations;
DROP FUNCTION sweeper_delegations_progress();
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
