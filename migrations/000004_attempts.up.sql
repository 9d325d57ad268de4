-- sweeper schema, version 4: per-delegation heartbeat timeouts, and retries
-- as attempt chains (issue 14). Terminal rows never change, so a retry is a
-- new row: attempt n+1, retry_of the delegation it retries.

ALTER TABLE delegations
    -- NULL: the sweeper's global sweep.heartbeat_timeout.
    ADD COLUMN heartbeat_timeout interval,
    ADD COLUMN attempt integer NOT NULL DEFAULT 1,
    ADD COLUMN retry_of text,
    ADD CONSTRAINT delegations_heartbeat_timeout_check CHECK (
        heartbeat_timeout BETWEEN interval '1 second' AND interval '7 days'),
    ADD CONSTRAINT delegations_attempt_check CHECK (attempt >= 1),
    -- The first attempt retries nothing; every later one names its previous
    -- attempt (no foreign key: retention may delete the older attempts).
    ADD CONSTRAINT delegations_retry_of_check CHECK (
        (retry_of IS NULL) = (attempt = 1)
        AND (retry_of IS NULL
             OR (octet_length(retry_of) BETWEEN 1 AND 255 AND retry_of <> delegation_id)));

-- When a row with its own timeout expires, to within its bin: last_heartbeat
-- rounded down to a bin of LEAST(1 minute, heartbeat_timeout / 2), plus
-- heartbeat_timeout; NULL for rows on the global timeout or without a
-- heartbeat. It is a lower bound of the exact expiry (last_heartbeat +
-- heartbeat_timeout) by less than a bin, so it is the sweep's index
-- condition and the exact rule its filter. Like heartbeat_minute it moves
-- once a bin, so heartbeats within the bin change no indexed column and stay
-- HOT updates; the bin is half the timeout when that is under two minutes,
-- so a live row beating more often than half its timeout is never read by
-- the sweep. The timeout is added as seconds (make_interval), so a day is
-- 24 hours whatever the session's time zone.
--
-- It is a plain column kept by triggers, not a generated one: timestamptz +
-- interval is not immutable, and adding a stored generated column would
-- rewrite the whole table. The triggers call their function only when the
-- value would change (their WHEN clause is the same expression, inlined),
-- and they are named to run after delegations_touch (BEFORE triggers run in
-- name order), which may set last_heartbeat. A writer cannot set the column
-- to anything else: the trigger puts it back.
ALTER TABLE delegations ADD COLUMN heartbeat_expires_at timestamptz;

CREATE FUNCTION sweeper_heartbeat_expiry(last_heartbeat timestamptz, heartbeat_timeout interval)
    RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN heartbeat_timeout IS NOT NULL AND last_heartbeat IS NOT NULL THEN
        date_bin(LEAST(interval '1 minute', heartbeat_timeout / 2), last_heartbeat,
                 TIMESTAMPTZ '2000-01-01 00:00:00+00')
        + make_interval(secs => EXTRACT(EPOCH FROM heartbeat_timeout)::float8)
    END
$$;

CREATE FUNCTION sweeper_delegations_heartbeat_expiry() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.heartbeat_expires_at := sweeper_heartbeat_expiry(NEW.last_heartbeat, NEW.heartbeat_timeout);
    RETURN NEW;
END
$$;

CREATE TRIGGER delegations_touch_expiry
    BEFORE UPDATE ON delegations
    FOR EACH ROW
    WHEN (NEW.heartbeat_expires_at IS DISTINCT FROM
          sweeper_heartbeat_expiry(NEW.last_heartbeat, NEW.heartbeat_timeout))
    EXECUTE FUNCTION sweeper_delegations_heartbeat_expiry();

CREATE TRIGGER delegations_touch_insert_expiry
    BEFORE INSERT ON delegations
    FOR EACH ROW
    WHEN (NEW.heartbeat_expires_at IS DISTINCT FROM
          sweeper_heartbeat_expiry(NEW.last_heartbeat, NEW.heartbeat_timeout))
    EXECUTE FUNCTION sweeper_delegations_heartbeat_expiry();

-- Sweep rule 1 splits in two, each an index condition on its own partial
-- index. Rows on the global timeout (a parameter of the sweep):
DROP INDEX idx_delegations_inflight_heartbeat;
CREATE INDEX idx_delegations_inflight_heartbeat
    ON delegations (heartbeat_minute)
    WHERE status = 'in_progress' AND heartbeat_timeout IS NULL;

-- Rows with their own timeout, by heartbeat_expires_at: "heartbeat_expires_at
-- < now()" is the index condition, "now() - last_heartbeat >
-- heartbeat_timeout" the exact rule.
CREATE INDEX idx_delegations_inflight_heartbeat_own
    ON delegations (heartbeat_expires_at)
    WHERE status = 'in_progress' AND heartbeat_timeout IS NOT NULL;

-- Idempotency across attempts: at most one live or completed attempt per
-- (caller, key); a key whose attempts all failed or got stuck is free for
-- the next attempt. Terminal rows are frozen, so a failed or stuck row never
-- comes back into this index.
DROP INDEX idx_delegations_caller_idempotency_key;
CREATE UNIQUE INDEX idx_delegations_caller_idempotency_key
    ON delegations (caller_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL AND status NOT IN ('failed', 'stuck');

-- A key's attempts, latest first (one row per attempt number): how an insert
-- finds the attempt it continues.
CREATE UNIQUE INDEX idx_delegations_idempotency_attempt
    ON delegations (caller_id, idempotency_key, attempt DESC)
    WHERE idempotency_key IS NOT NULL;

-- One next attempt per delegation: of concurrent retries, one inserts and
-- the others meet this index.
CREATE UNIQUE INDEX idx_delegations_retry_of
    ON delegations (retry_of)
    WHERE retry_of IS NOT NULL;
