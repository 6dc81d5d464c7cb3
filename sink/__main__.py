"""``python -m sink``: see :mod:`sink.cli`."""

from __future__ import annotations

import sys

from sink.cli import main

sys.exit(main())
