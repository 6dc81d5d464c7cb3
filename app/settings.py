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
    events_topic: str = "retail.events"
    dead_letters_topic: str = "retail.dead-letters"
    topic_partitions: int = Field(default=8, ge=1)
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
    #: Events taken from the stream per batch, and how long to wait to fill one.
    apply_batch_max: int = Field(default=2000, ge=1)
    apply_batch_within_s: float = Field(default=0.05, gt=0)
    #: Kafka consumer-group timings; short values make joins fast on Tansu.
    broker_session_timeout_s: float = 6.0
    broker_heartbeat_interval_s: float = 2.0
    broker_rebalance_timeout_s: float = 3.0
    low_stock_threshold: int = 0
    #: RocksDB memory per table partition (Faust's defaults, 64 MB memtables x3
    #: and a 2 GB block cache, would not fit 8 tables x 8 partitions in 1 GB)
    rocksdb_write_buffer_mb: int = Field(default=2, ge=1)
    rocksdb_block_cache_mb: int = Field(default=4, ge=1)

    # --- Postgres sink ------------------------------------------------------
    sink_enabled: bool = True
    sink_batch_max: int = Field(default=5000, ge=1)
    sink_batch_within_s: float = Field(default=0.1, gt=0)

    # --- outlet agent -------------------------------------------------------
    store_id: str = ""
    outlet_host: str = "127.0.0.1"
    outlet_port: int = 8700
    central_url: str = "http://127.0.0.1:6066"
    enable_idempotence: bool = False
    forward_batch_max: int = Field(default=500, ge=1)
    #: Events packed into one Kafka record while draining a backlog (1 = never pack).
    forward_pack_max: int = Field(default=50, ge=1)
    retention_s: float = Field(default=7 * 24 * 3600, ge=0)

    @property
    def bootstrap_servers(self) -> str:
        """The broker list without Faust's ``kafka://`` scheme, for aiokafka."""
        return ",".join(
            part.strip().removeprefix("kafka://") for part in self.kafka_brokers.split(",")
        )

    @property
    def known_stores(self) -> frozenset[str]:
        return frozenset(s.strip() for s in self.stores.split(",") if s.strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
