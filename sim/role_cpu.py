"""The CPU each part of the chain spent over a window, in cores.

A drain here is CPU-bound on two shared cores, and the same code drained at
1,949 events/s in one run and 4,769 in the next. The box's idle share says
only that the box was full; this says who filled it: the worker applying the
backlog, or the broker, the proxy, PostgreSQL, the sink and the store side
beside it. A process that started inside the window counts from zero; one
that ended inside it is not counted (its last reading is gone with it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import psutil


def cpu_seconds(pid: int, *, with_children: bool = False) -> dict[int, float]:
    """User + system seconds of ``pid`` (and of its live descendants), by pid."""
    out: dict[int, float] = {}
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        procs = [proc, *(proc.children(recursive=True) if with_children else [])]
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
    return out


@dataclass
class RoleCpu:
    """Readings of each role's processes; :meth:`cores` is the spend between two."""

    #: role -> its process ids now (looked up at each reading: a role's
    #: processes may be restarted); a role whose name ends in ``+`` counts
    #: its descendants too (PostgreSQL's backends)
    roles: Callable[[], Mapping[str, Iterable[int]]]
    clock: Callable[[], float] = time.monotonic
    _start: dict[str, dict[int, float]] = field(default_factory=dict)
    _t0: float = 0.0

    def read(self) -> dict[str, dict[int, float]]:
        now: dict[str, dict[int, float]] = {}
        for role, pids in self.roles().items():
            seen: dict[int, float] = {}
            for pid in pids:
                seen.update(cpu_seconds(pid, with_children=role.endswith("+")))
            now[role.rstrip("+")] = seen
        return now

    def start(self) -> None:
        self._start = self.read()
        self._t0 = self.clock()

    def cores(self) -> dict[str, float]:
        """Cores each role used since :meth:`start` (CPU seconds / wall seconds)."""
        wall = max(self.clock() - self._t0, 1e-6)
        out: dict[str, float] = {}
        for role, now in self.read().items():
            before = self._start.get(role, {})
            spent = sum(max(0.0, s - before.get(pid, 0.0)) for pid, s in now.items())
            out[role] = round(spent / wall, 2)
        return out
