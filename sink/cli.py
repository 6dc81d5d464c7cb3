"""``python -m sink migrate | reconcile | run | status``: the operator's side of the sink."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Sequence

import asyncpg
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from app.logging_setup import quiet_libraries
from app.settings import Settings
from sink.migrate import migrate, migrations
from sink.reconcile import Difference, reconcile
from sink.service import main as run_sink

console = Console()


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    if args.database_url:
        overrides["database_url"] = SecretStr(args.database_url)
    if getattr(args, "app_id", None):
        overrides["app_id"] = args.app_id
    if getattr(args, "brokers", None):
        overrides["kafka_brokers"] = args.brokers
    return Settings(**overrides)  # type: ignore[arg-type]


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    applied = asyncio.run(migrate(settings.database_url.get_secret_value()))
    table = Table(title="schema migrations")
    table.add_column("version", justify="right")
    table.add_column("file")
    table.add_column("state")
    for version, name, _ in migrations():
        table.add_row(str(version), name, "[green]applied now" if name in applied else "present")
    console.print(table)
    console.print(f"{len(applied)} migration(s) applied; the schema is up to date.")
    return 0


def _difference_table(diffs: Sequence[Difference], limit: int) -> Table:
    table = Table(title=f"{len(diffs)} difference(s): stock table vs stock_levels vs ledger")
    for col in ("store", "sku", "table", "stock_levels", "ledger Σ", "what"):
        table.add_column(col, justify="right" if col in ("table", "stock_levels") else "left")
    for d in diffs[:limit]:
        table.add_row(d.store_id, d.sku, str(d.table), str(d.stock_levels), str(d.ledger), d.reason)
    if len(diffs) > limit:
        table.caption = f"… and {len(diffs) - limit} more"
    return table


def cmd_reconcile(args: argparse.Namespace) -> int:
    settings = _settings(args)
    deadline = time.monotonic() + args.wait
    while True:
        diffs = asyncio.run(reconcile(settings))
        if not diffs or time.monotonic() >= deadline:
            break
        time.sleep(1.0)  # the stream may still be draining: look again until --wait runs out
    if not diffs:
        console.print("[green]reconcile: 0 differences[/] (stock table = stock_levels = ledger)")
        return 0
    console.print(_difference_table(diffs, args.limit))
    console.print(
        "[red]reconcile: differences found.[/] If the stream is still running, retry with "
        "--wait 30; if they persist, check the sink's log and retail_sink_errors_total."
    )
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    quiet_libraries("warning")
    return run_sink(settings)


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def fetch() -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        conn = await asyncpg.connect(settings.database_url.get_secret_value())
        try:
            sync = await conn.fetch(
                "SELECT store_id, applied_seq, missing, duplicates, events,"
                " extract(epoch FROM clock_timestamp() - updated_at)::float8 AS age_s,"
                " (SELECT extract(epoch FROM max(committed_at - recorded_at))::float8"
                "  FROM ledger l WHERE l.store_id = o.store_id"
                "  AND l.committed_at > clock_timestamp() - interval '1 minute') AS lag_s"
                " FROM outlet_sync o ORDER BY store_id"
            )
            offsets = await conn.fetch(
                'SELECT topic, partition, "offset", updated_at FROM sink_offsets ORDER BY 1, 2'
            )
        finally:
            await conn.close()
        return sync, offsets

    sync, offsets = asyncio.run(fetch())
    table = Table(title="outlet_sync (what Postgres has)")
    for col in ("store", "applied seq", "missing", "duplicates", "events", "updated", "max lag 1m"):
        table.add_column(col, justify="left" if col == "store" else "right")
    for r in sync:
        lag = "-" if r["lag_s"] is None else f"{r['lag_s'] * 1000:.0f} ms"
        table.add_row(
            r["store_id"], str(r["applied_seq"]), str(r["missing"]), str(r["duplicates"]),
            str(r["events"]), f"{r['age_s']:.1f} s ago", lag,
        )  # fmt: skip
    console.print(table)
    off = Table(title="sink_offsets")
    for col in ("topic", "partition", "offset", "updated_at"):
        off.add_column(col)
    for r in offsets:
        off.add_row(r["topic"], str(r["partition"]), str(r["offset"]), str(r["updated_at"]))
    console.print(off)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sink",
        description="PostgreSQL sink: schema migrations, reconciliation, the sink process, status. "
        "Settings come from RETAIL_* variables (RETAIL_DATABASE_URL, RETAIL_KAFKA_BROKERS, "
        "RETAIL_APP_ID); the options below override them.",
    )
    p.add_argument("--database-url", help="PostgreSQL DSN (default: RETAIL_DATABASE_URL)")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("migrate", help="apply the SQL migrations not applied yet (idempotent)")
    m.set_defaults(func=cmd_migrate)
    r = sub.add_parser(
        "reconcile",
        help="compare the live stock table with stock_levels and the ledger; exit 1 on any "
        "difference",
    )
    r.add_argument("--app-id", help="the Faust app id whose stock table to read")
    r.add_argument("--brokers", help="Kafka bootstrap servers (default: RETAIL_KAFKA_BROKERS)")
    r.add_argument(
        "--wait", type=float, default=0.0, help="seconds to keep retrying while differences remain"
    )
    r.add_argument("--limit", type=int, default=50, help="rows of differences to print")
    r.set_defaults(func=cmd_reconcile)
    run = sub.add_parser(
        "run",
        help="the sink as its own process (set RETAIL_SINK_ENABLED=false on the workers); "
        "SIGTERM finishes the batch in hand and stops",
    )
    run.add_argument("--app-id", help="the Faust app id whose applied topic to read")
    run.add_argument("--brokers", help="Kafka bootstrap servers (default: RETAIL_KAFKA_BROKERS)")
    run.set_defaults(func=cmd_run)
    s = sub.add_parser("status", help="what Postgres has per store, and the sink's offsets")
    s.set_defaults(func=cmd_status)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code
