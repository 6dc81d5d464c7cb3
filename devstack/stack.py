"""Start and stop the whole embedded stack: broker, PostgreSQL, topics, database."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from devstack.broker import TansuBroker
from devstack.postgres import EmbeddedPostgres
from devstack.process import StackError

DATABASE = "retail"


@dataclass
class StackInfo:
    """What a running stack looks like from outside (``.devstack/stack.json``)."""

    kafka_brokers: str
    database_url: str
    admin_database_url: str
    data_dir: str
    broker_pid: int | None
    postgres_pid: int | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__, option=orjson.OPT_INDENT_2)


async def create_topics(bootstrap: str, topics: dict[str, int], wait_s: float = 30.0) -> None:
    """Create the missing topics (name -> partitions); retry until the broker answers."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + wait_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(name, partitions, 1) for name, partitions in topics.items()
                if name not in existing
            ]  # fmt: skip
            if missing:
                await admin.create_topics(missing)
            return
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise StackError(f"could not create topics on {bootstrap}: {exc!r}") from exc
            await asyncio.sleep(0.2)
        finally:
            await admin.close()


def create_database(pg: EmbeddedPostgres, name: str = DATABASE) -> None:
    from devstack.postgres import postgres_bin

    psql = postgres_bin() / "psql"
    exists = subprocess.run(
        [str(psql), pg.url(), "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if exists != "1":
        subprocess.run([str(psql), pg.url(), "-qc", f"CREATE DATABASE {name}"], check=True)


@dataclass
class DevStack:
    """Tansu + PostgreSQL on free loopback ports, with topics and database made.

    ``persistent=True`` runs Tansu on S3 storage (a loopback moto server) so
    the broker can be killed and restarted without losing records.
    """

    data_dir: Path
    partitions: int = 8
    persistent: bool = False
    broker_port: int = 0
    postgres_port: int = 0
    broker: TansuBroker = field(init=False)
    postgres: EmbeddedPostgres = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.broker = TansuBroker(
            self.data_dir / "broker", port=self.broker_port, persistent=self.persistent
        )
        self.postgres = EmbeddedPostgres(self.data_dir / "postgres", port=self.postgres_port)

    @property
    def kafka_brokers(self) -> str:
        return f"kafka://{self.broker.bootstrap}"

    @property
    def database_url(self) -> str:
        return self.postgres.url(DATABASE)

    def topics(self) -> dict[str, int]:
        return {"retail.events": self.partitions, "retail.dead-letters": self.partitions}

    def start(self) -> StackInfo:
        try:
            self.broker.start()
            self.postgres.start()
            asyncio.run(create_topics(self.broker.bootstrap, self.topics()))
            create_database(self.postgres)
        except BaseException:
            self.stop()
            raise
        return self.info()

    def restart_broker(self, *, kill: bool = True) -> None:
        """Stop (kill -9 by default) and start the broker on the same port."""
        if kill:
            self.broker.kill()
        else:
            self.broker.stop()
        self.broker.start()

    def info(self, **extra: Any) -> StackInfo:
        return StackInfo(
            kafka_brokers=self.kafka_brokers,
            database_url=self.database_url,
            admin_database_url=self.postgres.url(DATABASE),
            data_dir=str(self.data_dir),
            broker_pid=self.broker.proc.pid if self.broker.proc else None,
            postgres_pid=self.postgres.proc.pid if self.postgres.proc else None,
            extra=dict(extra),
        )

    def env(self) -> dict[str, str]:
        """The ``RETAIL_*`` variables that point a process at this stack."""
        return {
            "RETAIL_KAFKA_BROKERS": self.kafka_brokers,
            "RETAIL_DATABASE_URL": self.database_url,
            "RETAIL_TOPIC_PARTITIONS": str(self.partitions),
            **self.broker.client_env(),
        }

    def stop(self) -> None:
        self.postgres.stop()
        self.broker.close()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> DevStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
