-- Back to version 7: no retry policy, no claims. Attempts the policy
-- inserted stay: they are ordinary later attempts (retry_of, attempt n+1) to
-- version 7. The after-statement function is version 7's again.
CREATE OR REPLACE FUNCTION sweeper_delegations_after() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    actor  text;
    reason text;
    detail jsonb;
BEGIN
    -- 1. Which rows changed status? None: nothing to record.
    IF TG_OP = 'UPDATE' THEN
        IF ARRAY(SELECT o.status FROM old_rows AS o) = ARRAY(SELECT n.status FROM new_rows AS n) THEN
            RETURN NULL;
        END IF;
    ELSIF NOT EXISTS (SELECT FROM new_rows) THEN
        RETURN NULL; -- an INSERT ... ON CONFLICT DO NOTHING that inserted nothing
    END IF;

    -- 2. Who changed them, and why (read once per statement).
    actor := COALESCE(NULLIF(current_setting('sweeper.actor', true), ''), 'db:' || current_user);
    reason := NULLIF(current_setting('sweeper.reason', true), '');
    detail := NULLIF(current_setting('sweeper.detail', true), '')::jsonb;

    -- 3. The audit events, one per status change, in the statement's row
    --    order; a stuck one with the row's progress (sweeper_stuck_detail).
    --    Then one notification for the feed's long polls, at commit (version
    --    6 dropped the delegation_events_notify trigger: the audit sends it).
    IF TG_OP = 'INSERT' THEN
        INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail,
                                       caller_id, callee_id)
        SELECT n.delegation_id, NULL, n.status, COALESCE(reason, n.stuck_reason), actor,
               CASE WHEN n.status = 'stuck'
                    THEN sweeper_stuck_detail(detail, n.progress, n.progress_at, n.last_heartbeat)
                    ELSE detail END,
               n.caller_id, n.callee_id
        FROM new_rows AS n;
    ELSE
        INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail,
                                       caller_id, callee_id)
        SELECT c.delegation_id, c.from_status, c.to_status, COALESCE(reason, c.stuck_reason), actor,
               CASE WHEN c.to_status = 'stuck'
                    THEN sweeper_stuck_detail(detail, c.progress, c.progress_at, c.last_heartbeat)
                    ELSE detail END,
               c.caller_id, c.callee_id
        FROM unnest(ARRAY(SELECT o.status FROM old_rows AS o),
                    ARRAY(SELECT n.delegation_id FROM new_rows AS n),
                    ARRAY(SELECT n.status FROM new_rows AS n),
                    ARRAY(SELECT n.stuck_reason FROM new_rows AS n),
                    ARRAY(SELECT n.caller_id FROM new_rows AS n),
                    ARRAY(SELECT n.callee_id FROM new_rows AS n),
                    ARRAY(SELECT n.progress FROM new_rows AS n),
                    ARRAY(SELECT n.progress_at FROM new_rows AS n),
                    ARRAY(SELECT n.last_heartbeat FROM new_rows AS n))
             AS c(from_status, delegation_id, to_status, stuck_reason, caller_id, callee_id,
                  progress, progress_at, last_heartbeat)
        WHERE c.to_status IS DISTINCT FROM c.from_status;
    END IF;
    -- Step 1 returned when no status changed: events were appended.
    PERFORM pg_notify('sweeper_events', '');
    RETURN NULL;
END
$$;

DROP FUNCTION sweeper_insert_retries(text[]);
DROP FUNCTION sweeper_retry_due(text, integer, interval, interval);
DROP FUNCTION sweeper_retry_id(text, integer);
DROP FUNCTION sweeper_next_attempt_id(text, integer);
DROP INDEX idx_delegations_retries;
DROP INDEX idx_delegations_exhausted_finished;
DROP INDEX idx_delegations_exhausted;
DROP INDEX idx_delegations_queued_callee;
ALTER TABLE delegations
    DROP CONSTRAINT delegations_retry_on_check,
    DROP CONSTRAINT delegations_retry_backoff_check,
    DROP CONSTRAINT delegations_max_attempts_check,
    DROP COLUMN retry_on,
    DROP COLUMN retry_backoff_max,
    DROP COLUMN retry_backoff,
    DROP COLUMN max_attempts;
