-- sweeper schema, version 12: the row triggers' conditions name no SQL
-- function (issue 19, the cost of a status change).
--
-- PostgreSQL prepares a trigger's WHEN clause again for every statement
-- that fires the trigger: it reads the condition's node tree from
-- pg_trigger and plans it, and planning inlines each SQL function the
-- condition calls (it fetches the function, then parses and analyses its
-- body). The update trigger's condition called sweeper_status_rank() three
-- times and sweeper_heartbeat_expiry() twice, so every UPDATE statement on
-- delegations parsed five function bodies before its first row, whatever
-- it changed. A raw one-row status change (pgbench, one connection, 100k
-- fresh rows each round, three rounds): 0.88-1.07 ms a statement at
-- version 11, 0.82-0.91 ms at 12. The conditions below are the same
-- expressions with those bodies written out, as the planner inlined them:
-- the ranks of sweeper_status_rank() and the bin of
-- sweeper_heartbeat_expiry(). They decide exactly as before; the functions
-- stay (the trigger functions, the sweep and the tests call them), and a
-- change to either must be made here too.
-- TestTriggerConditionsMigrationOnPopulatedLedger makes every write these
-- conditions decide at 11, 12 and after down, and checks that no
-- condition calls a sweeper_ function.

-- An update: version 11's condition.
DROP TRIGGER delegations_before_update ON delegations;
CREATE TRIGGER delegations_before_update
    BEFORE UPDATE ON delegations
    FOR EACH ROW
    WHEN (OLD.status IN ('completed', 'failed', 'stuck')
          OR (CASE NEW.status WHEN 'queued' THEN 0 WHEN 'dispatched' THEN 1 WHEN 'in_progress' THEN 2
                WHEN 'completed' THEN 3 WHEN 'failed' THEN 3 WHEN 'stuck' THEN 3 END)
             < (CASE OLD.status WHEN 'queued' THEN 0 WHEN 'dispatched' THEN 1 WHEN 'in_progress' THEN 2
                WHEN 'completed' THEN 3 WHEN 'failed' THEN 3 WHEN 'stuck' THEN 3 END)
          OR NEW.updated_at IS DISTINCT FROM now()
          OR (NEW.status = 'in_progress'
              AND (NEW.last_heartbeat IS NULL
                   OR (OLD.status <> 'in_progress'
                       AND NEW.last_heartbeat IS NOT DISTINCT FROM OLD.last_heartbeat)))
          OR NEW.heartbeat_expires_at IS DISTINCT FROM
             (CASE WHEN NEW.heartbeat_timeout IS NOT NULL AND NEW.last_heartbeat IS NOT NULL THEN
                 date_bin(LEAST(interval '1 minute', NEW.heartbeat_timeout / 2), NEW.last_heartbeat, TIMESTAMPTZ '2000-01-01 00:00:00+00')
                 + make_interval(secs => EXTRACT(EPOCH FROM NEW.heartbeat_timeout)::float8) END)
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
                           (CASE WHEN NEW.progress_timeout IS NOT NULL AND now() IS NOT NULL THEN
                               date_bin(LEAST(interval '1 minute', NEW.progress_timeout / 2), now(), TIMESTAMPTZ '2000-01-01 00:00:00+00')
                               + make_interval(secs => EXTRACT(EPOCH FROM NEW.progress_timeout)::float8) END))))
    EXECUTE FUNCTION sweeper_delegations_before();

-- An insert: version 7's condition.
DROP TRIGGER delegations_before_insert ON delegations;
CREATE TRIGGER delegations_before_insert
    BEFORE INSERT ON delegations
    FOR EACH ROW
    WHEN ((NEW.status = 'in_progress' AND NEW.last_heartbeat IS NULL)
          OR (NEW.status IN ('completed', 'failed', 'stuck') AND NEW.updated_at IS DISTINCT FROM now())
          OR NEW.heartbeat_expires_at IS DISTINCT FROM
             (CASE WHEN NEW.heartbeat_timeout IS NOT NULL AND NEW.last_heartbeat IS NOT NULL THEN
                 date_bin(LEAST(interval '1 minute', NEW.heartbeat_timeout / 2), NEW.last_heartbeat, TIMESTAMPTZ '2000-01-01 00:00:00+00')
                 + make_interval(secs => EXTRACT(EPOCH FROM NEW.heartbeat_timeout)::float8) END)
          -- section 5
          OR NEW.progress IS NOT NULL OR NEW.status IN ('in_progress', 'dispatched')
          OR NEW.queue_timeout IS NOT NULL
          OR NEW.progress_at IS NOT NULL OR NEW.dispatched_at IS NOT NULL
          OR NEW.progress_minute IS NOT NULL OR NEW.progress_expires_at IS NOT NULL
          OR NEW.queue_expires_at IS NOT NULL OR NEW.start_expires_at IS NOT NULL)
    EXECUTE FUNCTION sweeper_delegations_before();

-- A delete: version 3's condition (only terminal rows may be deleted).
DROP TRIGGER delegations_delete_guard ON delegations;
CREATE TRIGGER delegations_delete_guard
    BEFORE DELETE ON delegations
    FOR EACH ROW
    WHEN ((CASE OLD.status WHEN 'queued' THEN 0 WHEN 'dispatched' THEN 1 WHEN 'in_progress' THEN 2
                WHEN 'completed' THEN 3 WHEN 'failed' THEN 3 WHEN 'stuck' THEN 3 END) IS DISTINCT FROM 3)
    EXECUTE FUNCTION sweeper_delegations_delete_guard();
