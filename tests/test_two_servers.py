"""Two real `minetune serve` processes on one PostgreSQL database: a training run started through
either is one job row both show, and the two never train one program at the same time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from minetune.config import load_settings
from minetune.store import Store
from minetune.store import jobs as job_rows
from minetune.store.users import issue_token
from test_train import seed_program

FORM = {
    "program": "p",
    "method": "sft",
    "steps": "6",
    "lr": "5e-3",
    "batch_size": "4",
    "rank": "8",
    "max_length": "96",
    "threads": "1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(home: Path, database_url: str, model_root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = os.environ | {
        "MINETUNE_HOME": str(home),
        "MINETUNE_DATABASE_URL": database_url,
        "MINETUNE_MODEL_ROOTS": str(model_root),  # the web app trains only on models under its roots
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "minetune.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            httpx.get(url + "/login", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not start")


@pytest.fixture
def two_servers(database_url: str, tmp_path: Path, tiny_model_dir: Path) -> Iterator[tuple[str, str, str]]:
    """Two servers on one PostgreSQL database with a token for alice (so both require tokens)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("two servers share one database only on PostgreSQL")
    store = Store.open(load_settings(database_url=database_url), "alice")
    token = issue_token(store.db, "alice")
    store.close()
    started = [_serve(tmp_path / f"home-{i}", database_url, tiny_model_dir.parent) for i in range(2)]
    try:
        yield started[0][1], started[1][1], token
    finally:
        for process, _ in started:
            process.terminate()
            process.wait(20)


@pytest.mark.slow
def test_two_servers_share_one_job_queue_and_never_train_one_program_at_once(
    two_servers: tuple[str, str, str], database_url: str, tiny_model_dir: Path
) -> None:
    a, b, token = two_servers
    store = Store.open(load_settings(database_url=database_url), "alice")
    http = httpx.Client(
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}, timeout=30
    )
    seed_program(store, tiny_model_dir)
    # Both servers are asked at once; the second is refused while the first one's run is active.
    first = http.post(a + "/training/local", data=FORM)
    second = http.post(b + "/training/local", data=FORM)
    assert first.status_code == 202, first.text
    assert second.status_code == 409 and "already running" in second.text, second.text
    run = first.json()["run"]
    # Server B shows server A's run, live, from the job row.
    seen_on_b = http.get(f"{b}/training/runs/{run}")
    assert seen_on_b.status_code == 200 and seen_on_b.json()["status"] in ("queued", "running", "succeeded")
    deadline = time.monotonic() + 240
    while http.get(f"{a}/training/runs/{run}").json()["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.2)
    assert http.get(f"{b}/training/runs/{run}").json()["status"] == "succeeded"
    # Now B may train; the runs' time windows never overlap.
    again = http.post(b + "/training/local", data=FORM)
    assert again.status_code == 202, again.text
    while http.get(f"{b}/training/runs/{again.json()['run']}").json()["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, "the second run did not finish"
        time.sleep(0.2)
    rows = sorted(job_rows.list_jobs(store, "p", kinds=["train"]), key=lambda r: r.id)
    assert [r.status for r in rows] == ["succeeded", "succeeded"]
    assert len({r.owner for r in rows}) == 2  # one run in each server process
    assert rows[0].finished_at is not None and rows[1].started_at is not None
    assert rows[0].finished_at <= rows[1].started_at
    http.close()
    store.close()
