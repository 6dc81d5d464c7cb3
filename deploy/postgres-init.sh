#!/bin/bash
# Runs once, on an empty data directory (docker-entrypoint-initdb.d). The group
# roles retail_sink / retail_analyst come from sink/migrations/0002_roles.sql;
# they are made here too so the analyst login can exist before the first migration.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" \
  -v analyst_password="$ANALYST_PASSWORD" <<'SQL'
CREATE ROLE retail_sink NOLOGIN;
CREATE ROLE retail_analyst NOLOGIN;
CREATE ROLE analyst LOGIN PASSWORD :'analyst_password' IN ROLE retail_analyst;
-- nobody but the owner creates objects in public (PostgreSQL 15+ default, made explicit)
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
# other hosts: TLS and a SCRAM password only (no plaintext, no trust)
cat >> "$PGDATA/pg_hba.conf" <<'HBA'
hostssl all all 0.0.0.0/0 scram-sha-256
HBA
sed -i '/^host all all all scram-sha-256/d' "$PGDATA/pg_hba.conf"
