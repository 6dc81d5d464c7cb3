"""The per-store progress value: what it keeps of fingerprints, and how it is stored."""

from __future__ import annotations

import orjson

from domain.progress import FINGERPRINTS_KEPT, ProgressState, id_hash
from tables.codec import decode, encode


def test_keeps_the_newest_fingerprints_whatever_the_arrival_order() -> None:
    progress = ProgressState(durable_wm=10_000)  # all durable: only the window counts
    seqs = list(range(1, FINGERPRINTS_KEPT + 50))
    late = seqs[10:20]  # a gap filled late: old seqs arrive after newer ones
    for seq in [s for s in seqs if s not in late] + late:
        progress.remember(seq, f"fp-{seq}")
    assert sorted(progress.fingerprints) == seqs[-FINGERPRINTS_KEPT:]


def test_keeps_every_fingerprint_above_durable_wm_until_confirmed() -> None:
    """A duplicate above durable_wm is applied again to keys that lack it, so its
    content must be checked: none of those fingerprints may be dropped yet."""
    progress = ProgressState()
    seqs = list(range(1, 3 * FINGERPRINTS_KEPT))
    for seq in seqs:
        progress.seqs.add(seq)
        progress.remember(seq, f"fp-{seq}")
    assert sorted(progress.fingerprints) == seqs
    assert progress.confirm(seqs)
    assert sorted(progress.fingerprints) == seqs[-FINGERPRINTS_KEPT:]


def test_round_trips_through_the_table_codec() -> None:
    progress = ProgressState()
    for seq in (3, 1, 2):
        progress.seqs.add(seq)
        progress.remember(seq, f"{seq:08x}0123456789abcdef")
    again = ProgressState.from_json(decode(encode(progress.to_json())))
    assert again.fingerprints == progress.fingerprints
    assert list(again.fingerprints) == [3, 1, 2]  # insertion order survives


def test_reads_the_fingerprints_written_by_earlier_versions() -> None:
    value = orjson.loads(b'{"seqs": null, "fp": [[5, "id-5:abc"], [6, "id-6:def"]]}')
    assert ProgressState.from_json(value).fingerprints == {
        5: id_hash("id-5") + "abc",
        6: id_hash("id-6") + "def",
    }


def test_the_views_read_every_figure_but_none_of_the_dedupe_memory() -> None:
    progress = ProgressState(duplicates=2, conflicts=1, events=7, last_recorded_at=1.5)
    for seq in (1, 2, 4):
        progress.seqs.add(seq)
        progress.remember(seq, f"fp-{seq}")
    progress.voided["sale-1"] = 2
    stored = decode(encode(progress.to_json()))
    full, figures = ProgressState.from_json(stored), ProgressState.figures_from_json(stored)
    assert full.fingerprints and full.voided
    assert not figures.fingerprints and not figures.voided
    for name in ("duplicates", "conflicts", "events", "last_recorded_at", "durable_wm"):
        assert getattr(figures, name) == getattr(full, name)
    assert figures.seqs.to_json() == full.seqs.to_json()
    assert (figures.seqs.watermark, figures.seqs.highest) == (2, 4)
