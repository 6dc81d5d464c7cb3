"""Gentle simulated traffic for ``make run``: now the chain simulator's ``demo`` mode.

Kept so ``python -m devstack.demo --outlet STORE=URL=TOKEN`` still works; the
traffic itself (baskets, returns, voids, counts, transfers, reservations) lives
in :mod:`sim.workload`.
"""

from __future__ import annotations

import sys


def main() -> None:
    from sim.cli import main as sim_main

    sys.exit(sim_main(["demo", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
