"""A set of a store's ``outlet_seq`` values, kept as a watermark plus the few above it.

SPEC rules 2 and 3: a seq at or below the watermark, or in the set above it,
was applied (a duplicate if it comes again); the holes between the watermark
and the highest seq are the gaps, reported until a late event fills them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class SeqSet:
    #: every seq in 1..watermark is in the set
    watermark: int = 0
    #: seqs above ``watermark + 1`` (a gap lies below each of them)
    above: set[int] = field(default_factory=set)

    def __contains__(self, seq: int) -> bool:
        return seq <= self.watermark or seq in self.above

    def add(self, seq: int) -> bool:
        """Add ``seq``; False if it was already there (a duplicate)."""
        if seq in self:
            return False
        if seq == self.watermark + 1:
            self.watermark = seq
            while self.watermark + 1 in self.above:
                self.watermark += 1
                self.above.discard(self.watermark)
        else:
            self.above.add(seq)
        return True

    @property
    def highest(self) -> int:
        return max(self.above) if self.above else self.watermark

    def __len__(self) -> int:
        return self.watermark + len(self.above)

    def gaps(self, limit: int = 100) -> list[tuple[int, int]]:
        """Missing ranges ``(first, last)`` between the watermark and the highest seq."""
        out: list[tuple[int, int]] = []
        expected = self.watermark + 1
        for seq in sorted(self.above):
            if seq > expected:
                out.append((expected, seq - 1))
                if len(out) >= limit:
                    break
            expected = seq + 1
        return out

    def missing_count(self) -> int:
        return self.highest - len(self)

    def to_json(self) -> dict[str, Any]:
        return {"wm": self.watermark, "above": sorted(self.above)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SeqSet:
        if not data:
            return cls()
        return cls(watermark=int(data.get("wm", 0)), above=set(data.get("above", ())))


def ranges_add(ranges: list[list[int]], seq: int) -> bool:
    """Add ``seq`` to sorted disjoint ``[lo, hi]`` ranges in place; False if present.

    Compact for mostly-consecutive seqs, which is how a store's events arrive.
    """
    lo, hi = 0, len(ranges)
    while lo < hi:
        mid = (lo + hi) // 2
        if ranges[mid][1] < seq:
            lo = mid + 1
        else:
            hi = mid
    i = lo
    if i < len(ranges) and ranges[i][0] <= seq <= ranges[i][1]:
        return False
    joins_left = i > 0 and ranges[i - 1][1] == seq - 1
    joins_right = i < len(ranges) and ranges[i][0] == seq + 1
    if joins_left and joins_right:
        ranges[i - 1][1] = ranges[i][1]
        del ranges[i]
    elif joins_left:
        ranges[i - 1][1] = seq
    elif joins_right:
        ranges[i][0] = seq
    else:
        ranges.insert(i, [seq, seq])
    return True
