"""TEST ONLY: freeze the worker at a named moment of the apply agent's flush.

``RETAIL_TEST_FREEZE_AT=<point>[@<n>]`` makes a worker, the n-th time (default:
the first) its apply agent passes ``<point>``, write the marker file
``<RETAIL_DATA_DIR>/frozen-<point>`` (its pid) and then block its event loop
for good: from then on nothing is sent, acknowledged, confirmed or committed.
A test that sends SIGKILL when the marker appears kills the worker at exactly
that moment (``tests/central/test_kill_in_flush.py``).

Disabled (empty, the default), each point costs one check of :data:`ARMED`.
Never set it outside tests: a frozen worker is a stuck worker.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import NoReturn

log = logging.getLogger(__name__)

#: where the apply flush can be frozen, in the order a flush passes them
POINTS = {
    "before_changelog": "the group's keys are in RocksDB; no changelog record or output sent",
    "changelog_partial": "every other (topic, partition) batch of the flush acknowledged, "
    "the rest never sent",
    "before_commit": "the whole flush acknowledged; its seqs not confirmed, its take "
    "not acked (source offsets not committed)",
}

#: True only when a freeze point is set: the one check a point costs otherwise
ARMED = False
_point = ""
_nth = 1
_passes = 0
_marker_dir = Path(".")


def configure(spec: str, data_dir: Path) -> None:
    """Arm (``"<point>[@<n>]"``) or disarm (``""``) the freeze; called once by the app."""
    global ARMED, _point, _nth, _passes, _marker_dir
    point, _, nth = spec.partition("@")
    if point and point not in POINTS:
        raise ValueError(f"RETAIL_TEST_FREEZE_AT: unknown point {point!r}; one of {list(POINTS)}")
    ARMED = bool(point)
    _point = point
    _nth = int(nth) if nth else 1
    _passes = 0
    _marker_dir = data_dir
    if ARMED:
        log.warning("TEST ONLY: this worker will freeze at %s (pass %d)", point, _nth)


def marker_path(data_dir: Path, point: str) -> Path:
    return data_dir / f"frozen-{point}"


def due(point: str) -> bool:
    """Count a pass through ``point``; True when it is the pass to freeze at."""
    global _passes
    if point != _point:
        return False
    _passes += 1
    return _passes == _nth


def freeze(point: str) -> NoReturn:
    """Write the marker, then block the whole process (event loop included) forever."""
    marker = marker_path(_marker_dir, point)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(marker)
    log.critical("TEST ONLY: frozen at %s (%s); waiting to be killed", point, POINTS[point])
    for handler in logging.getLogger().handlers:
        handler.flush()
    while True:
        time.sleep(3600)


def reach(point: str) -> None:
    """A freeze point: freezes here if it is the armed point and pass."""
    if due(point):
        freeze(point)
