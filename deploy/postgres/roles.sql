-- sweeper: database roles, step 1 of 2. Run once, as a superuser (or a role
-- with CREATEROLE that can grant on the database and schema), connected to
-- the application database:
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -f deploy/postgres/roles.sql
-- Idempotent: safe to run again.
--
--   sweeper_owner   owns the schema objects; runs `sweeper migrate`.
--   sweeper_daemon  what the daemon, `sweeper --once`, `sweeper status` and
--                   `sweeper prune` log in as: reads and marks delegations,
--                   and, for the HTTP API and console the daemon serves,
--                   inserts and moves them and reads api_tokens. It never
--                   deletes (except through sweeper_prune) or writes tokens;
--                   `sweeper token` runs as the owner.
--
-- Set the passwords outside this file (psql: \password sweeper_owner), so they
-- stay out of shell history and server logs.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sweeper_owner') THEN
        CREATE ROLE sweeper_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sweeper_daemon') THEN
        -- max_conns (4) x replicas, plus room for `sweeper status`.
        CREATE ROLE sweeper_daemon LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
            CONNECTION LIMIT 20;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO sweeper_owner, sweeper_daemon',
                   current_database());
END
$$;

-- The schema: public here. The owner creates the tables in it; the daemon
-- only looks things up in it. (PostgreSQL 15 no longer lets PUBLIC create in
-- public; on older versions consider REVOKE CREATE ON SCHEMA public FROM PUBLIC.)
GRANT USAGE, CREATE ON SCHEMA public TO sweeper_owner;
GRANT USAGE ON SCHEMA public TO sweeper_daemon;

-- A runaway statement or an abandoned transaction must not hold row locks
-- that live workers wait on. A batch of 1000 rows takes milliseconds.
ALTER ROLE sweeper_daemon SET statement_timeout = '2min';
ALTER ROLE sweeper_daemon SET idle_in_transaction_session_timeout = '5min';
