"""Command line of the embedded stack.

``up`` starts the broker and PostgreSQL and prints the ``RETAIL_*`` settings
that point at them; ``run`` (``make run``) adds a worker, two outlet agents and
gentle simulated sales. Both write ``.devstack/stack.json`` and stop
everything on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from types import FrameType

import orjson
from rich.console import Console

from devstack.process import (
    StackError,
    free_port,
    health_answers,
    port_is_free,
    spawn,
    stop_process,
    wait_until,
)
from devstack.stack import DevStack

console = Console(stderr=True)
STATE_DIR = Path(".devstack")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("up", "broker + PostgreSQL only"), ("run", "the whole demo")):
        cmd = sub.add_parser(name, help=help_)
        cmd.add_argument("--data-dir", type=Path, default=Path(".data/devstack"))
        cmd.add_argument("--persistent", action="store_true", help="broker on S3 storage")
        cmd.add_argument("--partitions", type=int, default=8)
    run = sub.choices["run"]
    run.add_argument("--web-port", type=int, default=6066, help="worker web port (6066)")
    run.add_argument("--outlet-port", type=int, default=8700, help="first outlet agent port")
    run.add_argument("--stores", type=int, default=2)
    run.add_argument("--rate", type=float, default=5.0, help="simulated events per second")
    return parser


def _pick_port(preferred: int, what: str) -> int:
    if port_is_free(preferred):
        return preferred
    port = free_port()
    console.print(f"[yellow]port {preferred} for {what} is taken; using {port}[/]")
    return port


class _Stop(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Every run starts empty: the embedded broker keeps nothing across runs
    # (memory storage, or S3 storage in a moto server that lives in memory),
    # and a worker's RocksDB or an outlet's log left from an earlier run would
    # disagree with the new, empty topics (Faust refuses to start on that).
    shutil.rmtree(args.data_dir, ignore_errors=True)
    stack = DevStack(args.data_dir, partitions=args.partitions, persistent=args.persistent)
    children: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        with console.status("starting broker and PostgreSQL"):
            stack.start()
        env = {**os.environ, **stack.env()}
        info: dict[str, object] = {**stack.info().__dict__, "env": stack.env()}
        if args.command == "run":
            info.update(_start_demo(args, stack, env, children))
        STATE_DIR.mkdir(exist_ok=True)
        (STATE_DIR / "stack.json").write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
        console.print_json(orjson.dumps(info).decode())
        console.print("[green]ready[/] - .devstack/stack.json describes it; Ctrl-C stops all")
        while True:
            for child in children:
                if child.poll() is not None:
                    raise StackError(f"{child.args!r} exited with {child.returncode}")
            time.sleep(0.5)
    except _Stop:
        console.print("stopping")
        return 0
    except StackError as exc:
        console.print(f"[red]{exc}[/]")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for child in reversed(children):
            stop_process(child)
        stack.stop()
        (STATE_DIR / "stack.json").unlink(missing_ok=True)


def _start_demo(
    args: argparse.Namespace,
    stack: DevStack,
    env: dict[str, str],
    children: list[subprocess.Popen[bytes]],
) -> dict[str, object]:
    logs = args.data_dir.resolve() / "logs"
    web_port = _pick_port(args.web_port, "the worker's web server")
    worker_dir = args.data_dir.resolve() / "worker"
    worker_env = {**env, "RETAIL_DATA_DIR": str(worker_dir), "RETAIL_WEB_PORT": str(web_port)}
    children.append(
        spawn(
            [sys.executable, "-m", "faust", "-A", "app", "worker", "-l", "info"],
            log_path=logs / "worker.log",
            env=worker_env,
        )
    )
    central = f"http://127.0.0.1:{web_port}"
    outlets: list[dict[str, object]] = []
    port = args.outlet_port
    for i in range(1, args.stores + 1):
        store = f"S{i:03d}"
        port = _pick_port(port, f"outlet agent {store}")
        data_dir = args.data_dir.resolve() / f"outlet-{store}"
        outlet_env = {
            **env,
            "RETAIL_STORE_ID": store,
            "RETAIL_DATA_DIR": str(data_dir),
            "RETAIL_OUTLET_PORT": str(port),
            "RETAIL_CENTRAL_URL": central,
        }
        token = subprocess.run(
            [sys.executable, "-m", "outlet_agent", "tokens", "add", "--terminal", "T1"],
            env=outlet_env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        children.append(
            spawn(
                [sys.executable, "-m", "outlet_agent", "run"],
                log_path=logs / f"outlet-{store}.log",
                env=outlet_env,
            )
        )
        outlets.append(
            {
                "store_id": store,
                "url": f"http://127.0.0.1:{port}",
                "token": token,
                "terminal_id": "T1",
                "data_dir": str(data_dir),
                "pid": children[-1].pid,
            }
        )
        port += 1
    with console.status("waiting for the worker and the outlet agents"):
        for url in [central, *(str(o["url"]) for o in outlets)]:
            wait_until(partial(health_answers, url), timeout=90, what=f"{url}/health")
    # the chain simulator (sim/) at a gentle rate: baskets, returns, voids, receipts,
    # counts, transfers between the stores, and web-shop reservations at the centre
    sim_args = [sys.executable, "-m", "sim", "demo", "--rate", str(args.rate)]
    sim_args += ["--central", central]
    for o in outlets:
        sim_args += ["--outlet", f"{o['store_id']}={o['url']}={o['token']}"]
    children.append(spawn(sim_args, log_path=logs / "demo.log", env=env))
    return {
        "central_url": central,
        "dashboard": f"{central}/",
        "worker": {"pid": children[0].pid, "data_dir": str(worker_dir), "web_port": web_port},
        "outlets": outlets,
        "logs": str(logs),
    }
