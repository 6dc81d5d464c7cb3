-- Roles (issue 7): the sink writes its own tables and nothing else; analysts
-- read. Both are NOLOGIN group roles: a deployment creates its own login users
-- (with passwords it manages) and grants them one of these roles, e.g.
--   CREATE ROLE sink_worker LOGIN PASSWORD '…' IN ROLE retail_sink;
-- The worker switches to retail_sink (SET ROLE) after running the migrations,
-- so the writes of every batch run with exactly these privileges.
--
-- Roles are cluster-wide while migrations run per database: create them only
-- if missing, and tolerate a concurrent migration of another database.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'retail_sink') THEN
        CREATE ROLE retail_sink NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'retail_analyst') THEN
        CREATE ROLE retail_analyst NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO retail_sink, retail_analyst;

-- The sink: no DDL (it owns nothing), no DELETE, and the ledger is append-only.
-- TEMP (for its COPY staging tables) comes with PUBLIC's default privileges.
GRANT SELECT, INSERT ON ledger TO retail_sink;
GRANT SELECT, INSERT, UPDATE ON stock_levels, outlet_sync, sales_minute, dead_letters,
    sink_offsets TO retail_sink;

-- Analysts: read-only, today's tables and any a later migration adds.
GRANT SELECT ON ledger, stock_levels, outlet_sync, sales_minute, dead_letters, sink_offsets,
    schema_version TO retail_analyst;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO retail_analyst;
