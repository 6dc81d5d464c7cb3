"""What can go wrong in the outlet agent, each saying what the operator should do."""

from __future__ import annotations


class OutletError(Exception):
    """Base of the outlet agent's errors."""

    retriable = False


class OutletLogFull(OutletError):
    """The outlet's disk is full: sales are refused with 503 until space is freed."""

    retriable = True


class OutletLogUnavailable(OutletError):
    """SQLite could not commit (I/O error, locked): the terminal retries after 503."""

    retriable = True


class OutletOverloaded(OutletError):
    """The write queue is full: the terminal retries after ``Retry-After`` seconds."""

    retriable = True


class OutletNotConfigured(OutletError):
    """A required setting is missing, e.g. ``RETAIL_STORE_ID`` for ``run``."""
