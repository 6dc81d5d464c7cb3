"""The benchmark report's markdown says how the run was set up."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.report import write_markdown


@pytest.mark.parametrize(("workers", "said"), [(1, "1 worker at"), (2, "2 workers at")])
def test_the_header_names_the_workers_at_the_start(tmp_path: Path, workers: int, said: str) -> None:
    figures = {
        "stores": 100, "skus": 20_000, "duration_s": 790.1, "offered_rate": 1010.0,
        "events": 779_008, "storage": "memory", "store_side_nice": 10, "workers": workers,
    }  # fmt: skip
    path = tmp_path / "report.md"
    write_markdown(path, figures, {"0 lost": True}, [], "report.png")
    header = path.read_text().splitlines()[2]
    assert said in header
    assert "779,008 events accepted" in header
    assert "the agents at niceness 19 inside it" in header  # the default, when not given
