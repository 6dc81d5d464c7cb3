"""The bytes Faust's ``json`` codec writes for table keys and values, made directly.

faust-streaming uses orjson with these options when orjson is installed (it
is one of our dependencies); ``tests/unit/test_table_codec.py`` checks that the
bytes are identical to the store's own ``_encode_key``/``_encode_value``.
"""

from __future__ import annotations

from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z


def encode(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_OPTIONS)


def decode(raw: bytes) -> Any:
    return orjson.loads(raw)


def read(table: Any, key: str, partition: int | None) -> Any:
    """A table value, read straight from the partition's RocksDB when it is known.

    Faust's own lookup without a current event tries every partition's
    database in turn; the apply agent knows the partition of every store.
    """
    if partition is None:
        return table.get(key)
    raw = table.data._db_for_partition(partition).get(encode(key))
    return None if raw is None else decode(raw)
