-- sweeper schema, version 11: a heartbeat that changes its progress calls
-- no row function (issue 20, item 4: HeartbeatMany with a changed progress
-- at 0.8 of one without).
--
-- Version 7's bookkeeping trigger runs sweeper_delegations_before() (PL/pgSQL)
-- for every row whose progress changed, to set progress_at to now() and the
-- two keys derived from it. The ledger's heartbeat statements now set those
-- three columns themselves, to the values the function would give; the
-- trigger's condition skips the function when the row's progress changed
-- and a writer set exactly those values (progress_at = now(), its minute,
-- its expiry) with the status unchanged. Every other writer is as before: a
-- raw UPDATE of progress alone leaves progress_at as it was, which the
-- condition sees, and the function sets it; a writer cannot set progress_at
-- to anything but now() without the function resetting it.

-- An update: version 7's conditions, the progress ones as said above.
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
          OR NEW.progress_timeout IS DISTINCT FROM OLD.progress_timeout
          OR NEW.queue_timeout IS DISTINCT FROM OLD.queue_timeout
          OR NEW.start_timeout IS DISTINCT FROM OLD.start_timeout
          OR NEW.not_before IS DISTINCT FROM OLD.not_before
          OR NEW.created_at IS DISTINCT FROM OLD.created_at
          OR NEW.dispatched_at IS DISTINCT FROM OLD.dispatched_at
          OR NEW.queue_expires_at IS DISTINCT FROM OLD.queue_expires_at
          OR NEW.start_expires_at IS DISTINCT FROM OLD.start_expires_at
          OR ((NEW.progress IS DISTINCT FROM OLD.progress
               OR NEW.progress_at IS DISTINCT FROM OLD.progress_at
               OR NEW.progress_minute IS DISTINCT FROM OLD.progress_minute
               OR NEW.progress_expires_at IS DISTINCT FROM OLD.progress_expires_at)
              AND NOT (NEW.progress IS DISTINCT FROM OLD.progress
                       AND NEW.status = OLD.status
                       AND NEW.progress_at = now()
                       AND NEW.progress_minute = date_bin('1 minute', now(), TIMESTAMPTZ '2000-01-01 00:00:00+00')
                       AND NEW.progress_expires_at IS NOT DISTINCT FROM
                           sweeper_heartbeat_expiry(now(), NEW.progress_timeout))))
    EXECUTE FUNCTION sweeper_delegations_before();

-- The heartbeat statements now write progress_at, progress_minute and
-- progress_expires_at: every role that may update progress (the daemon's,
-- deploy/postgres/grants.sql) may update those three too, or its heartbeats
-- would be refused once this version is in. The trigger above keeps them
-- honest: any value but the one it would set, and it sets its own.
DO $$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN
        SELECT DISTINCT p.grantee FROM information_schema.column_privileges AS p
        WHERE p.table_schema = current_schema() AND p.table_name = 'delegations'
          AND p.column_name = 'progress' AND p.privilege_type = 'UPDATE'
          AND p.grantee <> current_user AND p.grantee <> 'PUBLIC'
    LOOP
        EXECUTE format('GRANT UPDATE (progress_at, progress_minute, progress_expires_at) ON delegations TO %I', grantee);
    END LOOP;
END
$$;
