"""Range reads on one partition of a Faust table (RocksDB), for paged views.

``table.keys()`` walks every key of every active partition; a page of one
store's stock must not cost O(all keys). Faust's RocksDB store keeps one
``rocksdict.Rdict`` per partition in ``table.data._dbs`` (a private attribute
of faust-streaming, pinned to 0.15.3 in ``pyproject.toml``), and stores each
key as the table's key serializer makes it: our tables have no ``key_type``,
so keys are JSON strings, ``"S1\\u001fSKU-1"`` for the stock key of store
``S1`` and SKU ``SKU-1``. JSON escapes a string character by character, so
the encoding of ``store + KEY_SEP`` minus its closing quote is a byte prefix
of the encoding of every key of that store: a seek plus a forward scan reads
exactly one store's keys, in the byte order of their encoding.

``tests/web/test_views.py`` (paging) checks these assumptions on a real worker's table
(a faust-streaming upgrade that moves them fails there, not in production).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson


def encode_key(table: Any, key: str) -> bytes:
    """The bytes RocksDB holds for ``key`` (the table's own key serializer)."""
    return bytes(table.data._encode_key(key))


def key_prefix(table: Any, prefix: str) -> bytes:
    """The byte prefix shared by the encodings of all keys starting with ``prefix``."""
    encoded = encode_key(table, prefix)
    if not encoded.endswith(b'"'):
        raise TypeError(f"table {table.name} keys are not JSON strings: {encoded[:20]!r}")
    return encoded[:-1]


def partition_db(table: Any, partition: int) -> Any | None:
    """The open RocksDB of ``partition`` on this worker, or None (never had data here)."""
    dbs: dict[int, Any] = table.data._dbs
    return dbs.get(partition)


def scan_prefix(
    table: Any, partition: int, prefix: str, *, after: str | None = None
) -> Iterator[tuple[str, Any]]:
    """Keys starting with ``prefix`` (and greater than ``after``), with decoded values."""
    db = partition_db(table, partition)
    if db is None:
        return
    raw_prefix = key_prefix(table, prefix)
    it = db.iter()
    if after is None:
        it.seek(raw_prefix)
    else:
        start = encode_key(table, after)
        it.seek(start)
        if it.valid() and it.key() == start:
            it.next()
    while it.valid():
        raw_key = it.key()
        if not raw_key.startswith(raw_prefix):
            break
        value = it.value()
        if value is not None:
            yield orjson.loads(raw_key), orjson.loads(value)
        it.next()


def scan_prefix_backwards(table: Any, partition: int, prefix: str) -> Iterator[tuple[str, Any]]:
    """Keys starting with ``prefix``, from the greatest down."""
    db = partition_db(table, partition)
    if db is None:
        return
    raw_prefix = key_prefix(table, prefix)
    it = db.iter()
    it.seek_for_prev(raw_prefix + b"\xff")
    while it.valid():
        raw_key = it.key()
        if not raw_key.startswith(raw_prefix):
            break
        value = it.value()
        if value is not None:
            yield orjson.loads(raw_key), orjson.loads(value)
        it.prev()


def local_items(table: Any) -> Iterator[tuple[str, Any]]:
    """Every key of the partitions this worker is active for (O(keys): small tables only)."""
    for key, value in table.items():
        if value is not None:
            yield key, value
