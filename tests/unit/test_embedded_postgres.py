"""The development PostgreSQL starts wherever the project lives."""

from __future__ import annotations

from pathlib import Path

from devstack.postgres import EmbeddedPostgres
from tests.sink.conftest import pg


def test_it_starts_under_a_data_dir_too_deep_for_a_unix_socket(tmp_path: Path) -> None:
    """A Unix socket's path is at most 107 bytes; PostgreSQL exited at start
    when its socket went under a data dir as deep as this one (pytest-xdist's
    temp dirs, a checkout in a long path). It listens on TCP only."""
    deep = tmp_path / ("a-directory-with-a-long-name-" * 4) / "stack" / "postgres"
    # where the socket went before: past the limit
    assert len(str(deep / "sock" / ".s.PGSQL.65535")) > 107
    server = EmbeddedPostgres(deep)
    server.start(timeout=60)
    try:
        assert [r["one"] for r in pg(server.url(), "SELECT 1 AS one")] == [1]
    finally:
        server.stop()
