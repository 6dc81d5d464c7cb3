"""Child processes that never outlive their owner, and waits with deadlines."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import httpx


class StackError(RuntimeError):
    """A service of the embedded stack did not start; the message says where to look."""


#: Every port :func:`free_port` has handed out in this process. The kernel
#: offers a port again as soon as the probe closes it (8 repeats in 500 calls
#: here), and two agents of one simulated chain given the same port fought
#: over it: the second exited, and was restarted into the same fight.
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, and never one this process has handed out before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


@functools.cache
def _probe_client() -> httpx.Client:
    """One client for every readiness probe of this process. ``httpx.get`` builds
    a client, and so an SSL context, per call: polling a hundred starting agents
    that way was a quarter of the simulator's CPU while they booted (py-spy)."""
    return httpx.Client(timeout=1)


def health_answers(url: str) -> bool:
    """Whether the service at ``url`` answers ``GET /health`` with 200."""
    try:
        return _probe_client().get(f"{url}/health").status_code == 200
    except httpx.HTTPError:
        return False


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; raise with ``what`` once ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    own_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a service in its own process group, its output in ``log_path``.

    A fresh process group lets :func:`stop_process` take down the whole tree,
    so a stopped stack leaves no orphans behind. ``own_session=False`` keeps
    the caller's session: where the kernel groups sessions for scheduling
    (``sched_autogroup_enabled``), such processes share the caller's CPU share
    instead of each getting one of its own.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            user=user,
            start_new_session=own_session,
            process_group=None if own_session else 0,
        )


def stop_process(
    proc: subprocess.Popen[bytes], *, timeout: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """Signal the process group (SIGTERM), SIGKILL it if it lingers, and reap it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_process(proc)


def kill_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group at once (a crash, not a shutdown)."""
    if proc.poll() is not None:
        return  # already reaped: its pid (and group id) may belong to another process now
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


class Killable:
    """A managed subprocess that can be killed -9 (a fault) or stopped (SIGTERM, then -9).

    Mixed into the simulator's and the tests' process handles, which keep
    their ``Popen`` in ``proc`` (``None`` once it is gone).
    """

    proc: subprocess.Popen[bytes] | None
    #: seconds a SIGTERM gets before the group is SIGKILLed
    stop_timeout_s: ClassVar[float] = 10.0

    def kill(self) -> None:
        if self.proc is not None:
            kill_process(self.proc)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=self.stop_timeout_s)
            self.proc = None
