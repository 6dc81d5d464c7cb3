"""``python -m devstack up | run``: the embedded stack for development and demos."""

from devstack.cli import main

raise SystemExit(main())
