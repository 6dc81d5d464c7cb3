"""Stop the worker process when a batch cannot be made durable.

Faust restarts a crashed agent inside the same process, but the records of the
failed batch are neither acked nor delivered again, and the in-memory state
may already hold their effects: carrying on would lose them. Exiting lets the
supervisor (systemd, Kubernetes, ``make run``) restart the worker, which
resumes from the last committed offsets and replays them (SPEC "What is
promised": a crash of a central worker loses nothing).
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

EXIT_CODE = 70  # EX_SOFTWARE


def exit_for_replay(what: str, exc: BaseException) -> None:
    log.critical("%s failed (%r); exiting so the worker restarts and replays", what, exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_CODE)
