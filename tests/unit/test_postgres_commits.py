"""sink/commits.py: the sync view's Postgres side when the sink runs apart."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from app.settings import Settings
from sink.commits import PostgresCommits, StoreInPostgres


def commits(**stores: StoreInPostgres) -> PostgresCommits:
    c = PostgresCommits(Settings())
    c.stores = dict(stores)
    return c


def test_caught_up_when_postgres_has_the_centres_seq() -> None:
    c = commits(S1=StoreInPostgres(40, updated_at=100.0, committed_at=100.0, commit_lag_s=0.3))
    assert c.behind_s("S1", 40, now=500.0) == 0.0
    assert c.commit_of("S1") == (100.0, 0.3)


def test_behind_counts_from_postgres_last_move() -> None:
    c = commits(S1=StoreInPostgres(30, updated_at=100.0, committed_at=99.0, commit_lag_s=0.3))
    assert c.behind_s("S1", 40, now=107.5) == 7.5


def test_unknown_store_is_null_not_zero() -> None:
    """Nothing in PostgreSQL yet must not read as 'caught up'."""
    c = commits()
    assert c.behind_s("S9", 5, now=1.0) is None
    assert c.commit_of("S9") is None


def test_store_without_ledger_rows_has_no_commit() -> None:
    c = commits(S1=StoreInPostgres(0, updated_at=1.0, committed_at=None, commit_lag_s=None))
    assert c.commit_of("S1") is None


class BrokenConnection:
    """A connection whose query fails as asyncpg's does when PostgreSQL shuts down mid-read."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.terminated = False

    def is_closed(self) -> bool:
        return False

    async def fetch(self, sql: str) -> list[object]:
        raise self.error

    def terminate(self) -> None:
        self.terminated = True


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
        asyncpg.exceptions.AdminShutdownError(
            "terminating connection due to administrator command"
        ),
        ConnectionResetError(),
        ValueError("anything else"),
    ],
)
def test_a_failed_read_keeps_the_last_answer_and_never_raises(error: BaseException) -> None:
    """The refresh runs in a Faust timer: an exception there would stop the worker."""
    before = StoreInPostgres(30, updated_at=100.0, committed_at=99.0, commit_lag_s=0.3)
    c = commits(S1=before)
    broken = BrokenConnection(error)
    c._conn = broken
    asyncio.run(c.refresh())
    assert c.stores == {"S1": before}
    assert broken.terminated and c._conn is None  # the next refresh connects afresh
