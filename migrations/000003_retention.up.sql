-- sweeper schema, version 3: retention. A terminal delegation records when it
-- became terminal (finished_at, set by the database for every writer); the
-- pruner deletes terminal delegations older than their status's retention,
-- and their events go with them; nothing else can be deleted. See
-- docs/design.md, "Retention".

-- finished_at: the moment the row became terminal, NULL before. A terminal
-- row is frozen (the guard refuses any UPDATE of it), so its updated_at,
-- which every UPDATE sets to now() (the writer or the bookkeeping trigger),
-- stops at the moment it became terminal: finished_at is that, computed by
-- the database for every writer, and no writer can set it. As a generated
-- column it costs a writer no trigger call. (A repair of a terminal row with
-- the guard disabled moves updated_at, and so finished_at, later: the row is
-- kept longer, the safe way to be wrong.) Adding it fills it for every
-- existing row, in the table rewrite that ADD COLUMN ... STORED does.
ALTER TABLE delegations ADD COLUMN finished_at timestamptz
    GENERATED ALWAYS AS (
        CASE WHEN status IN ('completed', 'failed', 'stuck') THEN updated_at END) STORED;

-- The pruner's index: terminal rows only, by status and age. finished_at is
-- NULL while a row is in flight and set once, when it becomes terminal (an
-- update that changes status, so not HOT anyway): no heartbeat ever changes
-- an indexed column because of this index. Never index updated_at or
-- last_heartbeat: every heartbeat would then write new index entries.
CREATE INDEX idx_delegations_finished
    ON delegations (status, finished_at)
    WHERE finished_at IS NOT NULL;

-- Bookkeeping, version 3: as version 1 (updated_at on every UPDATE, entering
-- in_progress is a heartbeat), and a row inserted terminal gets updated_at =
-- now(), so that its finished_at is the moment of the insert whatever the
-- writer sent. (A load of historical rows that must keep their times runs
-- with triggers off, as the owner.)
CREATE OR REPLACE FUNCTION sweeper_delegations_touch() RETURNS trigger
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

-- A terminal insert with the default updated_at (now()) calls nothing.
DROP TRIGGER delegations_touch_insert ON delegations;
CREATE TRIGGER delegations_touch_insert
    BEFORE INSERT ON delegations
    FOR EACH ROW
    WHEN ((NEW.status = 'in_progress' AND NEW.last_heartbeat IS NULL)
          OR (sweeper_status_rank(NEW.status) = 3 AND NEW.updated_at IS DISTINCT FROM now()))
    EXECUTE FUNCTION sweeper_delegations_touch();

-- Only a terminal delegation can be deleted, by anyone. The WHEN clause is
-- the rule; the function only raises.
CREATE FUNCTION sweeper_delegations_delete_guard() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'delegation %: status % is not terminal, the row cannot be deleted',
        OLD.delegation_id, OLD.status
        USING ERRCODE = 'check_violation', CONSTRAINT = 'delegations_delete_terminal_only',
              TABLE = 'delegations';
END
$$;

CREATE TRIGGER delegations_delete_guard
    BEFORE DELETE ON delegations
    FOR EACH ROW
    WHEN (sweeper_status_rank(OLD.status) IS DISTINCT FROM 3)
    EXECUTE FUNCTION sweeper_delegations_delete_guard();

-- TRUNCATE skips row triggers, so it would delete live rows: refused on both
-- tables (an owner who must empty them drops the schema: migrate down).
CREATE FUNCTION sweeper_refuse_truncate() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION '% cannot be truncated: delete terminal delegations instead (sweeper prune)', TG_TABLE_NAME
        USING ERRCODE = 'check_violation', CONSTRAINT = TG_TABLE_NAME || '_no_truncate',
              TABLE = TG_TABLE_NAME;
END
$$;

CREATE TRIGGER delegations_no_truncate
    BEFORE TRUNCATE ON delegations
    FOR EACH STATEMENT
    EXECUTE FUNCTION sweeper_refuse_truncate();

CREATE TRIGGER delegation_events_no_truncate
    BEFORE TRUNCATE ON delegation_events
    FOR EACH STATEMENT
    EXECUTE FUNCTION sweeper_refuse_truncate();

-- The sanctioned path for events: a delegation's events leave with it. After
-- any DELETE of delegations (only terminal rows get that far), this trigger
-- deletes the events of the rows deleted, in the same statement, so the
-- same transaction. It is the only DELETE of delegation_events the
-- append-only trigger lets through: one issued from inside a trigger
-- (pg_trigger_depth() > 1), which only the table owner can create.
CREATE FUNCTION sweeper_delegations_delete_events() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- = ANY(ARRAY(...)): an index scan of (delegation_id, id) whatever the
    -- log's size. A join with the transition table (no statistics) was
    -- planned as a scan of the whole log: 221 ms for a batch of 1000 at
    -- 20k rows.
    DELETE FROM delegation_events AS e
    WHERE e.delegation_id = ANY(ARRAY(SELECT d.delegation_id FROM deleted AS d));
    RETURN NULL;
END
$$;

CREATE TRIGGER delegations_delete_events
    AFTER DELETE ON delegations
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT
    EXECUTE FUNCTION sweeper_delegations_delete_events();

-- The audit log stays append-only: every UPDATE, and every DELETE but the
-- one above, is refused. A statement trigger (one call per statement, not
-- per row), so the events of a pruned batch cost no PL/pgSQL call each.
CREATE OR REPLACE FUNCTION sweeper_delegation_events_append_only() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'DELETE' AND pg_trigger_depth() > 1 THEN
        RETURN NULL; -- the events of deleted delegations (sweeper_delegations_delete_events)
    END IF;
    RAISE EXCEPTION 'delegation_events is append-only (refused %); events are deleted only with their delegation', TG_OP
        USING ERRCODE = 'check_violation', CONSTRAINT = 'delegation_events_append_only',
              TABLE = 'delegation_events';
END
$$;

DROP TRIGGER delegation_events_append_only ON delegation_events;
CREATE TRIGGER delegation_events_append_only
    BEFORE UPDATE OR DELETE ON delegation_events
    FOR EACH STATEMENT
    EXECUTE FUNCTION sweeper_delegation_events_append_only();

-- The pruner's delete: at most the delegations named in ids that are
-- terminal and older than their status's retention (NULL keeps a status
-- forever; a retention under one hour is refused), with their events.
-- SECURITY DEFINER, owned by the schema owner: the daemon role gets EXECUTE
-- on it and no DELETE on either table, so what it can delete is exactly what
-- this function deletes. search_path is pinned, as a SECURITY DEFINER
-- function must; jit is off (the planner's estimate of a batch's cost crosses
-- jit_above_cost, and compiling took longer than the batch). Returns one row
-- per status deleted, with the events.
CREATE FUNCTION sweeper_prune(ids text[], completed interval, failed interval, stuck interval)
    RETURNS TABLE (status text, delegations bigint, events bigint)
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    SET jit = off
AS $$
BEGIN
    IF completed < interval '1 hour' OR failed < interval '1 hour' OR stuck < interval '1 hour' THEN
        RAISE EXCEPTION 'sweeper_prune: a retention must be at least 1 hour or NULL (keep forever), got completed %, failed %, stuck %',
            completed, failed, stuck
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    WITH gone AS (
        DELETE FROM delegations AS d
        WHERE d.delegation_id = ANY(ids)
          AND d.finished_at IS NOT NULL
          AND ((d.status = 'completed' AND d.finished_at < now() - completed)
            OR (d.status = 'failed' AND d.finished_at < now() - failed)
            OR (d.status = 'stuck' AND d.finished_at < now() - stuck))
        RETURNING d.delegation_id, d.status
    ), counted AS (
        SELECT g.status, count(*) AS delegations,
               sum((SELECT count(*) FROM delegation_events AS e
                    WHERE e.delegation_id = g.delegation_id)) AS events
        FROM gone AS g
        GROUP BY g.status
    )
    SELECT c.status, c.delegations, c.events::bigint FROM counted AS c;
END
$$;

REVOKE ALL ON FUNCTION sweeper_prune(text[], interval, interval, interval) FROM PUBLIC;

-- Autovacuum for the heartbeat churn (docs/design.md, "Autovacuum"). Each
-- heartbeat leaves a dead row version, in the few pages of in-flight rows;
-- pruning leaves dead rows in old pages. The default trigger (20% of the
-- table dead) waits, on a table of years of history, for millions of dead
-- versions while the in-flight pages fill. Vacuum reads only pages that are
-- not all-visible (the in-flight and pruned ones), so vacuuming often costs
-- little. The log gets inserts and batched deletes: vacuum after 2% of it
-- is inserted keeps its visibility map current for index-only scans.
ALTER TABLE delegations SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE delegation_events SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02);
