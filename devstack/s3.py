"""A loopback ``moto_server`` giving Tansu S3 storage that survives a broker restart."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack.process import StackError, free_port, spawn, stop_process, wait_until


@dataclass
class MotoServer:
    data_dir: Path
    port: int = 0
    bucket: str = "tansu"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """What Tansu's object-store client reads to reach this server."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "devstack",
            "AWS_SECRET_ACCESS_KEY": "devstack",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        argv = [exe] if exe else [sys.executable, "-m", "moto.server"]
        self.proc = spawn(
            [*argv, "-H", "127.0.0.1", "-p", str(self.port)],
            log_path=self.data_dir / "moto.log",
        )
        wait_until(self._ready, timeout=timeout, what=f"moto_server on port {self.port}")
        response = httpx.put(f"{self.endpoint}/{self.bucket}", timeout=5)
        if response.status_code >= 300:
            raise StackError(f"could not create bucket {self.bucket}: {response.status_code}")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(f"moto_server exited; see {self.data_dir / 'moto.log'}")
        try:
            return httpx.get(self.endpoint, timeout=0.5).status_code < 500
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
