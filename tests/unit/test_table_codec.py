"""Our table bytes must be exactly Faust's: its reads and its recovery decode them."""

from __future__ import annotations

from typing import Any

import faust
import pytest

from tables.codec import encode


@pytest.mark.parametrize(
    "value",
    ["S1\x1fSKU-1", "é€", {"on_hand": -3, "applied": [[5, -1], [6, None]], "res": {"o": [1, 2]}}],
)
def test_encode_matches_faust_json_codec(value: Any, tmp_path: Any) -> None:
    app = faust.App(
        "codec-test", broker="kafka://127.0.0.1:1", store="memory://", datadir=str(tmp_path)
    )
    table = app.Table("t", default=None)
    assert encode(value) == table.data._encode_key(value) == table.data._encode_value(value)
