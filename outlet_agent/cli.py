"""``python -m outlet_agent``: run the agent, look at its log, replay it, manage tokens.

Every command reads the ``RETAIL_*`` settings (``RETAIL_STORE_ID`` and
``RETAIL_DATA_DIR`` name the log file ``<data_dir>/outlet-<store>.sqlite``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sqlite3
import sys
import time
from collections.abc import Sequence

import httpx
import orjson
from rich.console import Console
from rich.table import Table

from outlet_agent.config import OutletSettings, load_settings
from outlet_agent.log import open_sync
from outlet_agent.tokens import add_token, list_tokens, revoke_tokens

console = Console()
err = Console(stderr=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m outlet_agent",
        description=(
            "The store's outlet agent: takes events from POS terminals over HTTP, makes "
            "them durable in a local SQLite log and forwards them to Kafka in order. "
            "Configured by RETAIL_* environment variables (RETAIL_STORE_ID, "
            "RETAIL_DATA_DIR, RETAIL_KAFKA_BROKERS, RETAIL_OUTLET_PORT, ...)."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="serve the terminals' API and forward the log to Kafka",
        description="Serve POST /v1/events, GET /v1/stock/{sku}, /v1/status, /health, "
        "/metrics and /openapi.json on RETAIL_OUTLET_HOST:RETAIL_OUTLET_PORT, and "
        "forward the log to RETAIL_EVENTS_TOPIC until stopped (SIGTERM/Ctrl-C).",
    )
    run.add_argument("--host", help="listen address (default: RETAIL_OUTLET_HOST)")
    run.add_argument("--port", type=int, help="listen port (default: RETAIL_OUTLET_PORT)")
    run.add_argument("--no-log", action="store_true", help=argparse.SUPPRESS)  # bench only

    status = sub.add_parser(
        "status",
        help="show the log: last seq, forwarded seq, backlog, oldest unsent event",
        description="Read the log file directly (works with the agent stopped) and, if "
        "the agent answers, whether it is connected to the broker.",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")

    replay = sub.add_parser(
        "replay",
        help="send retained events again to Kafka, from a seq on",
        description="Re-send retained events with seq >= --from-seq to the events topic, "
        "with their original event_id and outlet_seq: the centre drops those it already "
        "applied (SPEC rule 2) and applies any it lost. Safe while the agent runs.",
    )
    replay.add_argument("--from-seq", type=int, required=True, help="first seq to re-send")
    replay.add_argument("--to-seq", type=int, help="last seq to re-send (default: the last)")
    replay.add_argument(
        "--dry-run", action="store_true", help="list what would be sent, send nothing"
    )

    keys = sub.add_parser(
        "keys",
        help="make a signing key for this store (prints the outlet's and the centre's settings)",
        description="Print a fresh 32-byte HMAC key: RETAIL_SIGNING_KEY_ID/RETAIL_SIGNING_KEY "
        "for this outlet agent, and the 'key_id=store:key' entry for the centre's "
        "RETAIL_SIGNING_KEYS. Nothing is stored; put them in your secret store.",
    )
    keys.add_argument("--key-id", required=True, help="e.g. s001-2026-01 (letters, digits . _ -)")

    tokens = sub.add_parser(
        "tokens",
        help="manage the terminals' bearer tokens (add | list | revoke)",
        description="Per-terminal bearer tokens, stored only as sha256 hashes.",
    )
    tsub = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    add = tsub.add_parser(
        "add", help="make a token for a terminal; it is printed once, never stored in clear"
    )
    add.add_argument("--terminal", required=True, help="the terminal id the token stands for")
    tsub.add_parser("list", help="list tokens (hash prefix, terminal, created, revoked)")
    revoke = tsub.add_parser("revoke", help="revoke a terminal's tokens or one token")
    who = revoke.add_mutually_exclusive_group(required=True)
    who.add_argument("--terminal", help="revoke every token of this terminal")
    who.add_argument("--token", help="the token itself, or a hash prefix (8+ hex chars)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns the exit status."""
    args = _parser().parse_args(argv)
    settings = load_settings()
    if not settings.store_id:
        err.print("[red]RETAIL_STORE_ID is not set[/]: say which store this agent serves")
        return 2
    if args.command == "run":
        return _run(settings, args)
    if args.command == "status":
        return _status(settings, json_out=args.json)
    if args.command == "keys":
        return _new_key(settings, args.key_id)
    if args.command == "replay":
        return asyncio.run(_replay(settings, args.from_seq, args.to_seq, dry_run=args.dry_run))
    return _tokens(settings, args)


# --------------------------------------------------------------------------- keys


def _new_key(settings: OutletSettings, key_id: str) -> int:
    from app.signing import SigningConfigError, check_key_id, new_key

    try:
        check_key_id(key_id)
    except SigningConfigError as exc:
        err.print(f"[red]{exc}[/]")
        return 2
    key = new_key()
    console.print(f"# outlet agent of store {settings.store_id}:", markup=False)
    console.print(f"RETAIL_SIGNING_KEY_ID={key_id}", markup=False)
    console.print(f"RETAIL_SIGNING_KEY={key}", markup=False)
    console.print("# centre: add this entry to RETAIL_SIGNING_KEYS (or its file):", markup=False)
    console.print(f"{key_id}={settings.store_id}:{key}", markup=False)
    return 0


# --------------------------------------------------------------------------- run


def _run(settings: OutletSettings, args: argparse.Namespace) -> int:
    import uvicorn

    from outlet_agent.api import create_app
    from outlet_agent.server import QuietServer

    overrides: dict[str, object] = {}
    if args.no_log:
        overrides["outlet_no_log"] = True
    if overrides:
        settings = load_settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = uvicorn.Config(
        create_app(settings),
        host=args.host or settings.outlet_host,
        port=args.port or settings.outlet_port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
        # issue 10: bounded connections (503 past it), idle keep-alives closed,
        # no server header advertising versions
        limit_concurrency=settings.outlet_max_connections,
        timeout_keep_alive=settings.outlet_keepalive_s,
        server_header=False,
    )
    server = QuietServer(config)
    _tune_gc()
    server.run()
    return 0 if server.started else 1


#: Net new container objects before a young-generation collection (CPython: 700).
GC_YOUNG_THRESHOLD = 50_000


def _tune_gc() -> None:
    """Fewer cyclic-GC passes on the request path (issue 4); nothing is kept longer.

    A group commit keeps every request's objects alive until its COMMIT (thousands
    of dicts, lines, outcomes), so with CPython's 700 a young collection ran about
    every 300 events and walked them all: ~4 us/event of the batch path, about
    7% of it. Reference counting still frees everything acyclic at once; only
    cyclic garbage (rare here) waits for the larger threshold. What start-up
    made (modules, the app) is frozen out of the older generations' walks.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


# --------------------------------------------------------------------------- status


def _status(settings: OutletSettings, *, json_out: bool) -> int:
    if not settings.outlet_db_path.exists():  # a read-only command makes no log
        err.print(
            f"[red]no outlet log at {settings.outlet_db_path}[/]: check RETAIL_DATA_DIR "
            f"and RETAIL_STORE_ID ({settings.store_id})"
        )
        return 1
    db = open_sync(settings.outlet_db_path)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        last_seq = int(meta.get("last_seq", 0))
        forwarded = int(meta.get("forwarded_seq", 0))
        row = db.execute(
            "SELECT recorded_ts FROM events WHERE seq > ? ORDER BY seq LIMIT 1", (forwarded,)
        ).fetchone()
        retained = db.execute("SELECT COUNT(*), MIN(seq) FROM events").fetchone()
    finally:
        db.close()
    out: dict[str, object] = {
        "store_id": settings.store_id,
        "log": str(settings.outlet_db_path),
        "last_seq": last_seq,
        "forwarded_seq": forwarded,
        "backlog": last_seq - forwarded,
        "oldest_unsent_age_s": round(time.time() - row[0], 3) if row else 0.0,
        "retained_events": retained[0],
        "first_retained_seq": retained[1] or 0,
        "agent_running": False,
        "broker_connected": None,
    }
    try:
        live = httpx.get(
            f"http://{settings.outlet_host}:{settings.outlet_port}/v1/status", timeout=1.0
        ).json()
    except (httpx.HTTPError, ValueError):
        live = None
    if isinstance(live, dict) and live.get("store_id") == settings.store_id:
        out["agent_running"] = True
        out["broker_connected"] = live.get("broker_connected")
    elif isinstance(live, dict):  # another store's agent (or something else) has the port
        out["port_answered_by"] = str(live.get("store_id", "not an outlet agent"))
    if json_out:
        console.print_json(orjson.dumps(out).decode())
        return 0
    table = Table(title=f"outlet agent, store {settings.store_id}", show_header=False)
    for key, value in out.items():
        table.add_row(key, str(value))
    console.print(table)
    return 0


# --------------------------------------------------------------------------- replay


async def _replay(settings: OutletSettings, first: int, last: int | None, *, dry_run: bool) -> int:
    from aiokafka.errors import KafkaError

    from outlet_agent.forwarder import make_producer, pack_records
    from outlet_agent.log import LogRecord

    db = open_sync(settings.outlet_db_path)
    try:
        lo, hi = db.execute("SELECT MIN(seq), MAX(seq) FROM events").fetchone()
        if lo is None:
            err.print("[yellow]the log holds no events[/]")
            return 1
        if first < lo:
            err.print(
                f"[red]events below seq {lo} were pruned after forwarding[/] "
                f"(RETAIL_RETENTION_S); replay from {lo} or later"
            )
            return 1
        last = hi if last is None else min(last, hi)
        if dry_run:
            n = db.execute(
                "SELECT COUNT(*) FROM events WHERE seq BETWEEN ? AND ?", (first, last)
            ).fetchone()[0]
            console.print(f"would re-send {n} events, seq {first}..{last}")
            return 0
        producer = make_producer(settings)
        sent = 0
        try:
            await producer.start()
            key = settings.store_id.encode()
            seq = first - 1
            with console.status("replaying") as spinner:
                while seq < last:
                    rows = db.execute(
                        "SELECT seq, event_id, recorded_ts, body FROM events "
                        "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                        (seq, last, settings.forward_batch_max),
                    ).fetchall()
                    if not rows:
                        break
                    page = [LogRecord(int(r[0]), r[1], r[2], bytes(r[3])) for r in rows]
                    records = pack_records(page, settings.forward_pack_max)
                    futures = [
                        await producer.send(settings.events_topic, value=v, key=key)
                        for v, _ in records
                    ]
                    await asyncio.gather(*futures)
                    seq = page[-1].seq
                    sent += len(page)
                    spinner.update(f"replayed {sent} events, up to seq {seq}")
        except KafkaError as exc:
            err.print(f"[red]replay stopped after {sent} events: {exc!r}[/]")
            return 1
        finally:
            await producer.stop()
        console.print(f"[green]re-sent {sent} events[/], seq {first}..{last}")
        return 0
    finally:
        db.close()


# --------------------------------------------------------------------------- tokens


def _tokens(settings: OutletSettings, args: argparse.Namespace) -> int:
    db = open_sync(settings.outlet_db_path)
    try:
        if args.tokens_command == "add":
            token = add_token(db, args.terminal)
            err.print(f"token for terminal [bold]{args.terminal}[/] (shown once, keep it safe):")
            print(token)  # noqa: T201 - the token itself, alone on stdout for scripts
            return 0
        if args.tokens_command == "list":
            table = Table(title=f"tokens, store {settings.store_id}")
            for col in ("hash", "terminal", "created", "revoked"):
                table.add_column(col)
            for info in list_tokens(db):
                table.add_row(
                    info.token_hash[:12], info.terminal_id, info.created_at, info.revoked_at or ""
                )
            console.print(table)
            return 0
        n = revoke_tokens(db, terminal_id=args.terminal, token=args.token)
        if not n:
            err.print("[yellow]no active token matched[/]")
            return 1
        console.print(f"revoked {n} token(s); the agent stops accepting them within seconds")
        return 0
    except sqlite3.Error as exc:
        err.print(f"[red]could not use the log at {settings.outlet_db_path}: {exc}[/]")
        return 1
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
