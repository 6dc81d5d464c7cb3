"""The outlet agent's settings: the shared ``RETAIL_*`` object plus a few knobs of its own.

Everything here is read once at start-up from the environment (prefix ``RETAIL_``)
and passed down; no module reads ``os.environ`` itself.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from app.settings import Settings


class OutletSettings(Settings):
    """:class:`app.settings.Settings` with the outlet agent's own tuning knobs."""

    #: Events waiting for the single writer; past this a POST gets 503 + Retry-After.
    outlet_write_queue_max: int = Field(default=20_000, ge=1)
    #: Most events committed in one group transaction (one fsync).
    outlet_group_max: int = Field(default=2_000, ge=1)
    #: Most events in one ``{"events": [...]}`` post.
    outlet_batch_max: int = Field(default=1_000, ge=1)
    #: Largest request body; a single event is also held to ``max_event_bytes``.
    outlet_max_body_bytes: int = Field(default=1 << 20, ge=1024)
    #: Seconds a POST answered 503 is told to wait (``Retry-After``).
    outlet_retry_after_s: int = Field(default=1, ge=1)
    #: How long the forwarder waits for one broker acknowledgement before retrying.
    outlet_send_timeout_s: float = Field(default=15.0, gt=0)
    #: Forwarder backoff after a failed send: capped exponential with full jitter.
    outlet_backoff_min_s: float = Field(default=0.1, gt=0)
    outlet_backoff_max_s: float = Field(default=5.0, gt=0)
    #: After idling, how long the forwarder lets live events gather before it reads a
    #: page (like Kafka's linger.ms): fewer, fuller records for a few ms of forward lag.
    outlet_forward_linger_s: float = Field(default=0.01, ge=0)
    #: How long a stock lookup waits for the centre before using its cache or the log.
    outlet_central_timeout_s: float = Field(default=0.5, gt=0)
    #: Seconds a terminal token stays cached (so a revoke takes effect within it).
    outlet_token_cache_s: float = Field(default=2.0, ge=0)
    #: How often forwarded events past ``retention_s`` are pruned.
    outlet_prune_interval_s: float = Field(default=60.0, gt=0)
    #: Requests per second per client address, with a burst; 0 = no limit (the
    #: store's LAN; set it where terminals reach the agent over a wider network).
    outlet_rate_limit_per_s: float = Field(default=0.0, ge=0)
    outlet_rate_burst: int = Field(default=500, ge=1)
    #: 401s from one address within a minute before it is refused (429) for the minute.
    outlet_auth_failures_per_min: int = Field(default=30, ge=1)
    #: Longest a client may take to send a request body (slow-loris): then 408.
    outlet_body_timeout_s: float = Field(default=10.0, gt=0)
    #: Connections served at once; past it uvicorn answers 503 (memory stays bounded).
    outlet_max_connections: int = Field(default=2_000, ge=1)
    #: Seconds an idle keep-alive connection stays open.
    outlet_keepalive_s: int = Field(default=5, ge=1)
    #: Run the forwarder (off only for tests and the HTTP benchmark).
    outlet_forward: bool = True
    #: Bench only: answer POSTs without the log (the HTTP stack's ceiling).
    outlet_no_log: bool = False
    #: Crash tests only: ``os._exit`` right after a broker ack, before marking forwarded.
    outlet_crash_after_send: bool = False

    @property
    def outlet_db_path(self) -> Path:
        return self.data_dir / f"outlet-{self.store_id}.sqlite"


def load_settings(**overrides: object) -> OutletSettings:
    """Read the settings from the environment, with explicit overrides on top."""
    return OutletSettings(**overrides)  # type: ignore[arg-type]
