"""One settings object for every process, read from ``RETAIL_*`` variables.

Development points at the embedded stack; production sets the same variables to
a real Kafka cluster and PostgreSQL, with no code change.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a worker, a sink or an outlet agent needs to know."""

    model_config = SettingsConfigDict(env_prefix="RETAIL_", frozen=True, extra="ignore")

    # --- shared -------------------------------------------------------------
    kafka_brokers: str = "kafka://127.0.0.1:9092"
    database_url: SecretStr = SecretStr("postgresql://retail@127.0.0.1:5432/retail")
    data_dir: Path = Path(".data")
    log_level: str = "info"
    #: the level of Faust's table-recovery log in a worker ("" = as the libraries')
    recovery_log_level: str = ""
    events_topic: str = "retail.events"
    dead_letters_topic: str = "retail.dead-letters"
    topic_partitions: int = Field(default=8, ge=1)
    #: Partitions of ``{app_id}.applied`` when a worker creates it (0: as many as
    #: ``topic_partitions``). Nothing requires it to match: the sink keeps its
    #: place per partition, and a store's records share one whichever count.
    #: On Tansu use 1: its fetch lists every batch a partition ever got, and
    #: each flush adds one to every partition of this topic (devstack/broker.py).
    applied_partitions: int = Field(default=0, ge=0)
    topic_replication: int = Field(default=1, ge=1)
    #: Comma-separated list of known stores; empty accepts any store id.
    stores: str = ""
    max_event_bytes: int = Field(default=64 * 1024, ge=1024)
    max_lines: int = Field(default=500, ge=1)

    # --- central worker -----------------------------------------------------
    app_id: str = "retail"
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    table_standby_replicas: int = Field(default=0, ge=0)
    #: A joining worker restores a partition's tables as a standby before it
    #: takes the partition over (app/warmup.py); off: Faust moves it at once
    #: and its stores wait while the new owner restores them.
    partition_warmup: bool = True
    #: Events taken from the stream per batch, and how long to wait to fill one.
    apply_batch_max: int = Field(default=2000, ge=1)
    apply_batch_within_s: float = Field(default=0.05, gt=0)
    #: Kafka consumer-group timings; short values make joins fast on Tansu.
    broker_session_timeout_s: float = 6.0
    broker_heartbeat_interval_s: float = 2.0
    broker_rebalance_timeout_s: float = 3.0
    low_stock_threshold: int = 0
    #: Longest a consumer fetch waits at the broker for data (Faust's own 1.5 s
    #: added ~0.5 s of sync lag on Tansu; see app/consumer_tuning.py).
    consumer_fetch_max_wait_ms: int = Field(default=50, ge=1)
    #: How long a consumer waits for a hole in a partition's offsets to fill
    #: before reading past it (app/fetch_holes.py); 0 reads past at once.
    fetch_hole_wait_s: float = Field(default=5.0, ge=0)
    #: RocksDB memory per table partition (Faust's defaults, 64 MB memtables x3
    #: and a 2 GB block cache, would not fit 8 tables x 8 partitions in 1 GB)
    rocksdb_write_buffer_mb: int = Field(default=1, ge=1)
    rocksdb_block_cache_mb: int = Field(default=1, ge=1)
    #: TEST ONLY (app/faults.py): ``<point>[@<n>]`` freezes the worker the n-th
    #: time its apply flush reaches <point>, so a test can SIGKILL it exactly
    #: there. Empty (the default) disables it; never set it in production.
    test_freeze_at: str = Field(
        default="",
        pattern=r"^((before_changelog|changelog_partial|before_commit)(@[1-9][0-9]*)?)?$",
    )

    # --- Postgres sink ------------------------------------------------------
    sink_enabled: bool = True
    #: Apply migrations when the sink starts; off when a separate migration
    #: job owns the schema and the worker logs in as a sink-only role.
    sink_migrate: bool = True
    sink_batch_max: int = Field(default=5000, ge=1)
    sink_batch_within_s: float = Field(default=0.1, gt=0)
    #: The longest the sink's fetch waits at the broker (in a worker or apart).
    #: Longer than the worker's because the sink's target is PostgreSQL within
    #: 1.5 s, not the centre within 1 s: fewer, bigger fetches mean fewer and
    #: bigger PostgreSQL transactions, and on Tansu fewer listings of every
    #: batch of the partition (the broker always waits this long anyway).
    sink_fetch_max_wait_ms: int = Field(default=250, ge=1)
    #: ``python -m sink run`` only: serve ``/metrics`` (Prometheus) on this port
    #: of ``RETAIL_WEB_HOST``; 0 serves none.
    sink_metrics_port: int = Field(default=0, ge=0, le=65535)

    # --- outlet agent -------------------------------------------------------
    store_id: str = ""
    outlet_host: str = "127.0.0.1"
    outlet_port: int = 8700
    central_url: str = "http://127.0.0.1:6066"
    enable_idempotence: bool = False
    #: Events the forwarder reads and sends per page (at most about 1 MiB of
    #: them: one produce request); each page waits for its acknowledgement, so
    #: a backlog replays in backlog / page round trips. 500 made a store's
    #: catch-up after the bench's 5-minute cut take six round trips, and an
    #: agent starved of CPU (here a hundred share two cores) spent seconds on each.
    forward_batch_max: int = Field(default=2000, ge=1)
    #: Events packed into one Kafka record while draining a backlog (1 = never pack).
    forward_pack_max: int = Field(default=50, ge=1)
    retention_s: float = Field(default=7 * 24 * 3600, ge=0)

    # --- security (issue 10; SECURITY.md) --------------------------------------
    #: Centre: reject (dead-letter) unsigned events. Signed events are verified
    #: whenever the centre has keys, whatever this says.
    require_signatures: bool = False
    #: Centre: ``key_id=store_id:base64key`` entries, comma- or newline-separated;
    #: a key signs for its one store. Two ids for one store during a rotation.
    signing_keys: SecretStr = SecretStr("")
    #: Centre: a file with more entries of the same form (one a line, ``#`` comments).
    signing_keys_file: Path | None = None
    #: Outlet: the id and base64 key it signs every event with (or the key in a file).
    signing_key_id: str = ""
    signing_key: SecretStr = SecretStr("")
    signing_key_file: Path | None = None
    #: Kafka transport: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    #: CA bundle that signs the brokers' certificates (default: the system's).
    kafka_ssl_cafile: Path | None = None
    #: Client certificate and key, for brokers that require mutual TLS.
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    #: Off only for a test broker with a self-signed certificate and no CA.
    kafka_ssl_check_hostname: bool = True
    #: PostgreSQL TLS goes in the DSN (asyncpg reads it there):
    #: ``?sslmode=verify-full&sslrootcert=/path/ca.pem`` (SECURITY.md "Transport").

    @property
    def bootstrap_servers(self) -> str:
        """The broker list without Faust's ``kafka://`` scheme, for aiokafka."""
        return ",".join(
            part.strip().removeprefix("kafka://") for part in self.kafka_brokers.split(",")
        )

    @property
    def applied_topic_partitions(self) -> int:
        return self.applied_partitions or self.topic_partitions

    @property
    def known_stores(self) -> frozenset[str]:
        return frozenset(s.strip() for s in self.stores.split(",") if s.strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
