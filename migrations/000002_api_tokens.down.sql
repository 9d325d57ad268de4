DROP TRIGGER IF EXISTS delegation_events_notify ON delegation_events;
DROP FUNCTION IF EXISTS sweeper_delegation_events_notify();

-- The audit trigger of version 1.
CREATE OR REPLACE FUNCTION sweeper_delegations_audit() RETURNS trigger
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

DROP INDEX IF EXISTS idx_delegations_inflight_caller;
DROP INDEX IF EXISTS idx_delegation_events_to_status;
DROP INDEX IF EXISTS idx_delegation_events_callee;
DROP INDEX IF EXISTS idx_delegation_events_caller;
DROP INDEX IF EXISTS idx_delegation_events_feed;
ALTER TABLE delegation_events DROP COLUMN IF EXISTS tx_id, DROP COLUMN IF EXISTS callee_id, DROP COLUMN IF EXISTS caller_id;
DROP TABLE IF EXISTS api_tokens;
