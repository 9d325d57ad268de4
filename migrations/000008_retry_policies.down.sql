-- Back to version 5: no retry policy, no claims. Attempts the policy
-- inserted stay: they are ordinary later attempts (retry_of, attempt n+1) to
-- version 5. The audit function is version 2's again.
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

DROP FUNCTION sweeper_schedule_retry(delegations);
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
    DROP COLUMN max_attempts,
    DROP COLUMN not_before;
