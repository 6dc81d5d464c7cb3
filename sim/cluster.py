"""The whole system as real processes the simulator can hurt.

Tansu (S3 storage, so a kill -9 keeps its records) advertises the port of
:mod:`sim.proxy`, so every client goes through the proxy and one store's link
can be cut alone. Workers and outlet agents are subprocesses in their own
process groups; :meth:`Cluster.close` stops every one of them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import psutil

from devstack.broker import TansuBroker, tansu_binary
from devstack.process import (
    Killable,
    StackError,
    free_port,
    health_answers,
    port_answers,
    spawn,
    stop_process,
    wait_until,
)
from devstack.s3 import MotoServer
from devstack.stack import DevStack

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ProxiedTansu(TansuBroker):
    """A Tansu that advertises the proxy's port instead of its own."""

    advertised_port: int = 0

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        env = dict(os.environ)
        storage = "memory://tansu/"
        if self.persistent:
            if self.s3 is None:
                self.s3 = MotoServer(self.data_dir / "s3")
                self.s3.start()
            storage = f"s3://{self.s3.bucket}/"
            env.update(self.s3.client_env())
        self.proc = spawn(
            [
                str(tansu_binary()), "broker",
                "--listener-url", f"tcp://{self.host}:{self.port}",
                "--advertised-listener-url", f"tcp://{self.host}:{self.advertised_port}",
                "--storage-engine", storage,
            ],
            log_path=self.log_path,
            env=env,
        )  # fmt: skip
        wait_until(self._ready, timeout=timeout, what=f"Tansu on port {self.port}")


@dataclass
class Proxy:
    """The :mod:`sim.proxy` subprocess, driven through its stdin."""

    target_port: int
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sim.proxy", "--listen", str(self.port),
                 "--target", str(self.target_port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                cwd=ROOT, start_new_session=True,
            )  # fmt: skip
        self._expect("ready")

    def _expect(self, word: str) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if line != word:
            raise StackError(f"proxy said {line!r}, not {word!r}; see {self.log_path}")

    def command(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        self._expect("ok")

    def cut(self, store_id: str) -> None:
        self.command(f"cut outlet-{store_id}")

    def restore(self, store_id: str) -> None:
        self.command(f"restore outlet-{store_id}")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            stop_process(self.proc)
            self.proc = None


@dataclass
class Worker(Killable):
    """``faust -A app worker`` that can be killed -9 and started again."""

    env: dict[str, str]
    data_dir: Path
    web_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    stop_timeout_s: ClassVar[float] = 15.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def name(self) -> str:
        return f"worker:{self.web_port}"

    def start(self) -> None:
        self.starts += 1
        env = {
            **os.environ,
            **self.env,
            "RETAIL_DATA_DIR": str(self.data_dir),
            "RETAIL_WEB_PORT": str(self.web_port),
            # each recovery's reads and ends in the worker's log, to place a
            # wrong read after one (bench/HISTORY.md, finding 11)
            "RETAIL_RECOVERY_LOG_LEVEL": "info",
        }
        self.proc = spawn(
            [sys.executable, "-m", "faust", "-A", "app", "worker", "-l", "warn"],
            log_path=self.data_dir / f"worker-{self.starts}.log",
            env=env,
            cwd=ROOT,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        def ready() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise StackError(f"worker exited; see {self.data_dir}")
            return health_answers(self.url)

        wait_until(ready, timeout=timeout, what=f"worker on {self.url}", interval=0.2)


@dataclass
class SinkProcess(Killable):
    """``python -m sink run``: the Postgres sink apart from the workers (sink/service.py)."""

    env: dict[str, str]
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    name: str = "sink"
    stop_timeout_s: ClassVar[float] = 15.0

    def start(self) -> None:
        self.starts += 1
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(
            [sys.executable, "-m", "sink", "run"],
            log_path=self.data_dir / f"sink-{self.starts}.log",
            env={**os.environ, **self.env, "RETAIL_DATA_DIR": str(self.data_dir)},
            cwd=ROOT,
        )


@dataclass
class Outlet(Killable):
    """``python -m outlet_agent run`` for one store (or :mod:`sim.skewed` with a clock skew)."""

    store_id: str
    data_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    clock_skew_s: float = 0.0
    #: scheduling niceness: the agents stand for the stores' own machines, so on
    #: one shared box they must not take the CPU the centre needs (see Cluster);
    #: they stay in the simulator's session, so all of them together weigh what
    #: one process of the centre does (see Cluster.outlet_nice)
    nice: int = 0
    token: str = ""
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return self.store_id

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.env,
            "RETAIL_STORE_ID": self.store_id,
            "RETAIL_DATA_DIR": str(self.data_dir),
            "RETAIL_OUTLET_PORT": str(self.port),
            "RETAIL_OUTLET_SEND_TIMEOUT_S": "3",
            "RETAIL_OUTLET_BACKOFF_MAX_S": "1",
            "RETAIL_LOG_LEVEL": "warning",
        }

    def add_token(self) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "outlet_agent", "tokens", "add", "--terminal", "T1"],
            env=self._env(),
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.token = out.stdout.strip()
        return self.token

    def start(self) -> None:
        self.starts += 1
        argv = [sys.executable, "-m", "outlet_agent", "run"]
        if self.clock_skew_s:
            argv = [sys.executable, "-m", "sim.skewed", str(self.clock_skew_s), "run"]
        if self.nice:
            argv = ["nice", "-n", str(self.nice), *argv]
        self.proc = spawn(
            argv,
            log_path=self.data_dir / "agent.log",
            env=self._env(),
            cwd=ROOT,
            own_session=False,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise StackError(f"outlet {self.store_id} exited; see {self.data_dir}")
            return health_answers(self.url)

        wait_until(ready, timeout=timeout, what=f"outlet {self.store_id}", interval=0.1)

    def wait_ready_or_rebind(self, attempts: int = 3) -> None:
        """``wait_ready``; an agent whose free port was taken before it bound gets another.

        ``free_port`` only finds a port free at that moment: with a hundred
        agents starting beside the broker's and the workers' own connections,
        one of them now and then loses its port to an outgoing connection.
        """
        for attempt in range(attempts):
            try:
                self.wait_ready()
                return
            except StackError:
                log_text = (self.data_dir / "agent.log").read_text(errors="replace")
                if attempt == attempts - 1 or "address already in use" not in log_text:
                    raise
                self.port = free_port()
                self.start()


@dataclass
class Cluster:
    """Broker (behind the proxy) + PostgreSQL + workers + one outlet agent per store."""

    data_dir: Path
    stores: list[str]
    partitions: int = 8
    persistent: bool = True
    skewed: dict[str, float] = field(default_factory=dict)
    #: False: clients talk to Tansu directly (no link cuts; for a baseline)
    proxied: bool = True
    #: Niceness of the outlet agents. In a chain every store has its own
    #: machine; here a hundred agents share two cores with the centre, and
    #: at equal priority they took half of it (about 4 ms of CPU per request at a
    #: store's few requests a second), so the worker fell behind for want of CPU,
    #: not of speed. A nicer agent still answers; it answers later when the
    #: box is full, which shows as fewer events accepted (and, see below, as
    #: lag on the store side). 19, the
    #: lowest: at 10, twenty agents replaying a backlog still took a fifth of
    #: the box from the worker applying it (a 24k-event drain measured
    #: 2,300-2,700 events/s at 10 and 3,460 at 19).
    #:
    #: Where the kernel schedules sessions as groups (``sched_autogroup``), a
    #: niceness only ranks processes inside their session. The agents used to
    #: start a session each, so a hundred of them at 19 still weighed half as
    #: much again as the worker, and took 0.45-0.5 of a core from it while it
    #: drained a backlog. They now stay in the simulator's session (the tills):
    #: together, the store side weighs what one process of the centre does.
    #:
    #: Inside that session 19 ranks the agents far below the tills, and it does
    #: show as lag: an agent waits for a CPU before it sends what it made
    #: durable (run 29: 1,420 ms of a 1,703 ms steady p99; the ledger's
    #: ``sent_at``). At 0 or 10 (runs 30-31) that part fell to 400-490 ms, but
    #: the tills then fell behind (950-956 events/s accepted of 1,010): on two
    #: shared cores the store side cannot have both, and an offered load that is
    #: not offered measures nothing, so 19 stays (``--agent-nice`` for the rest).
    outlet_nice: int = 19
    #: the Postgres sink as its own process (``python -m sink run``), as in
    #: production, rather than an agent sharing each worker's one CPU
    separate_sink: bool = True
    sink: SinkProcess | None = None
    stack: DevStack = field(init=False)
    proxy: Proxy = field(init=False)
    workers: list[Worker] = field(default_factory=list)
    outlets: dict[str, Outlet] = field(default_factory=dict)
    app_id: str = field(default_factory=lambda: f"sim-{uuid.uuid4().hex[:6]}")

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.stack = DevStack(
            self.data_dir / "stack", partitions=self.partitions, persistent=self.persistent
        )
        broker_port = free_port()
        self.proxy = Proxy(broker_port, self.data_dir / "proxy.log")
        self.stack.broker = ProxiedTansu(
            self.data_dir / "stack" / "broker",
            port=broker_port,
            persistent=self.persistent,
            advertised_port=self.proxy.port if self.proxied else broker_port,
        )

    @property
    def bootstrap(self) -> str:
        """Where clients connect: the proxy (or the broker itself when not proxied)."""
        return f"127.0.0.1:{self.proxy.port if self.proxied else self.stack.broker.port}"

    @property
    def database_url(self) -> str:
        return self.stack.database_url

    def central_env(self) -> dict[str, str]:
        return {
            "RETAIL_KAFKA_BROKERS": f"kafka://{self.bootstrap}",
            "RETAIL_DATABASE_URL": self.database_url,
            "RETAIL_TOPIC_PARTITIONS": str(self.partitions),
            "RETAIL_APP_ID": self.app_id,
            **self.stack.broker.client_env(),  # S3 storage: a longer fetch wait
        }

    def worker_env(self) -> dict[str, str]:
        return {**self.central_env(), "RETAIL_SINK_ENABLED": str(not self.separate_sink).lower()}

    def start(self, workers: int = 1) -> None:
        self.proxy.start()
        self.stack.start()
        for _ in range(workers):
            self.add_worker()
        if self.separate_sink:
            self.sink = SinkProcess(self.central_env(), self.data_dir / "sink")
            self.sink.start()
        central = self.workers[0].url
        for store in self.stores:
            outlet = Outlet(
                store,
                self.data_dir / f"outlet-{store}",
                {**self.central_env(), "RETAIL_CENTRAL_URL": central},
                clock_skew_s=self.skewed.get(store, 0.0),
                nice=self.outlet_nice,
            )
            outlet.add_token()
            outlet.start()
            self.outlets[store] = outlet
        for w in self.workers:
            w.wait_ready()
        for o in self.outlets.values():
            o.wait_ready_or_rebind()

    def add_worker(self) -> Worker:
        w = Worker(self.worker_env(), self.data_dir / f"worker{len(self.workers) + 1}")
        w.start()
        self.workers.append(w)
        return w

    def broker_reachable(self) -> bool:
        return port_answers(self.stack.broker.port)

    def close(self) -> None:
        for o in self.outlets.values():
            o.stop()
        for w in self.workers:
            w.stop()
        if self.sink is not None:
            self.sink.stop()
        self.stack.stop()
        self.proxy.stop()

    def crashed(self) -> list[Worker | Outlet | SinkProcess]:
        """Processes that exited on their own (the faults clear ``proc`` when they kill)."""
        procs: list[Worker | Outlet | SinkProcess] = [*self.workers, *self.outlets.values()]
        if self.sink is not None:
            procs.append(self.sink)
        return [p for p in procs if p.proc is not None and p.proc.poll() is not None]

    def worker_rss_mb(self) -> float:
        """The workers' resident memory together (MB; 0 for one not running)."""
        total = 0.0
        for w in self.workers:
            if w.proc is not None:
                with contextlib.suppress(psutil.Error):
                    total += psutil.Process(w.proc.pid).memory_info().rss / 2**20
        return total

    def role_pids(self) -> dict[str, list[int]]:
        """Each part of the chain's processes now, for :class:`sim.role_cpu.RoleCpu`
        (``postgres+``: the postmaster and its backends; ``simulator``: the tills,
        the samplers and this controller)."""

        def live(*procs: subprocess.Popen[bytes] | None) -> list[int]:
            return [p.pid for p in procs if p is not None and p.poll() is None]

        broker = self.stack.broker
        return {
            "workers": live(*(w.proc for w in self.workers)),
            "sink": live(self.sink.proc if self.sink else None),
            "broker": live(broker.proc),
            "s3": live(broker.s3.proc if broker.s3 else None),
            "proxy": live(self.proxy.proc),
            "postgres+": live(self.stack.postgres.proc),
            "outlets": live(*(o.proc for o in self.outlets.values())),
            "simulator": [os.getpid()],
        }

    def pids(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for w in self.workers:
            out[f"worker:{w.web_port}"] = w.proc.pid if w.proc else None
        for s, o in self.outlets.items():
            out[f"outlet:{s}"] = o.proc.pid if o.proc else None
        if self.sink is not None:
            out["sink"] = self.sink.proc.pid if self.sink.proc else None
        return out
