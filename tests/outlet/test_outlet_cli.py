"""``python -m outlet_agent status``: the log it reads and the agent it asks are this store's."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from outlet_agent.cli import main
from outlet_agent.config import load_settings
from outlet_agent.log import open_sync


@pytest.fixture
def other_store_agent() -> Iterator[int]:
    """Something on the agent's port answering ``/v1/status`` as store S002."""

    class Status(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"store_id": "S002", "broker_connected": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _env(monkeypatch: pytest.MonkeyPatch, data_dir: Path, port: int) -> Path:
    monkeypatch.setenv("RETAIL_STORE_ID", "S050")
    monkeypatch.setenv("RETAIL_DATA_DIR", str(data_dir))
    monkeypatch.setenv("RETAIL_OUTLET_PORT", str(port))
    return load_settings().outlet_db_path


def test_status_without_a_log_says_so_and_makes_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, other_store_agent: int
) -> None:
    db_path = _env(monkeypatch, tmp_path / "empty", other_store_agent)
    assert main(["status", "--json"]) == 1
    assert not db_path.exists(), "a read-only command made a log"


def test_status_does_not_take_another_stores_agent_for_its_own(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    other_store_agent: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db_path = _env(monkeypatch, tmp_path, other_store_agent)
    open_sync(db_path).close()
    assert main(["status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["store_id"] == "S050"
    assert (out["agent_running"], out["broker_connected"]) == (False, None)
    assert out["port_answered_by"] == "S002"
