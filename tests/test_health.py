"""Health and readiness probes (any Host, no token) and `minetune serve --log-format json`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from minetune.config import load_settings
from minetune.server.app import create_app
from minetune.store import Store
from minetune.store.users import issue_token
from serverutil import serve_app

PROBE_HOST = {"Host": "10.1.2.3:8000"}  # a load balancer names the backend by its address


def test_probes_answer_any_host_without_a_token_and_nothing_else_does() -> None:
    settings = load_settings()
    store = Store.open(settings)
    issue_token(store.db, "alice")  # tokens exist: every other route needs one
    store.close()
    app = create_app(settings)
    with serve_app(app) as url:
        assert httpx.get(url + "/healthz", headers=PROBE_HOST).json() == {"status": "ok"}
        ready = httpx.get(url + "/readyz", headers=PROBE_HOST)
        assert ready.status_code == 200 and ready.json()["database"] == "ok"
        assert ready.json()["queue"] == "local"
        assert httpx.get(url + "/v1/models", headers=PROBE_HOST).status_code == 400  # Host guard
        assert httpx.get(url + "/v1/models").status_code == 401  # token needed
        assert httpx.post(url + "/readyz", headers=PROBE_HOST).status_code == 400  # only GET is a probe


def test_readiness_fails_with_503_when_the_database_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(load_settings())
    state = app.state.minetune

    def broken() -> Any:
        raise OSError("connection refused by the database")

    monkeypatch.setattr(state.db, "transaction", broken)
    with serve_app(app) as url:
        down = httpx.get(url + "/readyz")
        assert down.status_code == 503
        assert down.json() == {"status": "unavailable", "database": "connection refused by the database"}
        assert httpx.get(url + "/healthz").status_code == 200  # alive, just not ready


def test_serve_writes_one_json_object_per_log_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = os.environ | {"MINETUNE_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "minetune.cli", "serve", "--port", str(port), "--log-format", "json"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "server did not start"
                time.sleep(0.1)
        httpx.get(f"http://127.0.0.1:{port}/no-such-page", timeout=5)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert {(r["method"], r["path"], r["status"]) for r in access} >= {
        ("GET", "/healthz", 200),
        ("GET", "/no-such-page", 404),
    }
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
