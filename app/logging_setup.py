"""Explicit levels for the chatty libraries: ``-l warn`` alone still formats their debug records."""

from __future__ import annotations

import logging

QUIET = ("faust", "aiokafka", "mode", "kafka", "aiohttp.access", "rocksdict")


def quiet_libraries(level: str = "warning") -> None:
    lvl = logging.getLevelName(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(lvl if isinstance(lvl, int) else logging.WARNING)
