"""The worker's garbage collector: rare young collections, almost no full ones.

Measured in the benchmark's worker (100 stores, 1,000 events/s, CPython 3.11's
default thresholds 700/10/10, a ``gc.callbacks`` probe): about 21 young
collections a second, and a full one every seven seconds that took 250-600
ms, longer as the stock cache filled. Together 11-15 % of the worker's CPU,
and every full collection held up the event loop, so the lag of whatever was
in hand, for as long as it ran.

Almost nothing the worker allocates is in a reference cycle: events, lines,
states and records die by reference counting. What the collector scans is
the long-lived heap (the caches, Faust, aiokafka), over and over. So:

- ``gc.freeze()`` once the worker is up: what was loaded by then (modules,
  the app, its tables) is never scanned again;
- a young generation of 20,000 objects instead of 700, and 50 young
  collections per middle one and 50 middle per full one.

With these, the same 560 s run (a 5-minute cut and its drain inside) made a
young collection every ~23 s at the live load (25-80 ms each) and every ~2 s
while draining, one middle collection, and no full one after start-up.
Cyclic garbage (an exception's traceback, an aiokafka future) is still
collected, only later: the benchmark reports the worker's peak RSS, which
would show it if it ever mattered.
"""

from __future__ import annotations

import gc

YOUNG = 20_000
MIDDLE_PER_YOUNG = 50
FULL_PER_MIDDLE = 50


def tune_collector() -> None:
    """Freeze what is loaded now, then collect rarely (see the module docstring)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE_PER_YOUNG, FULL_PER_MIDDLE)
