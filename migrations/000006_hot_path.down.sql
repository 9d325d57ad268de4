-- Back to version 5: the guard, bookkeeping and expiry triggers of versions
-- 1, 3 and 4 and the per-row audit trigger of version 2, as they were.
DROP TRIGGER delegations_after_update ON delegations;
DROP TRIGGER delegations_after_insert ON delegations;
DROP TRIGGER delegations_before_insert ON delegations;
DROP TRIGGER delegations_before_update ON delegations;
DROP FUNCTION sweeper_delegations_after();
DROP FUNCTION sweeper_delegations_before();

CREATE FUNCTION sweeper_delegations_guard() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF sweeper_status_rank(OLD.status) = 3 THEN
        RAISE EXCEPTION 'delegation %: status % is terminal, the row is frozen (refused update to %)',
            OLD.delegation_id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'delegations_terminal_frozen',
                  TABLE = 'delegations';
    END IF;
    IF sweeper_status_rank(NEW.status) <= sweeper_status_rank(OLD.status) THEN
        RAISE EXCEPTION 'delegation %: status may only move forward, refused % -> %',
            OLD.delegation_id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'delegations_forward_only',
                  TABLE = 'delegations';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER delegations_guard
    BEFORE UPDATE ON delegations
    FOR EACH ROW
    WHEN (sweeper_status_rank(OLD.status) = 3
          OR sweeper_status_rank(NEW.status) < sweeper_status_rank(OLD.status))
    EXECUTE FUNCTION sweeper_delegations_guard();

CREATE FUNCTION sweeper_delegations_touch() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'UPDATE' OR sweeper_status_rank(NEW.status) = 3 THEN
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

CREATE TRIGGER delegations_touch
    BEFORE UPDATE ON delegations
    FOR EACH ROW
    WHEN (NEW.updated_at IS DISTINCT FROM now()
          OR (NEW.status = 'in_progress'
              AND (NEW.last_heartbeat IS NULL
                   OR (OLD.status <> 'in_progress'
                       AND NEW.last_heartbeat IS NOT DISTINCT FROM OLD.last_heartbeat))))
    EXECUTE FUNCTION sweeper_delegations_touch();

CREATE TRIGGER delegations_touch_insert
    BEFORE INSERT ON delegations
    FOR EACH ROW
    WHEN ((NEW.status = 'in_progress' AND NEW.last_heartbeat IS NULL)
          OR (sweeper_status_rank(NEW.status) = 3 AND NEW.updated_at IS DISTINCT FROM now()))
    EXECUTE FUNCTION sweeper_delegations_touch();

CREATE FUNCTION sweeper_delegations_heartbeat_expiry() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.heartbeat_expires_at := sweeper_heartbeat_expiry(NEW.last_heartbeat, NEW.heartbeat_timeout);
    RETURN NEW;
END
$$;

CREATE TRIGGER delegations_touch_expiry
    BEFORE UPDATE ON delegations
    FOR EACH ROW
    WHEN (NEW.heartbeat_expires_at IS DISTINCT FROM
          sweeper_heartbeat_expiry(NEW.last_heartbeat, NEW.heartbeat_timeout))
    EXECUTE FUNCTION sweeper_delegations_heartbeat_expiry();

CREATE TRIGGER delegations_touch_insert_expiry
    BEFORE INSERT ON delegations
    FOR EACH ROW
    WHEN (NEW.heartbeat_expires_at IS DISTINCT FROM
          sweeper_heartbeat_expiry(NEW.last_heartbeat, NEW.heartbeat_timeout))
    EXECUTE FUNCTION sweeper_delegations_heartbeat_expiry();

CREATE FUNCTION sweeper_delegations_audit() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail,
                                   caller_id, callee_id)
    VALUES (
        NEW.delegation_id,
        CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
        NEW.status,
        COALESCE(NULLIF(current_setting('sweeper.reason', true), ''), NEW.stuck_reason),
        COALESCE(NULLIF(current_setting('sweeper.actor', true), ''), 'db:' || current_user),
        NULLIF(current_setting('sweeper.detail', true), '')::jsonb,
        NEW.caller_id,
        NEW.callee_id
    );
    RETURN NULL;
END
$$;

CREATE TRIGGER delegations_audit_insert
    AFTER INSERT ON delegations
    FOR EACH ROW
    EXECUTE FUNCTION sweeper_delegations_audit();

CREATE TRIGGER delegations_audit_update
    AFTER UPDATE OF status ON delegations
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION sweeper_delegations_audit();
