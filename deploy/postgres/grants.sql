-- sweeper: database roles, step 2 of 2. Run as sweeper_owner (or a
-- superuser) after every `sweeper migrate up`, since a migration may create
-- or re-create tables:
--   psql "$OWNER_URL" -v ON_ERROR_STOP=1 -f deploy/postgres/grants.sql
-- Idempotent.
--
-- The trigger functions of the schema (forward-only guard, updated_at
-- bookkeeping, audit) are NOT SECURITY DEFINER: they run with the privileges
-- of the role whose statement fired them. So the audit trigger's INSERT into
-- delegation_events runs as sweeper_daemon, which therefore needs INSERT
-- there; it gets no UPDATE or DELETE on the log (an append-only trigger
-- refuses those anyway) and no DELETE or TRUNCATE on delegations (it prunes
-- through sweeper_prune, below). Only the
-- owner can disable a trigger (the documented repair of a frozen row).

-- The sweep: SELECT ... FOR UPDATE SKIP LOCKED, then
-- UPDATE delegations SET status = 'stuck', stuck_reason = ..., updated_at = now()
-- (the sweep sets updated_at itself so that the bookkeeping trigger is not
-- called per row; what a BEFORE trigger sets needs no column privilege).
GRANT SELECT ON delegations TO sweeper_daemon;
GRANT UPDATE (status, stuck_reason, updated_at) ON delegations TO sweeper_daemon;

-- The HTTP API and the console (api.listen; docs/api.md, "Database roles"),
-- served by the same process on the same DSN: POST /v1/delegations inserts
-- exactly these columns (the others take their defaults; since schema 4 an
-- insert also writes heartbeat_timeout, and attempt and retry_of when it
-- continues a failed or stuck idempotency key; since schema 8 the retry
-- policy, and not_before on a retry), claims and transitions also
-- write the result and error, heartbeats touch last_heartbeat and progress. Granted to
-- the daemon role even when api.listen is unset: one role for the one
-- process, and each write still passes the guard trigger, which refuses
-- every backward move and any change to a terminal row, whoever writes.
-- Still refused: DELETE, TRUNCATE, and UPDATE of the ids, the preview, the
-- deadline, created_at and finished_at.
-- Since schema 7 an insert also writes the progress, queue and start
-- timeouts (and a retry the progress its next attempt inherits), and a
-- heartbeat writes progress; progress_at and the rules' index keys are set
-- by the BEFORE trigger (no privilege needed).
GRANT INSERT (delegation_id, caller_id, callee_id, task_preview, status, idempotency_key, deadline,
              heartbeat_timeout, attempt, retry_of,
              progress_timeout, queue_timeout, start_timeout, progress,
              not_before, max_attempts, retry_backoff, retry_backoff_max, retry_on)
    ON delegations TO sweeper_daemon;
-- The retry policy's next attempts (schema 8) are inserted by
-- sweeper_insert_retries, a SECURITY DEFINER function owned by the schema
-- owner that the audit calls for whichever role moved the rows: it copies
-- columns no writer may set (progress, the wait timeouts). It acts only on
-- rows their policy retries, so it needs no grant.
-- A heartbeat that changes its progress sets progress_at, progress_minute
-- and progress_expires_at itself (schema 11), to the values the bookkeeping
-- trigger would give; any other value and the trigger sets them, so the
-- daemon cannot move progress_at to anything but now().
GRANT UPDATE (result_preview, error_detail, last_heartbeat, progress,
              progress_at, progress_minute, progress_expires_at) ON delegations TO sweeper_daemon;

-- Bearer tokens and console sign-ins are checked against api_tokens: read
-- only. Tokens are created and revoked with `sweeper token` as the owner
-- role (an administrator's act): a daemon whose credentials leak cannot mint
-- a token or un-revoke one.
GRANT SELECT ON api_tokens TO sweeper_daemon;

-- The audit trigger's insert.
GRANT SELECT, INSERT ON delegation_events TO sweeper_daemon;
-- delegation_events.id is an identity column: PostgreSQL draws its values
-- without checking privileges on the sequence, so this grant is not needed
-- today; it keeps the insert working if the column ever becomes a serial
-- (nextval() default). pg_get_serial_sequence finds the name.
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO sweeper_daemon',
                   pg_get_serial_sequence('delegation_events', 'id'));
END
$$;

-- Retention (the daemon's pruner and `sweeper prune`): the daemon role gets
-- no DELETE on either table. It claims old terminal rows with SELECT ...
-- FOR UPDATE SKIP LOCKED (the UPDATE grant above covers the lock), reads their
-- events for the archive (SELECT above), and deletes through
-- sweeper_prune, a SECURITY DEFINER function owned by the schema owner that
-- deletes only terminal delegations older than a retention of at least one
-- hour, with their events. EXECUTE on it is all pruning needs.
GRANT EXECUTE ON FUNCTION sweeper_prune(text[], interval, interval, interval) TO sweeper_daemon;

-- The daemon checks the schema version before it starts and in /readyz.
GRANT SELECT ON sweeper_schema_migrations TO sweeper_daemon;
