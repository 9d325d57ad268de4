-- sweeper schema, version 8: retry policies and claims (issue 21).
--
-- A delegation carries its retry policy (max_attempts, retry_backoff,
-- retry_backoff_max, retry_on), copied to each of its attempts. When a row
-- moves to a status in its retry_on, by any writer (the ledger, the sweeper,
-- the console, raw SQL), and its attempt is below max_attempts, the
-- after-statement audit (version 6's sweeper_delegations_after) inserts the
-- next attempt in the same transaction: queued, attempt
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
-- Written on version 7 (progress), itself on version 6 (the hot path: one
-- BEFORE function, one AFTER STATEMENT audit); this version redefines
-- sweeper_delegations_after only.

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
-- is, so the audit (which names the next attempt in the terminal event) and
-- sweeper_insert_retries (which inserts it, right after) agree.
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
-- is a hash of the id (so the event and the row get the same time within
-- the transaction, and rows retried together spread over the 20%).
CREATE FUNCTION sweeper_retry_due(id text, n integer, backoff interval, backoff_max interval) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT now() + make_interval(secs =>
        LEAST(EXTRACT(EPOCH FROM backoff_max)::float8,
              EXTRACT(EPOCH FROM backoff)::float8 * power(2::float8, LEAST(n - 1, 60)))
        * (0.9 + 0.2 * ((hashtext(id) & 65535)::float8 / 65535)))
$$;

-- The next attempts of the delegations ids that the statement just moved
-- to a status of their retry_on with attempts left, in one INSERT: queued,
-- attempt n+1, retry_of, the same caller, callee, preview, idempotency key,
-- timeouts and policy, the last progress, due at sweeper_retry_due, the
-- deadline keeping the row's span from the moment it was due. Only rows the
-- policy retries and that have no next attempt yet: idx_delegations_retry_of
-- keeps one per row.
--
-- SECURITY DEFINER, owned by the schema owner, search_path pinned: the
-- audit trigger runs as the writer whose statement moved the rows (the
-- daemon's role may insert only the API's columns), and the next attempt
-- copies columns no writer may set. It reads the rows itself and inserts
-- only what their policy asks for, so whatever ids a caller passes it does
-- nothing the policy would not do.
CREATE FUNCTION sweeper_insert_retries(ids text[]) RETURNS void
    LANGUAGE sql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
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
    ON CONFLICT DO NOTHING
$$;

-- What happens after a statement that inserted or updated delegations:
-- version 7's audit (one INSERT of the statement's events; a stuck event
-- keeps the row's progress), and the retry policy:
--   * the event of a move to a status in retry_on with attempts left names
--     the next attempt ("next_attempt", "not_before"); with none left, and a
--     policy that had retries, it says "exhausted": true;
--   * after the events, sweeper_insert_retries inserts the statement's next
--     attempts in one INSERT (so the terminal events come before the next
--     attempts' queued events, all in this transaction);
--   * the event of an inserted later attempt (by the policy, Retry or an
--     insert under a failed key) records "retry_of", "attempt" and
--     "not_before"; one the policy made has the reason "retry_policy".
-- The writer's detail (sweeper.detail) is kept; these keys are added to it.
-- A statement without a row in a policy builds nothing more. The function
-- sends the feed's notification itself when it appended events, as the
-- hot path's later revision of version 6 does (its delegation_events_notify
-- trigger is dropped there); while that trigger still exists the two
-- notifications, same channel and payload in one transaction, are delivered
-- as one.
-- Last redefined by: migration 000008 (retry policies and claims).
CREATE OR REPLACE FUNCTION sweeper_delegations_after() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    actor  text;
    reason text;
    detail jsonb;
    retry_ids text[];
    appended bigint;
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
    --    order; a stuck one with the row's progress (sweeper_stuck_detail),
    --    a later attempt's with what it retries, a move in a retry policy
    --    with its next attempt or "exhausted". delegation_events_notify then
    --    sends one notification for the INSERT, at commit.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail,
                                       caller_id, callee_id)
        SELECT n.delegation_id, NULL, n.status,
               CASE WHEN n.retry_of IS NOT NULL AND pg_trigger_depth() > 1 THEN 'retry_policy'
                    ELSE COALESCE(reason, n.stuck_reason) END,
               actor,
               CASE WHEN n.retry_of IS NOT NULL
                    THEN COALESCE(detail, '{}'::jsonb) || jsonb_build_object(
                        'retry_of', n.retry_of, 'attempt', n.attempt, 'not_before', n.not_before)
                    WHEN n.status = 'stuck'
                    THEN sweeper_stuck_detail(detail, n.progress, n.progress_at, n.last_heartbeat)
                    ELSE detail END,
               n.caller_id, n.callee_id
        FROM new_rows AS n;
        GET DIAGNOSTICS appended = ROW_COUNT;
        IF appended > 0 THEN
            PERFORM pg_notify('sweeper_events', '');
        END IF;
        RETURN NULL;
    END IF;
    INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail,
                                   caller_id, callee_id)
    SELECT c.delegation_id, c.from_status, c.to_status, COALESCE(reason, c.stuck_reason), actor,
           CASE WHEN c.retry THEN COALESCE(r.detail, '{}'::jsonb) || jsonb_build_object(
                    'next_attempt', COALESCE((SELECT x.delegation_id FROM delegations AS x WHERE x.retry_of = c.delegation_id),
                                             sweeper_retry_id(c.delegation_id, c.attempt)),
                    'not_before', COALESCE((SELECT x.not_before FROM delegations AS x WHERE x.retry_of = c.delegation_id),
                                           sweeper_retry_due(c.delegation_id, c.attempt, c.backoff, c.backoff_max)))
                WHEN c.exhausted THEN COALESCE(r.detail, '{}'::jsonb) || '{"exhausted": true}'::jsonb
                ELSE r.detail END,
           c.caller_id, c.callee_id
    FROM unnest(ARRAY(SELECT o.status FROM old_rows AS o),
                ARRAY(SELECT n.delegation_id FROM new_rows AS n),
                ARRAY(SELECT n.status FROM new_rows AS n),
                ARRAY(SELECT n.stuck_reason FROM new_rows AS n),
                ARRAY(SELECT n.caller_id FROM new_rows AS n),
                ARRAY(SELECT n.callee_id FROM new_rows AS n),
                ARRAY(SELECT n.progress FROM new_rows AS n),
                ARRAY(SELECT n.progress_at FROM new_rows AS n),
                ARRAY(SELECT n.last_heartbeat FROM new_rows AS n),
                ARRAY(SELECT n.attempt FROM new_rows AS n),
                ARRAY(SELECT n.max_attempts > 1 AND n.status = ANY(n.retry_on) AND n.attempt < n.max_attempts
                      FROM new_rows AS n),
                ARRAY(SELECT n.max_attempts > 1 AND n.status = ANY(n.retry_on) AND n.attempt >= n.max_attempts
                      FROM new_rows AS n),
                ARRAY(SELECT n.retry_backoff FROM new_rows AS n),
                ARRAY(SELECT n.retry_backoff_max FROM new_rows AS n))
         AS c(from_status, delegation_id, to_status, stuck_reason, caller_id, callee_id,
              progress, progress_at, last_heartbeat, attempt, retry, exhausted, backoff, backoff_max)
    CROSS JOIN LATERAL (SELECT CASE WHEN c.to_status = 'stuck'
                                    THEN sweeper_stuck_detail(detail, c.progress, c.progress_at, c.last_heartbeat)
                                    ELSE detail END AS detail) AS r
    WHERE c.to_status IS DISTINCT FROM c.from_status;
    GET DIAGNOSTICS appended = ROW_COUNT;
    IF appended > 0 THEN
        PERFORM pg_notify('sweeper_events', '');
    END IF;

    -- 4. The next attempts of the rows the policy retries (a terminal row
    --    in new_rows has just become terminal: terminal rows are frozen).
    retry_ids := ARRAY(SELECT n.delegation_id FROM new_rows AS n
                       WHERE n.max_attempts > 1 AND n.status = ANY(n.retry_on) AND n.attempt < n.max_attempts);
    IF cardinality(retry_ids) > 0 THEN
        PERFORM sweeper_insert_retries(retry_ids);
    END IF;
    RETURN NULL;
END
$$;
