-- Back to version 7: no retry policy, no claims. Attempts the policy
-- inserted stay: they are ordinary later attempts (retry_of, attempt n+1) to
-- version 7. The audit function is version 7's again.
CREATE OR REPLACE FUNCTION sweeper_delegations_audit() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    detail jsonb := NULLIF(current_setting('sweeper.detail', true), '')::jsonb;
BEGIN
    IF NEW.status = 'stuck' THEN
        detail := COALESCE(detail, '{}'::jsonb)
            || CASE WHEN NEW.progress IS NOT NULL
                    THEN jsonb_build_object('progress', NEW.progress) ELSE '{}' END
            || CASE WHEN NEW.progress_at IS NOT NULL
                    THEN jsonb_build_object('progress_age_seconds',
                                            round(EXTRACT(EPOCH FROM now() - NEW.progress_at), 3)) ELSE '{}' END
            || CASE WHEN NEW.last_heartbeat IS NOT NULL
                    THEN jsonb_build_object('heartbeat_age_seconds',
                                            round(EXTRACT(EPOCH FROM now() - NEW.last_heartbeat), 3)) ELSE '{}' END;
    END IF;
    INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail,
                                   caller_id, callee_id)
    VALUES (
        NEW.delegation_id,
        CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
        NEW.status,
        COALESCE(NULLIF(current_setting('sweeper.reason', true), ''), NEW.stuck_reason),
        COALESCE(NULLIF(current_setting('sweeper.actor', true), ''), 'db:' || current_user),
        detail,
        NEW.caller_id,
        NEW.callee_id
    );
    RETURN NULL;
END
$$;

DROP TRIGGER delegations_retry ON delegations;
DROP FUNCTION sweeper_delegations_retry();
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
