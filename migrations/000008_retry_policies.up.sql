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

-- The id the policy gives the attempt after attempt n of delegation id:
-- sweeper_next_attempt_id's, or, when that is taken (another delegation has
-- it) or too long, "retry-<n+1>-<md5 of id>". A function of the ledger as it
-- is, so the audit trigger (which names the next attempt in the terminal
-- event) and sweeper_delegations_retry (which inserts it, at the end of the
-- same statement) agree.
CREATE FUNCTION sweeper_retry_id(id text, n integer) RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
-- PL/pgSQL, not SQL: a SQL function with a subquery is not inlined and was
-- planned again on every call (0.7 ms a row); PL/pgSQL keeps its plan.
DECLARE
    derived text := public.sweeper_next_attempt_id(id, n);
BEGIN
    IF derived IS NOT NULL AND NOT EXISTS (SELECT 1 FROM public.delegations AS x WHERE x.delegation_id = derived) THEN
        RETURN derived;
    END IF;
    RETURN 'retry-' || (n + 1) || '-' || md5(id);
END
$$;

-- When the attempt after attempt n of delegation id is due: now() + min(max,
-- backoff * 2^(n-1)), times a jitter from 0.9 to 1.1. The backoff is computed
-- in seconds with the exponent capped, so no interval overflows; the jitter
-- is a hash of the id (so the two triggers compute the same time within the
-- transaction, and rows retried together spread over the 20%).
CREATE FUNCTION sweeper_retry_due(id text, n integer, backoff interval, backoff_max interval) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT now() + make_interval(secs =>
        LEAST(EXTRACT(EPOCH FROM backoff_max)::float8,
              EXTRACT(EPOCH FROM backoff)::float8 * power(2::float8, LEAST(n - 1, 60)))
        * (0.9 + 0.2 * ((hashtext(id) & 65535)::float8 / 65535)))
$$;

-- The audit trigger of version 7 (the stuck event keeps the row's last
-- progress and the ages of its progress and heartbeat), and what a status
-- change in retry_on does. Every status change by any writer still produces
-- exactly one event.
--   * A move to a status in retry_on with attempts left names the next
--     attempt in the event's detail ("next_attempt", "not_before") and
--     queues the row's id in the transaction-local setting
--     sweeper.retry_ids; sweeper_delegations_retry, the statement trigger
--     below, inserts the next attempts of the statement's rows in one INSERT
--     after the row triggers, so the terminal events come before the next
--     attempts' queued events. (One INSERT per row was measured at 1.4 ms a
--     row: an INSERT statement opens the table's twenty-odd indexes.)
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
            -- A next attempt only raw SQL can have inserted while the row
            -- was live is named, not added to.
            SELECT x.delegation_id, x.not_before INTO next_id, next_due
            FROM delegations AS x WHERE x.retry_of = NEW.delegation_id;
            IF next_id IS NULL THEN
                next_id := sweeper_retry_id(NEW.delegation_id, NEW.attempt);
                next_due := sweeper_retry_due(NEW.delegation_id, NEW.attempt, NEW.retry_backoff, NEW.retry_backoff_max);
                -- An element of a text[] literal, quoted.
                PERFORM set_config('sweeper.retry_ids',
                    COALESCE(current_setting('sweeper.retry_ids', true), '') || ',"'
                    || replace(replace(NEW.delegation_id, E'\\', E'\\\\'), '"', E'\\"') || '"', true);
            END IF;
            detail := COALESCE(detail, '{}'::jsonb) || jsonb_build_object(
                'next_attempt', next_id, 'not_before', next_due);
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

-- The next attempts of the rows the statement moved to a status of their
-- retry_on with attempts left (queued by the audit trigger in
-- sweeper.retry_ids), in one INSERT: queued, attempt n+1, retry_of, the
-- same caller, callee, preview, idempotency key, timeouts and policy, the
-- last progress, due at sweeper_retry_due, the deadline keeping the row's
-- span from the moment it was due. Only rows the policy retries and that
-- have no next attempt yet: idx_delegations_retry_of keeps one per row.
--
-- SECURITY DEFINER, owned by the schema owner, search_path pinned: the
-- trigger runs as the writer whose statement moved the rows (the daemon's
-- role may insert only the API's columns), and the next attempt copies
-- columns no writer may set. It reads the rows itself and inserts only what
-- their policy asks for, so whatever a writer puts in sweeper.retry_ids it
-- does nothing the policy would not do.
CREATE FUNCTION sweeper_delegations_retry() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
DECLARE
    queued text := current_setting('sweeper.retry_ids', true);
    ids text[];
BEGIN
    IF queued IS NULL OR queued = '' THEN
        RETURN NULL;
    END IF;
    ids := ('{' || substr(queued, 2) || '}')::text[];
    PERFORM set_config('sweeper.retry_ids', '', true);
    INSERT INTO delegations
        (delegation_id, caller_id, callee_id, task_preview, status, idempotency_key, deadline,
         heartbeat_timeout, progress_timeout, queue_timeout, start_timeout, progress,
         attempt, retry_of, not_before,
         max_attempts, retry_backoff, retry_backoff_max, retry_on)
    SELECT sweeper_retry_id(p.delegation_id, p.attempt), p.caller_id, p.callee_id, p.task_preview, 'queued',
           p.idempotency_key, due.at + (p.deadline - COALESCE(p.not_before, p.created_at)),
           p.heartbeat_timeout, p.progress_timeout, p.queue_timeout, p.start_timeout, p.progress,
           p.attempt + 1, p.delegation_id, due.at,
           p.max_attempts, p.retry_backoff, p.retry_backoff_max, p.retry_on
    FROM delegations AS p
    CROSS JOIN LATERAL (SELECT sweeper_retry_due(p.delegation_id, p.attempt, p.retry_backoff, p.retry_backoff_max) AS at) AS due
    WHERE p.delegation_id = ANY(ids)
      AND p.status = ANY(p.retry_on) AND p.max_attempts > 1 AND p.attempt < p.max_attempts
      AND NOT EXISTS (SELECT 1 FROM delegations AS n WHERE n.retry_of = p.delegation_id)
    ORDER BY p.delegation_id
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

-- A statement trigger on the status column: heartbeats, which do not set
-- it, never fire it. (No WHEN clause: a statement trigger's is evaluated
-- when the statement ends, before the row triggers have queued anything;
-- the function returns at once when nothing is queued.)
CREATE TRIGGER delegations_retry
    AFTER UPDATE OF status ON delegations
    FOR EACH STATEMENT
    EXECUTE FUNCTION sweeper_delegations_retry();
