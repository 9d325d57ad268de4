-- sweeper schema, version 7: progress, stalls and the waiting states (issue
-- 20). "Dead" is no heartbeat (version 1's rule); "stalled" is heartbeats
-- without progress; "never started" is a row left waiting in queued or
-- dispatched. Each new rule is per delegation with the sweeper's global
-- default (NULL here), judged by the database clock, an index condition on
-- a partial index of its own. See docs/design.md, "Progress, stalls and the
-- waiting states".
--
-- Built on version 6: its BEFORE ROW function sweeper_delegations_before()
-- gains section 5 (progress_at, dispatched_at and the rules' index keys),
-- its triggers' WHEN clauses the conditions under which section 5 changes
-- the row; its AFTER STATEMENT function sweeper_delegations_after() writes
-- into a stuck event's detail the row's last progress and the ages of its
-- progress and heartbeat.

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
-- before section 5 below exists, with the BEFORE UPDATE trigger off for
-- these two statements (inside this migration's transaction), so the rows
-- keep their updated_at; no status changes, so no event is written, and no
-- terminal row is touched.
ALTER TABLE delegations DISABLE TRIGGER delegations_before_update;
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
ALTER TABLE delegations ENABLE TRIGGER delegations_before_update;

-- An exact expiry: start + timeout, the timeout added as seconds (a day is
-- 24 hours whatever the session's time zone); NULL without either.
CREATE FUNCTION sweeper_wait_expiry(since timestamptz, timeout interval)
    RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT since + make_interval(secs => EXTRACT(EPOCH FROM timeout)::float8)
$$;

-- A stuck event's detail: the writer's detail (or {}) with the row's last
-- progress, its age and the heartbeat's age in seconds (each key absent
-- when NULL; the progress itself is not touched, nulls inside it included).
CREATE FUNCTION sweeper_stuck_detail(detail jsonb, progress jsonb, progress_at timestamptz,
                                     last_heartbeat timestamptz)
    RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT COALESCE(detail, '{}'::jsonb)
        || CASE WHEN progress IS NOT NULL THEN jsonb_build_object('progress', progress) ELSE '{}' END
        || CASE WHEN progress_at IS NOT NULL
                THEN jsonb_build_object('progress_age_seconds', round(EXTRACT(EPOCH FROM now() - progress_at), 3))
                ELSE '{}' END
        || CASE WHEN last_heartbeat IS NOT NULL
                THEN jsonb_build_object('heartbeat_age_seconds', round(EXTRACT(EPOCH FROM now() - last_heartbeat), 3))
                ELSE '{}' END
$$;

-- What happens to a row before it is written, by any writer: version 6's
-- sections 1 to 4 unchanged, and section 5.
-- Last redefined by: migration 000007 (progress and the waiting states).
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

    -- 5. Progress and the waiting states (version 7).
    --    * progress_at: now() when the row is inserted with a progress or as
    --      in_progress, when it enters in_progress, when progress takes a
    --      different value (jsonb equality: key order and spacing do not
    --      count); otherwise what it was (a writer cannot set it);
    --    * dispatched_at: now() when the row enters dispatched, then kept;
    --    * progress_minute: progress_at rounded down to the minute, the
    --      stalled rule's index key on the global timeout (as
    --      heartbeat_minute is the heartbeat rule's): it moves at most once a
    --      minute, so a worker whose progress moves every second still makes
    --      HOT updates 59 times in 60;
    --    * progress_expires_at: progress_at rounded down to a bin of LEAST(1
    --      minute, progress_timeout / 2), plus progress_timeout, for rows
    --      with their own timeout: a lower bound of the exact expiry by less
    --      than a bin, moving once a bin (as heartbeat_expires_at);
    --    * queue_expires_at, start_expires_at: exact (coalesce(not_before,
    --      created_at) and dispatched_at never change on a heartbeat), for
    --      rows with their own timeout.
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

-- The WHEN clauses: version 6's, and the conditions under which section 5
-- may change the row. For section 5 they compare the columns its rules read
-- and the ones it keeps with their old values: unchanged, those columns are
-- as its last call left them, consistent. A status change matters to it
-- only into in_progress or dispatched, so a stuck transition of the sweep
-- still calls no function; a heartbeat that reports no progress, or the
-- same one, compares a few columns and calls nothing.
DROP TRIGGER delegations_before_update ON delegations;
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
             sweeper_heartbeat_expiry(NEW.last_heartbeat, NEW.heartbeat_timeout)
          -- section 5
          OR (NEW.status IN ('in_progress', 'dispatched') AND NEW.status IS DISTINCT FROM OLD.status)
          OR NEW.progress IS DISTINCT FROM OLD.progress
          OR NEW.progress_timeout IS DISTINCT FROM OLD.progress_timeout
          OR NEW.queue_timeout IS DISTINCT FROM OLD.queue_timeout
          OR NEW.start_timeout IS DISTINCT FROM OLD.start_timeout
          OR NEW.not_before IS DISTINCT FROM OLD.not_before
          OR NEW.created_at IS DISTINCT FROM OLD.created_at
          OR NEW.progress_at IS DISTINCT FROM OLD.progress_at
          OR NEW.dispatched_at IS DISTINCT FROM OLD.dispatched_at
          OR NEW.progress_minute IS DISTINCT FROM OLD.progress_minute
          OR NEW.progress_expires_at IS DISTINCT FROM OLD.progress_expires_at
          OR NEW.queue_expires_at IS DISTINCT FROM OLD.queue_expires_at
          OR NEW.start_expires_at IS DISTINCT FROM OLD.start_expires_at)
    EXECUTE FUNCTION sweeper_delegations_before();

-- An insert: version 6's conditions, and whatever section 5 has to set (a
-- queued row without progress or own queue timeout, with nothing set by
-- the writer in the columns it keeps, calls nothing).
DROP TRIGGER delegations_before_insert ON delegations;
CREATE TRIGGER delegations_before_insert
    BEFORE INSERT ON delegations
    FOR EACH ROW
    WHEN ((NEW.status = 'in_progress' AND NEW.last_heartbeat IS NULL)
          OR (sweeper_status_rank(NEW.status) = 3 AND NEW.updated_at IS DISTINCT FROM now())
          OR NEW.heartbeat_expires_at IS DISTINCT FROM
             sweeper_heartbeat_expiry(NEW.last_heartbeat, NEW.heartbeat_timeout)
          -- section 5
          OR NEW.progress IS NOT NULL OR NEW.status IN ('in_progress', 'dispatched')
          OR NEW.queue_timeout IS NOT NULL
          OR NEW.progress_at IS NOT NULL OR NEW.dispatched_at IS NOT NULL
          OR NEW.progress_minute IS NOT NULL OR NEW.progress_expires_at IS NOT NULL
          OR NEW.queue_expires_at IS NOT NULL OR NEW.start_expires_at IS NOT NULL)
    EXECUTE FUNCTION sweeper_delegations_before();

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

-- What happens after a statement that inserted or updated delegations:
-- version 6's audit, and the stuck event keeps what the task was doing: for
-- every writer that marks a row stuck, its event's detail gains the row's
-- last progress, the age of that progress and of the last heartbeat, in
-- seconds by the database clock (keys absent when NULL), merged over the
-- writer's own detail (sweeper.detail). Other events' detail is the
-- writer's, as before; a statement without a stuck row builds nothing more.
-- Last redefined by: migration 000007 (progress and the waiting states).
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
