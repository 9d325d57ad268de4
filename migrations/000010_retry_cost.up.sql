-- sweeper schema, version 10: what a stuck transition that schedules a
-- retry costs (issue 21, item 6). Same behaviour as version 8's retry
-- policy, computed once per statement instead of twice per row.
--
-- Version 8 named each next attempt twice: the terminal event's detail
-- called sweeper_retry_id (PL/pgSQL, which called sweeper_next_attempt_id,
-- a SQL function that was never inlined: its body had a FROM clause and a
-- stable operator, text || integer; and probed the primary key) and
-- sweeper_retry_due, and read the row's existing next attempt with two
-- subqueries; then sweeper_insert_retries did it all again for the INSERT
-- (and a NOT EXISTS on retry_of). Measured at 100k rows, that was 35-50 us
-- of the 110-125 us of backend CPU a retry added to a stuck transition,
-- per row (docs/design.md, "Retry policies and claims", the table of
-- costs). Here:
--   * sweeper_next_attempt_id is one expression, so PostgreSQL inlines it
--     (same result: ledger.NextAttemptID's twin, tested equal);
--   * sweeper_delegations_after computes each retried row's next attempt
--     (its id and due time, or the ones of a next attempt raw SQL already
--     inserted) once, in one statement over new_rows; the terminal events
--     name them and sweeper_insert_retries inserts them;
--   * sweeper_insert_retries(ids, next_ids) takes the names the audit
--     gave and accepts each only if it is the policy's (the derived id,
--     or the md5 fallback when the derived one is taken or too long), so
--     whatever a caller passes it does nothing the policy would not do. It
--     leaves the one-next-attempt rule to idx_delegations_retry_of (ON
--     CONFLICT DO NOTHING), as before, without a NOT EXISTS in front.
-- sweeper_retry_id and sweeper_retry_due are kept (sweeper_retry_due is
-- inlined where it is used; sweeper_retry_id is no longer called by the
-- schema).

CREATE OR REPLACE FUNCTION sweeper_next_attempt_id(id text, n integer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    -- One expression (no FROM) of immutable parts only, so the planner
    -- inlines it: the integers are cast to text explicitly (text ||
    -- integer is a stable operator, which an immutable function's body may
    -- not contain to be inlined), and the derived id is spelt twice.
    SELECT CASE WHEN octet_length(CASE WHEN n > 1 AND right(id, length('#' || n::text)) = '#' || n::text
                                       THEN left(id, -length('#' || n::text)) ELSE id END
                                  || '#' || (n + 1)::text) <= 255
                THEN CASE WHEN n > 1 AND right(id, length('#' || n::text)) = '#' || n::text
                          THEN left(id, -length('#' || n::text)) ELSE id END || '#' || (n + 1)::text END
$$;

DROP FUNCTION sweeper_insert_retries(text[]);

-- The next attempts of the delegations ids, named next_ids by the audit, in
-- one INSERT: queued, attempt n+1, retry_of, the same caller, callee,
-- preview, idempotency key, timeouts and policy, the last progress, due at
-- sweeper_retry_due, the deadline keeping the row's span from the moment it
-- was due. Only rows the policy retries, and only under the name the
-- policy gives (sweeper_next_attempt_id, or "retry-<n+1>-<md5 of id>" when
-- that one is taken or too long); idx_delegations_retry_of keeps one next
-- attempt per row (ON CONFLICT DO NOTHING).
--
-- SECURITY DEFINER, owned by the schema owner, search_path pinned: the
-- audit trigger runs as the writer whose statement moved the rows (the
-- daemon's role may insert only the API's columns), and the next attempt
-- copies columns no writer may set. It reads the rows itself and checks
-- every name it is given, so whatever a caller passes it does nothing the
-- policy would not do.
CREATE FUNCTION sweeper_insert_retries(ids text[], next_ids text[]) RETURNS void
    LANGUAGE sql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
    INSERT INTO delegations
        (delegation_id, caller_id, callee_id, task_preview, status, idempotency_key, deadline,
         heartbeat_timeout, progress_timeout, queue_timeout, start_timeout, progress,
         attempt, retry_of, not_before,
         max_attempts, retry_backoff, retry_backoff_max, retry_on)
    SELECT r.next_id, p.caller_id, p.callee_id, p.task_preview, 'queued',
           p.idempotency_key, x.due + (p.deadline - COALESCE(p.not_before, p.created_at)),
           p.heartbeat_timeout, p.progress_timeout, p.queue_timeout, p.start_timeout, p.progress,
           p.attempt + 1, p.delegation_id, x.due,
           p.max_attempts, p.retry_backoff, p.retry_backoff_max, p.retry_on
    FROM unnest(ids, next_ids) AS r(id, next_id)
    JOIN delegations AS p ON p.delegation_id = r.id
    CROSS JOIN LATERAL (SELECT sweeper_next_attempt_id(p.delegation_id, p.attempt) AS derived,
                               sweeper_retry_due(p.delegation_id, p.attempt, p.retry_backoff,
                                                 p.retry_backoff_max) AS due) AS x
    WHERE p.status = ANY(p.retry_on) AND p.max_attempts > 1 AND p.attempt < p.max_attempts
      AND (r.next_id = x.derived
           OR (r.next_id = 'retry-' || (p.attempt + 1)::text || '-' || md5(p.delegation_id)
               AND (x.derived IS NULL
                    OR EXISTS (SELECT FROM delegations AS t WHERE t.delegation_id = x.derived))))
    ORDER BY p.delegation_id
    ON CONFLICT DO NOTHING
$$;

-- What happens after a statement that inserted or updated delegations:
-- version 8's, with each next attempt computed once (section 3):
--   * the event of a move to a status in retry_on with attempts left names
--     the next attempt ("next_attempt", "not_before"): the one raw SQL
--     already inserted, if any, else the policy's; with none left, and a
--     policy that had retries, it says "exhausted": true;
--   * after the events, sweeper_insert_retries inserts the statement's new
--     next attempts in one INSERT (so the terminal events come before the
--     next attempts' queued events, all in this transaction);
--   * the event of an inserted later attempt (by the policy, Retry or an
--     insert under a failed key) records "retry_of", "attempt" and
--     "not_before"; one the policy made has the reason "retry_policy".
-- The writer's detail (sweeper.detail) is kept; these keys are added to it.
-- A statement without a row in a policy builds nothing more. The function
-- sends the feed's notification itself when it appended events.
-- Last redefined by: migration 000010 (the retry's cost).
CREATE OR REPLACE FUNCTION sweeper_delegations_after() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    actor  text;
    reason text;
    detail jsonb;
    next_ids text[];        -- by row of new_rows: the next attempt's id, NULL when not retried
    next_ats timestamptz[]; -- by row of new_rows: its due time
    insert_of text[];       -- the rows whose next attempt is to be inserted
    insert_ids text[];      -- and its id
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

    -- 3. An insert: its events, one per row; a later attempt's with what it
    --    retries, a stuck one with the row's progress (sweeper_stuck_detail).
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

    -- 4. An update: the next attempts of the rows the policy retries (a
    --    terminal row in new_rows has just become terminal: terminal rows
    --    are frozen), once, in new_rows' order (NULL for the other rows):
    --    the next attempt raw SQL already inserted, if any (then nothing is
    --    inserted), else the policy's name (sweeper_next_attempt_id, or
    --    the md5 fallback when that is taken or too long) and due time.
    IF EXISTS (SELECT FROM new_rows AS n
               WHERE n.max_attempts > 1 AND n.status = ANY(n.retry_on) AND n.attempt < n.max_attempts) THEN
        SELECT array_agg(nx.id), array_agg(nx.at),
               array_agg(n.delegation_id) FILTER (WHERE nx.fresh), array_agg(nx.id) FILTER (WHERE nx.fresh)
        INTO next_ids, next_ats, insert_of, insert_ids
        FROM new_rows AS n
        LEFT JOIN LATERAL (
            SELECT COALESCE(e.delegation_id,
                            CASE WHEN d.derived IS NOT NULL
                                      AND NOT EXISTS (SELECT FROM delegations AS t WHERE t.delegation_id = d.derived)
                                 THEN d.derived
                                 ELSE 'retry-' || (n.attempt + 1)::text || '-' || md5(n.delegation_id) END) AS id,
                   COALESCE(e.not_before,
                            sweeper_retry_due(n.delegation_id, n.attempt, n.retry_backoff, n.retry_backoff_max)) AS at,
                   e.delegation_id IS NULL AS fresh
            FROM (SELECT sweeper_next_attempt_id(n.delegation_id, n.attempt) AS derived) AS d
            LEFT JOIN LATERAL (SELECT x.delegation_id, x.not_before FROM delegations AS x
                               WHERE x.retry_of = n.delegation_id LIMIT 1) AS e ON true
            WHERE n.max_attempts > 1 AND n.status = ANY(n.retry_on) AND n.attempt < n.max_attempts
        ) AS nx ON true;
    END IF;

    -- 5. The audit events, one per status change, in the statement's row
    --    order; a stuck one with the row's progress (sweeper_stuck_detail),
    --    a move in a retry policy with its next attempt or "exhausted".
    INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail,
                                   caller_id, callee_id)
    SELECT c.delegation_id, c.from_status, c.to_status, COALESCE(reason, c.stuck_reason), actor,
           CASE WHEN c.next_id IS NOT NULL THEN COALESCE(r.detail, '{}'::jsonb)
                    || jsonb_build_object('next_attempt', c.next_id, 'not_before', c.next_at)
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
                ARRAY(SELECT n.max_attempts > 1 AND n.status = ANY(n.retry_on) AND n.attempt >= n.max_attempts
                      FROM new_rows AS n),
                next_ids, next_ats)
         AS c(from_status, delegation_id, to_status, stuck_reason, caller_id, callee_id,
              progress, progress_at, last_heartbeat, exhausted, next_id, next_at)
    CROSS JOIN LATERAL (SELECT CASE WHEN c.to_status = 'stuck'
                                    THEN sweeper_stuck_detail(detail, c.progress, c.progress_at, c.last_heartbeat)
                                    ELSE detail END AS detail) AS r
    WHERE c.to_status IS DISTINCT FROM c.from_status;
    GET DIAGNOSTICS appended = ROW_COUNT;
    IF appended > 0 THEN
        PERFORM pg_notify('sweeper_events', '');
    END IF;

    -- 6. The new next attempts, in one INSERT (their queued events come
    --    from this function again, for the INSERT).
    IF cardinality(insert_of) > 0 THEN
        PERFORM sweeper_insert_retries(insert_of, insert_ids);
    END IF;
    RETURN NULL;
END
$$;
