-- The analysts' copy of the stream (SPEC "What is promised": Postgres converges
-- to the tables). Every write is safe to repeat: ledger rows are keyed by
-- (store_id, outlet_seq, line_no), stock_levels upserts are guarded by
-- (applied_seq, ver), and sink_offsets is written in the same transaction.

CREATE TABLE IF NOT EXISTS ledger (
    store_id        text        NOT NULL,
    outlet_seq      bigint      NOT NULL,
    line_no         integer     NOT NULL,
    event_id        uuid        NOT NULL,
    type            text        NOT NULL,
    sku             text        NOT NULL,
    qty             bigint      NOT NULL,
    effect          text        NOT NULL,
    unit_price_cents bigint,
    reason          text,
    ref             text,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    applied_at      timestamptz NOT NULL,
    committed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (store_id, outlet_seq, line_no)
);
CREATE INDEX IF NOT EXISTS ledger_store_sku ON ledger (store_id, sku, outlet_seq);

CREATE TABLE IF NOT EXISTS stock_levels (
    store_id    text        NOT NULL,
    sku         text        NOT NULL,
    on_hand     bigint      NOT NULL,
    reserved    bigint      NOT NULL DEFAULT 0,
    applied_seq bigint      NOT NULL,
    ver         bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (store_id, sku)
);

CREATE TABLE IF NOT EXISTS outlet_sync (
    store_id         text PRIMARY KEY,
    applied_seq      bigint      NOT NULL,
    highest_seq      bigint      NOT NULL,
    missing          bigint      NOT NULL DEFAULT 0,
    gaps             jsonb       NOT NULL DEFAULT '[]',
    duplicates       bigint      NOT NULL DEFAULT 0,
    conflicts        bigint      NOT NULL DEFAULT 0,
    events           bigint      NOT NULL DEFAULT 0,
    lag_p50_ms       double precision,
    lag_p99_ms       double precision,
    last_recorded_at timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS dead_letters (
    key         text PRIMARY KEY,
    kind        text        NOT NULL,
    store_id    text,
    reasons     jsonb       NOT NULL,
    event       jsonb,
    at          timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS sales_minute (
    store_id      text        NOT NULL,
    minute        timestamptz NOT NULL,
    units         bigint      NOT NULL,
    revenue_cents bigint      NOT NULL,
    events        bigint      NOT NULL,
    PRIMARY KEY (store_id, minute)
);

CREATE TABLE IF NOT EXISTS sink_offsets (
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint  NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (topic, partition)
);
