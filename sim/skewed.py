"""Run the outlet agent with its clock skewed: ``python -m sim.skewed SECONDS run``.

The agent stamps ``recorded_at`` with its own clock (``app.schema.utc_now``,
imported by name into the agent's modules). This hook shifts that clock by
SECONDS before the agent starts, the way a store server whose NTP broke would
be off, without touching the product: ordering must not care (SPEC rule 1), and
only the lag figures of that store may look odd.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta


def main(argv: list[str]) -> int:
    skew = timedelta(seconds=float(argv[0]))
    from app import schema
    from outlet_agent import api, cli, log, tokens

    real = schema.utc_now

    def skewed_now() -> datetime:
        return real() + skew

    for module in (schema, api, log, tokens):
        module.utc_now = skewed_now  # type: ignore[attr-defined]
    return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
