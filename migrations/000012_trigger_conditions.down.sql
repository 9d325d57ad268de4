-- Back to version 11: the row triggers' conditions call
-- sweeper_status_rank() and sweeper_heartbeat_expiry() again (version 11's
-- update condition, version 7's insert condition, version 3's delete
-- guard). Rows are untouched.

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

DROP TRIGGER delegations_delete_guard ON delegations;
CREATE TRIGGER delegations_delete_guard
    BEFORE DELETE ON delegations
    FOR EACH ROW
    WHEN (sweeper_status_rank(OLD.status) IS DISTINCT FROM 3)
    EXECUTE FUNCTION sweeper_delegations_delete_guard();
