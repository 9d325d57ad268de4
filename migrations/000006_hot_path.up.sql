-- sweeper schema, version 6: a status change costs what the work costs
-- (issue 19; the profile is in docs/design.md, "The hot path").
--
-- Before this version a status change ran, per row, up to three WHEN-guarded
-- BEFORE triggers (guard, touch, expiry) and an AFTER ROW audit trigger whose
-- single-row INSERT into delegation_events fired that table's statement-level
-- notify trigger once per event: a sweep batch of 1000 rows ran 1000 audit
-- INSERT statements and 1000 notify triggers. The audit trigger was two
-- thirds of a stuck transition's server time.
--
-- Now:
--   * one BEFORE ROW function, sweeper_delegations_before(), holds every rule
--     that shapes a row (lifecycle guard, bookkeeping, heartbeat expiry), in
--     the order they apply; its triggers' WHEN clauses call it only when it
--     would refuse or change the row, so a sweep or a heartbeat that already
--     sets updated_at = now() calls no function per row;
--   * one AFTER STATEMENT function, sweeper_delegations_after(), appends the
--     audit events of a whole statement with one INSERT ... SELECT from the
--     statement's transition tables, so a batch of 1000 status changes is one
--     INSERT and one notification (delegation_events_notify fires once per
--     INSERT statement, as before). The notification is still sent at the
--     commit of the transaction that wrote the events.
-- Every guarantee stays: one event per status change by any writer, in the
-- same transaction; terminal rows frozen; statuses forward only; heartbeats
-- change no indexed column (HOT).
--
-- Later migrations extend these two functions with CREATE OR REPLACE; each
-- names itself in the function's header comment.

-- The statuses, ranks and rules are those of versions 1 to 5; only where they
-- run changes.
DROP TRIGGER delegations_guard ON delegations;
DROP TRIGGER delegations_touch ON delegations;
DROP TRIGGER delegations_touch_insert ON delegations;
DROP TRIGGER delegations_touch_expiry ON delegations;
DROP TRIGGER delegations_touch_insert_expiry ON delegations;
DROP TRIGGER delegations_audit_insert ON delegations;
DROP TRIGGER delegations_audit_update ON delegations;
DROP FUNCTION sweeper_delegations_guard();
DROP FUNCTION sweeper_delegations_touch();
DROP FUNCTION sweeper_delegations_heartbeat_expiry();
DROP FUNCTION sweeper_delegations_audit();

-- What happens to a row before it is written, by any writer.
-- Last redefined by: migration 000006 (hot path).
CREATE FUNCTION sweeper_delegations_before() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- 1. The lifecycle (ledger/status.go). A terminal row is frozen: any
    --    UPDATE of it is refused. A status moves only to a higher rank. An
    --    unknown status has no rank and is left to the CHECK constraint. An
    --    operator who must repair a row disables this trigger explicitly
    --    (owner only, docs/operations.md).
    IF TG_OP = 'UPDATE' THEN
        IF sweeper_status_rank(OLD.status) = 3 THEN
            RAISE EXCEPTION 'delegation %: status % is terminal, the row is frozen (refused update to %)',
                OLD.delegation_id, OLD.status, NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'delegations_terminal_frozen',
                      TABLE = 'delegations';
        END IF;
        IF sweeper_status_rank(NEW.status) < sweeper_status_rank(OLD.status) THEN
            RAISE EXCEPTION 'delegation %: status may only move forward, refused % -> %',
                OLD.delegation_id, OLD.status, NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'delegations_forward_only',
                      TABLE = 'delegations';
        END IF;
    END IF;

    -- 2. Bookkeeping. Every UPDATE sets updated_at; a row inserted terminal
    --    gets updated_at = now() too. finished_at, a generated column, is
    --    updated_at once the row is terminal: the moment it became terminal.
    IF TG_OP = 'UPDATE' OR sweeper_status_rank(NEW.status) = 3 THEN
        NEW.updated_at := now();
    END IF;

    -- 3. Entering in_progress is a heartbeat (unless the writer sets
    --    last_heartbeat itself), so a row heartbeated while queued does not
    --    enter in_progress already stale; an in_progress row never loses its
    --    heartbeat.
    IF NEW.status = 'in_progress' AND (
        NEW.last_heartbeat IS NULL
        OR (TG_OP = 'UPDATE' AND OLD.status <> 'in_progress'
            AND NEW.last_heartbeat IS NOT DISTINCT FROM OLD.last_heartbeat)) THEN
        NEW.last_heartbeat := now();
    END IF;

    -- 4. The heartbeat expiry bin of a row with its own timeout (version 4):
    --    moves once a bin, so heartbeats within a bin stay HOT updates.
    NEW.heartbeat_expires_at := sweeper_heartbeat_expiry(NEW.last_heartbeat, NEW.heartbeat_timeout);

    RETURN NEW;
END
$$;

-- The WHEN clauses are the union of the conditions under which the function
-- refuses or changes the row (section by section above); PostgreSQL inlines
-- sweeper_status_rank and sweeper_heartbeat_expiry into them. A legal update
-- that already sets updated_at = now() and moves no heartbeat bin (a sweep's
-- stuck transition, the ledger's transitions, a heartbeat) calls no
-- function at all. A migration that extends the function extends these.
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
             sweeper_heartbeat_expiry(NEW.last_heartbeat, NEW.heartbeat_timeout))
    EXECUTE FUNCTION sweeper_delegations_before();

CREATE TRIGGER delegations_before_insert
    BEFORE INSERT ON delegations
    FOR EACH ROW
    WHEN ((NEW.status = 'in_progress' AND NEW.last_heartbeat IS NULL)
          OR (sweeper_status_rank(NEW.status) = 3 AND NEW.updated_at IS DISTINCT FROM now())
          OR NEW.heartbeat_expires_at IS DISTINCT FROM
             sweeper_heartbeat_expiry(NEW.last_heartbeat, NEW.heartbeat_timeout))
    EXECUTE FUNCTION sweeper_delegations_before();

-- What happens after a statement that inserted or updated delegations: one
-- audit event per status change (an insert is a change from nothing), with
-- one INSERT for the whole statement. Writers name themselves and their
-- reason with transaction-local settings, as in version 1:
--   SELECT set_config('sweeper.actor', 'billing-api', true),
--          set_config('sweeper.reason', 'customer cancelled', true);
-- Without them the actor is the database role and the reason the
-- stuck_reason.
--
-- The update's transition tables are read side by side, not joined:
-- PostgreSQL appends a row's old and new version to them together, so the
-- n-th old row and the n-th new row are the same row, whatever its key. A
-- join on delegation_id measured 25% slower per event (a merge join that
-- sorts both sides by a collated text key) and would lose the event of a
-- row whose id a writer changed. unnest of several arrays zips them.
--
-- A statement that changed no status (a heartbeat, most often) costs two
-- array comparisons and appends nothing: no event, no notification.
-- Last redefined by: migration 000006 (hot path).
CREATE FUNCTION sweeper_delegations_after() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    actor  text;
    reason text;
    detail jsonb;
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
    --    order. delegation_events_notify then sends one notification for
    --    the INSERT, at commit.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail,
                                       caller_id, callee_id)
        SELECT n.delegation_id, NULL, n.status, COALESCE(reason, n.stuck_reason), actor, detail,
               n.caller_id, n.callee_id
        FROM new_rows AS n;
    ELSE
        INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, detail,
                                       caller_id, callee_id)
        SELECT c.delegation_id, c.from_status, c.to_status, COALESCE(reason, c.stuck_reason), actor, detail,
               c.caller_id, c.callee_id
        FROM unnest(ARRAY(SELECT o.status FROM old_rows AS o),
                    ARRAY(SELECT n.delegation_id FROM new_rows AS n),
                    ARRAY(SELECT n.status FROM new_rows AS n),
                    ARRAY(SELECT n.stuck_reason FROM new_rows AS n),
                    ARRAY(SELECT n.caller_id FROM new_rows AS n),
                    ARRAY(SELECT n.callee_id FROM new_rows AS n))
             AS c(from_status, delegation_id, to_status, stuck_reason, caller_id, callee_id)
        WHERE c.to_status IS DISTINCT FROM c.from_status;
    END IF;
    RETURN NULL;
END
$$;

-- Transition tables need one trigger per event (and no column list, so the
-- UPDATE trigger fires for every UPDATE statement; step 1 returns at once
-- when no status changed).
CREATE TRIGGER delegations_after_insert
    AFTER INSERT ON delegations
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION sweeper_delegations_after();

CREATE TRIGGER delegations_after_update
    AFTER UPDATE ON delegations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION sweeper_delegations_after();
