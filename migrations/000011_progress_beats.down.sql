-- Back to version 10: version 7's update trigger, which calls the bookkeeping
-- function for every change of progress. Rows are untouched.

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

-- The grants version 11 added, back off the roles that may update progress.
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
        EXECUTE format('REVOKE UPDATE (progress_at, progress_minute, progress_expires_at) ON delegations FROM %I', grantee);
    END LOOP;
END
$$;
