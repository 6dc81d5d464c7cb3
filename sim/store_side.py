"""The store side's share of the CPU when the simulator and the centre share one box.

In a chain every store has its own machine; here the simulator's tills and a
hundred outlet agents share two cores with the centre they feed. The agents
already run at niceness 19 inside the simulator's session (``sim.cluster``),
but where the kernel schedules sessions as groups (``sched_autogroup``) the
whole session still weighs as much as one process of the centre. While a
backlog drains, that is the worker's CPU: measured in session 8, the worker
ran 0.5-0.66 of a second per second and waited as long again to run, with
the store side taking 0.6 of a core.

:func:`lowered` sets the session's autogroup niceness (``/proc/self/autogroup``)
for the length of a run and puts it back after. A box with CPU to spare
runs the same; a saturated one serves the centre first. The centre's own
processes (broker, PostgreSQL, workers, sink, proxy) each have their own
session and are not touched. Nothing here runs in production.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

AUTOGROUP = Path("/proc/self/autogroup")
ENABLED = Path("/proc/sys/kernel/sched_autogroup_enabled")


def autogroup_nice() -> int | None:
    """This session's autogroup niceness; None where the kernel has no autogroups."""
    try:
        if ENABLED.read_text().strip() != "1":
            return None
        # "/autogroup-123 nice 0"
        return int(AUTOGROUP.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _set(nice: int) -> bool:
    try:
        AUTOGROUP.write_text(str(nice))
    except OSError as exc:
        log.warning("could not set the store side's autogroup niceness to %d: %r", nice, exc)
        return False
    return True


@contextlib.contextmanager
def lowered(nice: int) -> Iterator[int | None]:
    """Run the block with this session at autogroup niceness ``nice`` (0: as is).

    Yields the niceness in force (None: no autogroups here, nothing done).
    """
    before = autogroup_nice()
    if before is None or nice <= before:
        yield before
        return
    if not _set(nice):
        yield before
        return
    try:
        yield nice
    finally:
        _set(before)
