-- sweeper schema, version 11: the audit reads the statement's changed rows
-- twice, not eleven times (issue 19, the cost of a status change).
--
-- Version 6 built the audit's events by unnesting parallel arrays of the
-- transition tables (old_rows' statuses beside new_rows' columns, row for
-- row: a join of the two has no statistics and was twice as slow). Each
-- array was a read of new_rows, a subquery of its own in the trigger's one
-- INSERT: six in version 6, eleven by version 10 (progress, its age and the
-- heartbeat's for the stuck detail, the retry policy's exhausted flag). A
-- status change of one row, as an API transition makes, paid their fixed
-- cost: in the same run version 10's cost a third more than version 5's,
-- where version 6 had cost 5-15% more.
--
-- Here the new rows are read once, whole, as an array of the table's row
-- type, and unnested beside the old statuses and the retry policy's next
-- attempts: the same events, byte for byte (migrations/lean_audit_test.go).
-- Only sweeper_delegations_after() changes; no table, index or trigger.

-- What happens after a statement that inserted or updated delegations:
-- version 10's, with the events' rows read in one array (section 5).
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
-- Last redefined by: migration 000011 (the lean audit).
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
    SELECT c.delegation_id, c.from_status, c.status, COALESCE(reason, c.stuck_reason), actor,
           CASE WHEN c.next_id IS NOT NULL THEN COALESCE(r.detail, '{}'::jsonb)
                    || jsonb_build_object('next_attempt', c.next_id, 'not_before', c.next_at)
                WHEN c.max_attempts > 1 AND c.status = ANY(c.retry_on) AND c.attempt >= c.max_attempts
                THEN COALESCE(r.detail, '{}'::jsonb) || '{"exhausted": true}'::jsonb
                ELSE r.detail END,
           c.caller_id, c.callee_id
    -- One array of the old statuses and one of the new rows (each row
    -- whole, as the table's row type), unnested side by side: two reads of
    -- the transition tables instead of eleven. The new rows' columns keep
    -- their names (c.delegation_id, c.status, ...).
    FROM unnest(ARRAY(SELECT o.status FROM old_rows AS o), next_ids, next_ats,
                ARRAY(SELECT n::delegations FROM new_rows AS n))
         AS c(from_status, next_id, next_at)
    CROSS JOIN LATERAL (SELECT CASE WHEN c.status = 'stuck'
                                    THEN sweeper_stuck_detail(detail, c.progress, c.progress_at, c.last_heartbeat)
                                    ELSE detail END AS detail) AS r
    WHERE c.status IS DISTINCT FROM c.from_status;
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
