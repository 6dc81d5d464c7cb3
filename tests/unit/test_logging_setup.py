"""app/logging_setup.py: the libraries quiet, Faust's recovery at its own level when asked."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from app.logging_setup import QUIET, RECOVERY, WARMUP, quiet_libraries


@pytest.fixture(autouse=True)
def restore_levels() -> Iterator[None]:
    names = (*QUIET, RECOVERY, WARMUP)
    before = {n: logging.getLogger(n).level for n in names}
    own = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate)
           for n in (RECOVERY, WARMUP)}  # fmt: skip
    yield
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)
    for name, (handlers, propagate) in own.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


def test_recovery_follows_faust_unless_asked() -> None:
    logging.getLogger(RECOVERY).setLevel(logging.NOTSET)
    quiet_libraries("warning")
    assert not logging.getLogger(RECOVERY).isEnabledFor(logging.INFO)


def test_recovery_at_info_while_faust_stays_at_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Faust's worker gives its own handler the ``-l warn`` level: the recovery
    records reach stderr by a handler of their own, once each."""
    quiet_libraries("warning", recovery="info")
    quiet_libraries("warning", recovery="info")  # a second build adds no handler
    assert not logging.getLogger("faust.transport").isEnabledFor(logging.INFO)
    logging.getLogger(RECOVERY).info("Restore complete!")
    logging.getLogger(WARMUP).info("partitions [0] are warm")
    err = capsys.readouterr().err
    assert err.count("Restore complete!") == 1
    assert err.count("partitions [0] are warm") == 1, "the warm-up follows the recovery's level"
