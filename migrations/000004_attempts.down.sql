-- Back to version 3: one delegation per (caller, idempotency key), one global
-- heartbeat timeout. Where a key has several attempts, the latest keeps the
-- key and the earlier ones (failed or stuck, so frozen) lose it: the guard
-- and the bookkeeping trigger are disabled for that one statement, inside
-- this migration's transaction. No status changes, so no audit event.
ALTER TABLE delegations DISABLE TRIGGER delegations_guard, DISABLE TRIGGER delegations_touch;
UPDATE delegations AS d
SET idempotency_key = NULL
WHERE d.idempotency_key IS NOT NULL
  AND EXISTS (SELECT 1 FROM delegations AS later
              WHERE later.caller_id = d.caller_id AND later.idempotency_key = d.idempotency_key
                AND later.attempt > d.attempt);
ALTER TABLE delegations ENABLE TRIGGER delegations_guard, ENABLE TRIGGER delegations_touch;

DROP INDEX idx_delegations_retry_of;
DROP INDEX idx_delegations_idempotency_attempt;
DROP INDEX idx_delegations_caller_idempotency_key;
CREATE UNIQUE INDEX idx_delegations_caller_idempotency_key
    ON delegations (caller_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

DROP INDEX idx_delegations_inflight_heartbeat_own;
DROP INDEX idx_delegations_inflight_heartbeat;
CREATE INDEX idx_delegations_inflight_heartbeat
    ON delegations (heartbeat_minute)
    WHERE status = 'in_progress';
DROP TRIGGER delegations_touch_insert_expiry ON delegations;
DROP TRIGGER delegations_touch_expiry ON delegations;
DROP FUNCTION sweeper_delegations_heartbeat_expiry();

ALTER TABLE delegations
    DROP CONSTRAINT delegations_retry_of_check,
    DROP CONSTRAINT delegations_attempt_check,
    DROP CONSTRAINT delegations_heartbeat_timeout_check,
    DROP COLUMN retry_of,
    DROP COLUMN attempt,
    DROP COLUMN heartbeat_expires_at,
    DROP COLUMN heartbeat_timeout;
DROP FUNCTION sweeper_heartbeat_expiry(timestamptz, interval);
