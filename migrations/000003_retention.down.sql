-- Back to the version before 3: no finished_at, no deletes of any kind, the
-- row-level append-only trigger and the version 1 bookkeeping.
DROP FUNCTION IF EXISTS sweeper_prune(text[], interval, interval, interval);

DROP TRIGGER IF EXISTS delegation_events_append_only ON delegation_events;
CREATE OR REPLACE FUNCTION sweeper_delegation_events_append_only() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'delegation_events is append-only (refused %)', TG_OP
        USING ERRCODE = 'check_violation', CONSTRAINT = 'delegation_events_append_only',
              TABLE = 'delegation_events';
END
$$;
CREATE TRIGGER delegation_events_append_only
    BEFORE UPDATE OR DELETE ON delegation_events
    FOR EACH ROW
    EXECUTE FUNCTION sweeper_delegation_events_append_only();

DROP TRIGGER IF EXISTS delegations_delete_events ON delegations;
DROP FUNCTION IF EXISTS sweeper_delegations_delete_events();
DROP TRIGGER IF EXISTS delegations_no_truncate ON delegations;
DROP TRIGGER IF EXISTS delegation_events_no_truncate ON delegation_events;
DROP FUNCTION IF EXISTS sweeper_refuse_truncate();
DROP TRIGGER IF EXISTS delegations_delete_guard ON delegations;
DROP FUNCTION IF EXISTS sweeper_delegations_delete_guard();

DROP TRIGGER IF EXISTS delegations_touch_insert ON delegations;
CREATE OR REPLACE FUNCTION sweeper_delegations_touch() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    IF NEW.status = 'in_progress' AND (
        NEW.last_heartbeat IS NULL
        OR (TG_OP = 'UPDATE' AND OLD.status <> 'in_progress'
            AND NEW.last_heartbeat IS NOT DISTINCT FROM OLD.last_heartbeat)) THEN
        NEW.last_heartbeat := now();
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER delegations_touch_insert
    BEFORE INSERT ON delegations
    FOR EACH ROW
    WHEN (NEW.status = 'in_progress' AND NEW.last_heartbeat IS NULL)
    EXECUTE FUNCTION sweeper_delegations_touch();

DROP INDEX IF EXISTS idx_delegations_finished;
ALTER TABLE delegations DROP COLUMN IF EXISTS finished_at;

ALTER TABLE delegations RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor);
ALTER TABLE delegation_events RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_insert_scale_factor, autovacuum_analyze_scale_factor);
