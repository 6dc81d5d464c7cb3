"""sim/store_side.py: the simulator's session is lowered for a run and put back after."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim import store_side


@pytest.mark.skipif(store_side.autogroup_nice() is None, reason="no autogroups on this kernel")
def test_the_session_is_lowered_for_the_run_and_put_back() -> None:
    before = store_side.autogroup_nice()
    assert before is not None
    if before >= 7:
        pytest.skip(f"this session is already at autogroup nice {before}")
    with store_side.lowered(7) as nice:
        if nice != 7:
            pytest.skip("this session's autogroup cannot be written here")
        assert store_side.autogroup_nice() == 7
    assert store_side.autogroup_nice() == before


def test_zero_or_a_session_already_lower_is_left_alone() -> None:
    before = store_side.autogroup_nice()
    with store_side.lowered(0) as nice:
        assert nice == before
        assert store_side.autogroup_nice() == before


def test_no_autogroups_means_nothing_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disabled = tmp_path / "sched_autogroup_enabled"
    disabled.write_text("0\n")
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-1 nice 0\n")
    monkeypatch.setattr(store_side, "ENABLED", disabled)
    monkeypatch.setattr(store_side, "AUTOGROUP", group)
    with store_side.lowered(10) as nice:
        assert nice is None
    assert group.read_text() == "/autogroup-1 nice 0\n"
