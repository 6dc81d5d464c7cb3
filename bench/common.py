"""Shared benchmark plumbing: results as JSON (last stdout line + bench/results/<name>.json)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).resolve().parent / "results"


def report(name: str, figures: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    line = orjson.dumps(figures)
    (RESULTS / f"{name}.json").write_bytes(line + b"\n")
    sys.stdout.write(line.decode() + "\n")
    sys.stdout.flush()


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks stop the stack and workers."""

    def _raise(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)


def progress(message: str) -> None:
    """Progress for people goes to stderr; stdout's last line is the JSON."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
