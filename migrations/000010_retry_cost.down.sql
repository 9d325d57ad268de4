-- Back to version 9: version 8's retry functions. Rows and events are
-- untouched (version 10 changed how the next attempts are computed, not
-- what they are).

CREATE OR REPLACE FUNCTION sweeper_next_attempt_id(id text, n integer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN octet_length(x) <= 255 THEN x END
    FROM (SELECT CASE WHEN n > 1 AND right(id, length('#' || n)) = '#' || n
                      THEN left(id, -length('#' || n)) ELSE id END
                 || '#' || (n + 1) AS x) AS derived
$$;

DROP FUNCTION sweeper_insert_retries(text[], text[]);

-- Version 8's, unchanged.
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

-- Version 8's, unchanged.
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
