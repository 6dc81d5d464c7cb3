"""PostgreSQL: the schema, its migrations, and the idempotent batch writer."""
