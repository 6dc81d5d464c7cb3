"""Explicit levels for the chatty libraries: ``-l warn`` alone still formats their debug records."""

from __future__ import annotations

import logging

QUIET = ("faust", "aiokafka", "mode", "kafka", "aiohttp.access", "rocksdict")
#: Faust's table recovery: what it read, from where, to which end, and when it
#: finished. Quiet by default; a chaos run keeps it (bench/HISTORY.md, finding 11: a
#: wrong read after a recovery could not be placed without it)
RECOVERY = "faust.tables.recovery"
#: a joining worker warming partitions up before it takes them (app/warmup.py):
#: part of the same story, so it follows the same level
WARMUP = "app.warmup"


def _level(name: str) -> int:
    lvl = logging.getLevelName(name.upper())
    return lvl if isinstance(lvl, int) else logging.WARNING


def quiet_libraries(level: str = "warning", *, recovery: str | None = None) -> None:
    """``level`` for the libraries; ``recovery`` (if given) for Faust's table recovery
    and the warm-up of partitions."""
    for name in QUIET:
        logging.getLogger(name).setLevel(_level(level))
    if recovery:
        for name in (RECOVERY, WARMUP):
            _own_handler(logging.getLogger(name), _level(recovery))


def _own_handler(logger: logging.Logger, level: int) -> None:
    """``logger`` at ``level`` on stderr by a handler of its own: Faust's worker
    gives its handler the ``-l`` level, which would drop these records."""
    logger.setLevel(level)
    if not any(getattr(h, "retail_own", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
        )
        handler.retail_own = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False  # not twice through Faust's handler
