"""``python -m outlet_agent``: see :mod:`outlet_agent.cli`."""

from __future__ import annotations

import sys

from outlet_agent.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
