-- sweeper schema, version 8: retry policies and claims (issue 21).
--
-- A delegation carries its retry policy (max_attempts, retry_backoff,
-- retry_backoff_max, retry_on), copied to each of its attempts. When a row
-- moves to a status in its retry_on, by any writer (the ledger, the sweeper,
-- the console, raw SQL), and its attempt is below max_attempts, the audit
-- trigger inserts the next attempt in the same transaction: queued, attempt
-- n+1, retry_of the row, its caller, callee, preview, idempotency key,
-- timeouts and policy, its last progress (so a worker can resume), and
-- not_before = now() + min(retry_backoff_max,
-- retry_backoff * 2^(n-1)), +-10% jitter. The terminal event's detail names
-- the next attempt, or says "exhausted": true when the policy has retries
-- (max_attempts > 1) and none is left. The defaults (max_attempts 1) retry
-- nothing: a ledger migrated to this version behaves as before.
--
-- Pull workers claim due queued rows of their callee (status queued and
-- COALESCE(not_before, created_at) <= now(), oldest first) through a partial
-- index of queued rows only: its size follows the queue, not the history.
--
-- Written on version 7 (branch progress, itself on version 5's triggers:
-- version 6, branch hotpath, had not landed). The audit function below
-- replaces version 7's and keeps its stuck-progress block; once version 6's
-- consolidated functions land, this block moves into that audit path.

ALTER TABLE delegations
    ADD COLUMN max_attempts integer NOT NULL DEFAULT 1,
    ADD COLUMN retry_backoff interval NOT NULL DEFAULT interval '30 seconds',
    ADD COLUMN retry_backoff_max interval NOT NULL DEFAULT interval '1 hour',
    ADD COLUMN retry_on text[] NOT NULL DEFAULT '{stuck}',
    ADD CONSTRAINT delegations_max_attempts_check CHECK (max_attempts BETWEEN 1 AND 100),
    ADD CONSTRAINT delegations_retry_backoff_check CHECK (
        retry_backoff BETWEEN interval '10 milliseconds' AND interval '7 days'
        AND retry_backoff_max BETWEEN retry_backoff AND interval '30 days'),
    -- A subset of {stuck, failed} (a NULL element is contained in nothing).
    ADD CONSTRAINT delegations_retry_on_check CHECK (retry_on <@ ARRAY['stuck', 'failed']::text[]);

-- Claims: the queued rows of a callee, by the time they are due.
-- A heartbeat changes none of these columns, so it stays a HOT update.
CREATE INDEX idx_delegations_queued_callee
    ON delegations (callee_id, (COALESCE(not_before, created_at)))
    WHERE status = 'queued';

-- Exhausted attempts (the policy had retries and used them all): the list's
-- exhausted filter, newest first, and the console's counts by the time they
-- ended. Both hold only exhausted rows, terminal and frozen.
CREATE INDEX idx_delegations_exhausted
    ON delegations (created_at DESC, delegation_id DESC)
    WHERE status = ANY(retry_on) AND attempt >= max_attempts AND max_attempts > 1;
CREATE INDEX idx_delegations_exhausted_finished
    ON delegations (finished_at)
    WHERE status = ANY(retry_on) AND attempt >= max_attempts AND max_attempts > 1;

-- Later attempts by when they were created: the console's count of retries
-- scheduled in the last hour and day.
CREATE INDEX idx_delegations_retries
    ON delegations (created_at)
    WHERE retry_of IS NOT NULL;

-- The id of the attempt after attempt n of delegation id: "<id>#<n+1>",
-- after dropping a "#<n>" suffix (a chain reads task, task#2, task#3), as
-- ledger.NextAttemptID derives it; NULL when longer than an id may be.
CREATE FUNCTION sweeper_next_attempt_id(id text, n integer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN octet_length(x) <= 255 THEN x END
    FROM (SELECT CASE WHEN n > 1 AND right(id, length('#' || n)) = '#' || n
                      THEN left(id, -length('#' || n)) ELSE id END
                 || '#' || (n + 1) AS x) AS derived
$$;

-- The next attempt of delegation id, which just moved to a status in its
-- retry_on with attempts left: inserted queued, due after the backoff. Its
-- id is sweeper_next_attempt_id's ("retry-<n>-<uuid>" when that is taken or
-- too long). When the row already has a next attempt (only raw SQL can
-- insert one while it was live), that one is returned and none is inserted:
-- idx_delegations_retry_of keeps one next attempt per row. Returns the next
-- attempt's id and not_before; NULLs when the row is not (or no longer)
-- one to retry. The backoff is computed in seconds (2^(n-1) capped first,
-- so no interval overflows); the deadline keeps the row's span from the
-- moment it was due.
--
-- SECURITY DEFINER, owned by the schema owner, search_path pinned: the
-- trigger runs as the writer whose statement moved the row (the daemon's
-- role may insert only the API's columns), and the next attempt copies
-- columns no writer may set. It reads the row itself and acts only on a row
-- the policy retries, so calling it directly does nothing the policy would
-- not do.
CREATE FUNCTION sweeper_schedule_retry(id text, OUT got text, OUT due timestamptz)
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
DECLARE
    d delegations;
    n integer;
    next_id text;
    existing record;
BEGIN
    SELECT * INTO d FROM delegations WHERE delegation_id = id;
    IF NOT FOUND OR NOT (d.status = ANY(d.retry_on) AND d.max_attempts > 1 AND d.attempt < d.max_attempts) THEN
        RETURN;
    END IF;
    n := d.attempt + 1;
    next_id := sweeper_next_attempt_id(d.delegation_id, d.attempt);
    due := now() + make_interval(secs =>
        LEAST(EXTRACT(EPOCH FROM d.retry_backoff_max)::float8,
              EXTRACT(EPOCH FROM d.retry_backoff)::float8 * power(2::float8, LEAST(d.attempt - 1, 60)))
        * (0.9 + 0.2 * random()));
    FOR i IN 1..2 LOOP
        IF next_id IS NULL THEN
            next_id := 'retry-' || n || '-' || gen_random_uuid();
        END IF;
        INSERT INTO delegations
            (delegation_id, caller_id, callee_id, task_preview, status, idempotency_key, deadline,
             heartbeat_timeout, progress_timeout, queue_timeout, start_timeout, progress,
             attempt, retry_of, not_before,
             max_attempts, retry_backoff, retry_backoff_max, retry_on)
        VALUES (next_id, d.caller_id, d.callee_id, d.task_preview, 'queued', d.idempotency_key,
                due + (d.deadline - COALESCE(d.not_before, d.created_at)),
                d.heartbeat_timeout, d.progress_timeout, d.queue_timeout, d.start_timeout, d.progress,
                n, d.delegation_id, due,
                d.max_attempts, d.retry_backoff, d.retry_backoff_max, d.retry_on)
        ON CONFLICT DO NOTHING
        RETURNING delegation_id INTO got;
        IF got IS NOT NULL THEN
            RETURN;
        END IF;
        SELECT x.delegation_id, x.not_before INTO existing FROM delegations AS x WHERE x.retry_of = d.delegation_id;
        IF existing.delegation_id IS NOT NULL THEN
            got := existing.delegation_id;
            due := existing.not_before;
            RETURN;
        END IF;
        next_id := NULL; -- the id is taken: a fresh one
    END LOOP;
    RAISE EXCEPTION 'delegation %: could not insert its next attempt', d.delegation_id
        USING ERRCODE = 'unique_violation', TABLE = 'delegations';
END
$$;

-- The audit trigger of version 7 (the stuck event keeps the row's last
-- progress and the ages of its progress and heartbeat), and what a status
-- change in retry_on does. Every status change by any writer still
-- produces exactly one event.
--   * A move to a status in retry_on with attempts left inserts the next
--     attempt (sweeper_schedule_retry); the event's detail names it
--     ("next_attempt", "not_before"). The event's id is drawn before the
--     insert, so the terminal event comes before the next attempt's queued
--     event in the feed's order.
--   * With none left, and a policy that had retries, the detail says
--     "exhausted": true.
--   * The insert of a later attempt (by the policy, Retry or an insert under
--     a failed key) records "retry_of", "attempt" and "not_before" in its
--     detail; one the policy made has the reason "retry_policy".
-- The writer's detail (sweeper.detail) is kept; these keys are added to it.
CREATE OR REPLACE FUNCTION sweeper_delegations_audit() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    detail jsonb := NULLIF(current_setting('sweeper.detail', true), '')::jsonb;
    reason text := COALESCE(NULLIF(current_setting('sweeper.reason', true), ''), NEW.stuck_reason);
    event_id bigint;
    next_id text;
    next_due timestamptz;
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
    IF TG_OP = 'INSERT' AND NEW.retry_of IS NOT NULL THEN
        detail := COALESCE(detail, '{}'::jsonb) || jsonb_build_object(
            'retry_of', NEW.retry_of, 'attempt', NEW.attempt, 'not_before', NEW.not_before);
        IF pg_trigger_depth() > 1 THEN
            reason := 'retry_policy';
        END IF;
    ELSIF TG_OP = 'UPDATE' AND NEW.max_attempts > 1 AND NEW.status = ANY(NEW.retry_on) THEN
        IF NEW.attempt >= NEW.max_attempts THEN
            detail := COALESCE(detail, '{}'::jsonb) || '{"exhausted": true}'::jsonb;
        ELSE
            event_id := nextval('delegation_events_id_seq');
            SELECT r.got, r.due INTO next_id, next_due FROM sweeper_schedule_retry(NEW.delegation_id) AS r;
            detail := COALESCE(detail, '{}'::jsonb) || jsonb_build_object(
                'next_attempt', next_id, 'not_before', next_due);
            INSERT INTO delegation_events (id, delegation_id, from_status, to_status, reason, actor, detail,
                                           caller_id, callee_id)
            OVERRIDING SYSTEM VALUE
            VALUES (event_id, NEW.delegation_id, OLD.status, NEW.status, reason,
                    COALESCE(NULLIF(current_setting('sweeper.actor', true), ''), 'db:' || current_user),
                    detail, NEW.caller_id, NEW.callee_id);
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail,
                                   caller_id, callee_id)
    VALUES (
        NEW.delegation_id,
        CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
        NEW.status,
        reason,
        COALESCE(NULLIF(current_setting('sweeper.actor', true), ''), 'db:' || current_user),
        detail,
        NEW.caller_id,
        NEW.callee_id
    );
    RETURN NULL;
END
$$;
