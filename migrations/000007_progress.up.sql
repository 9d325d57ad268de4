-- sweeper schema, version 7: progress, stalls and the waiting states (issue
-- 20). "Dead" is no heartbeat (version 1's rule); "stalled" is heartbeats
-- without progress; "never started" is a row left waiting in queued or
-- dispatched. Each new rule is per delegation with the sweeper's global
-- default (NULL here), judged by the database clock, an index condition on
-- a partial index of its own. See docs/design.md, "Progress and stalls".
--
-- NOTE: written on top of version 5's triggers (the consolidated BEFORE
-- function of version 6, branch hotpath, had not landed when this was
-- written). The bookkeeping of this version is one function and two
-- triggers of its own, named to run after delegations_touch and
-- delegations_touch_expiry; folding it into version 6's single function is
-- a CREATE OR REPLACE of that function with the block of
-- sweeper_delegations_progress below.

ALTER TABLE delegations
    -- The worker's latest progress report (a JSON object, at most 8 KiB as
    -- PostgreSQL prints it), and when it last changed, by the database
    -- clock: set when the row enters in_progress and whenever progress
    -- takes a different value, for every writer; a write that does not
    -- change progress cannot move it.
    ADD COLUMN progress jsonb,
    ADD COLUMN progress_at timestamptz,
    -- Per-delegation timeouts of the three rules; NULL: the sweeper's global
    -- sweep.progress_timeout, sweep.queue_timeout, sweep.start_timeout
    -- (each off by default).
    ADD COLUMN progress_timeout interval,
    ADD COLUMN queue_timeout interval,
    ADD COLUMN start_timeout interval,
    -- A queued row is not due before not_before (retries set it, with their
    -- backoff): the queue rule counts its wait from coalesce(not_before,
    -- created_at).
    ADD COLUMN not_before timestamptz,
    -- When the row entered dispatched, kept by the database: the start rule
    -- counts from it.
    ADD COLUMN dispatched_at timestamptz,
    -- What the rules' indexes hold, kept by the trigger below (see there).
    ADD COLUMN progress_minute timestamptz,
    ADD COLUMN progress_expires_at timestamptz,
    ADD COLUMN queue_expires_at timestamptz,
    ADD COLUMN start_expires_at timestamptz,
    ADD CONSTRAINT delegations_progress_check CHECK (
        progress IS NULL
        OR (jsonb_typeof(progress) = 'object' AND octet_length(progress::text) <= 8192)),
    ADD CONSTRAINT delegations_progress_timeout_check CHECK (
        progress_timeout BETWEEN interval '1 second' AND interval '7 days'),
    ADD CONSTRAINT delegations_queue_timeout_check CHECK (
        queue_timeout BETWEEN interval '1 second' AND interval '7 days'),
    ADD CONSTRAINT delegations_start_timeout_check CHECK (
        start_timeout BETWEEN interval '1 second' AND interval '7 days');

ALTER TABLE delegations DROP CONSTRAINT delegations_stuck_reason_check;
ALTER TABLE delegations ADD CONSTRAINT delegations_stuck_reason_check CHECK (
    stuck_reason IS NULL
    OR (status = 'stuck' AND stuck_reason IN (
        'heartbeat_timeout', 'deadline_exceeded', 'stalled', 'queue_timeout', 'start_timeout')));

-- The rows already in flight start their clocks now: in_progress rows have
-- made no progress yet as far as the ledger knows (progress_at = now(), so
-- a progress_timeout turned on later gives them all of it); dispatched rows
-- were dispatched when their latest move to dispatched was audited. Done
-- before the triggers below exist, with the version 1 bookkeeping off for
-- these two statements (inside this migration's transaction), so the rows
-- keep their updated_at; no status changes, so no event is written, and no
-- terminal row is touched.
ALTER TABLE delegations DISABLE TRIGGER delegations_touch;
UPDATE delegations AS d
SET progress_at = now(),
    progress_minute = date_bin('1 minute', now(), TIMESTAMPTZ '2000-01-01 00:00:00+00')
WHERE d.status = 'in_progress';
UPDATE delegations AS d
SET dispatched_at = COALESCE(
        (SELECT max(e.at) FROM delegation_events AS e
         WHERE e.delegation_id = d.delegation_id AND e.to_status = 'dispatched'),
        d.created_at)
WHERE d.status = 'dispatched';
ALTER TABLE delegations ENABLE TRIGGER delegations_touch;

-- An exact expiry: start + timeout, the timeout added as seconds (a day is
-- 24 hours whatever the session's time zone); NULL without either.
CREATE FUNCTION sweeper_wait_expiry(since timestamptz, timeout interval)
    RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT since + make_interval(secs => EXTRACT(EPOCH FROM timeout)::float8)
$$;

-- The bookkeeping of this version, for every writer:
--   * progress_at: now() when the row is inserted with a progress or as
--     in_progress, when it enters in_progress, when progress takes a
--     different value (jsonb equality: key order and spacing do not count);
--     otherwise what it was (a writer cannot set it);
--   * dispatched_at: now() when the row enters dispatched, then kept;
--   * progress_minute: progress_at rounded down to the minute (the stalled
--     rule's index on the global timeout, as heartbeat_minute is the
--     heartbeat rule's). It moves at most once a minute, so a worker whose
--     progress moves every second still makes HOT updates (no new index
--     entries) 59 times in 60;
--   * progress_expires_at: progress_at rounded down to a bin of LEAST(1
--     minute, progress_timeout / 2), plus progress_timeout, for rows with
--     their own timeout (sweeper_heartbeat_expiry of version 4): a lower
--     bound of the exact expiry by less than a bin, moving once a bin;
--   * queue_expires_at, start_expires_at: exact (coalesce(not_before,
--     created_at) and dispatched_at never change on a heartbeat), for rows
--     with their own timeout.
-- The WHEN clauses below are the same rules, inlined, so the function is
-- called only when it would change the row: a heartbeat whose progress did
-- not change calls nothing.
CREATE FUNCTION sweeper_delegations_progress() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.progress_at := CASE WHEN NEW.progress IS NOT NULL OR NEW.status = 'in_progress' THEN now() END;
        NEW.dispatched_at := CASE WHEN NEW.status = 'dispatched' THEN now() END;
    ELSE
        NEW.progress_at := CASE
            WHEN NEW.progress IS DISTINCT FROM OLD.progress
                 OR (NEW.status = 'in_progress' AND OLD.status <> 'in_progress') THEN now()
            ELSE OLD.progress_at END;
        NEW.dispatched_at := CASE
            WHEN NEW.status = 'dispatched' AND OLD.status <> 'dispatched' THEN now()
            ELSE OLD.dispatched_at END;
    END IF;
    NEW.progress_minute := date_bin('1 minute', NEW.progress_at, TIMESTAMPTZ '2000-01-01 00:00:00+00');
    NEW.progress_expires_at := sweeper_heartbeat_expiry(NEW.progress_at, NEW.progress_timeout);
    NEW.queue_expires_at := sweeper_wait_expiry(COALESCE(NEW.not_before, NEW.created_at), NEW.queue_timeout);
    NEW.start_expires_at := sweeper_wait_expiry(NEW.dispatched_at, NEW.start_timeout);
    RETURN NEW;
END
$$;

-- Named to run after delegations_touch and delegations_touch_expiry (BEFORE
-- triggers run in name order).
CREATE TRIGGER delegations_touch_progress
    BEFORE UPDATE ON delegations
    FOR EACH ROW
    WHEN (NEW.progress_at IS DISTINCT FROM (CASE
              WHEN NEW.progress IS DISTINCT FROM OLD.progress
                   OR (NEW.status = 'in_progress' AND OLD.status <> 'in_progress') THEN now()
              ELSE OLD.progress_at END)
          OR NEW.dispatched_at IS DISTINCT FROM (CASE
              WHEN NEW.status = 'dispatched' AND OLD.status <> 'dispatched' THEN now()
              ELSE OLD.dispatched_at END)
          OR NEW.progress_minute IS DISTINCT FROM
              date_bin('1 minute', NEW.progress_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')
          OR NEW.progress_expires_at IS DISTINCT FROM
              sweeper_heartbeat_expiry(NEW.progress_at, NEW.progress_timeout)
          OR NEW.queue_expires_at IS DISTINCT FROM
              sweeper_wait_expiry(COALESCE(NEW.not_before, NEW.created_at), NEW.queue_timeout)
          OR NEW.start_expires_at IS DISTINCT FROM
              sweeper_wait_expiry(NEW.dispatched_at, NEW.start_timeout))
    EXECUTE FUNCTION sweeper_delegations_progress();

-- An insert calls the function only when it has something to set: a
-- queued row without progress or own queue timeout (and nothing set by the
-- writer in the bookkeeping columns) calls nothing.
CREATE TRIGGER delegations_touch_insert_progress
    BEFORE INSERT ON delegations
    FOR EACH ROW
    WHEN (NEW.progress IS NOT NULL OR NEW.status IN ('in_progress', 'dispatched')
          OR NEW.queue_timeout IS NOT NULL
          OR NEW.progress_at IS NOT NULL OR NEW.dispatched_at IS NOT NULL
          OR NEW.progress_minute IS NOT NULL OR NEW.progress_expires_at IS NOT NULL
          OR NEW.queue_expires_at IS NOT NULL OR NEW.start_expires_at IS NOT NULL)
    EXECUTE FUNCTION sweeper_delegations_progress();

-- Rule "stalled", rows on the global progress_timeout (a parameter of the
-- sweep): "progress_minute < now() - timeout" the index condition,
-- "progress_at < now() - timeout" the exact rule.
CREATE INDEX idx_delegations_inflight_progress
    ON delegations (progress_minute)
    WHERE status = 'in_progress' AND progress_timeout IS NULL;
-- Rule "stalled", rows with their own progress_timeout.
CREATE INDEX idx_delegations_inflight_progress_own
    ON delegations (progress_expires_at)
    WHERE status = 'in_progress' AND progress_timeout IS NOT NULL;
-- Rule "queue_timeout", global: queued since coalesce(not_before,
-- created_at); neither changes on a heartbeat.
CREATE INDEX idx_delegations_queued
    ON delegations ((COALESCE(not_before, created_at)))
    WHERE status = 'queued' AND queue_timeout IS NULL;
CREATE INDEX idx_delegations_queued_own
    ON delegations (queue_expires_at)
    WHERE status = 'queued' AND queue_timeout IS NOT NULL;
-- Rule "start_timeout": dispatched since dispatched_at.
CREATE INDEX idx_delegations_dispatched
    ON delegations (dispatched_at)
    WHERE status = 'dispatched' AND start_timeout IS NULL;
CREATE INDEX idx_delegations_dispatched_own
    ON delegations (start_expires_at)
    WHERE status = 'dispatched' AND start_timeout IS NOT NULL;

-- The stuck event keeps what the task was doing: for every writer that
-- marks a row stuck, the audit detail gains the row's last progress, the
-- age of that progress and of the last heartbeat, in seconds by the
-- database clock (keys absent when NULL), merged over the writer's own
-- detail (sweeper.detail).
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
