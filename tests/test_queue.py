"""Team scale on PostgreSQL: two real `minetune serve` processes and a `minetune worker` sharing one
database, with training on the procrastinate queue.

Requests alternate between the servers (a critique given through one is a rule in the next prompt
through the other); a training run started through one server runs on the worker, live on both;
killing the worker mid-run leaves the job interrupted with nothing published, and a retry runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from fakes import FakeOpenAI
from minetune.config import ConfigError, load_settings
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store import jobs as job_rows
from minetune.store.users import issue_token
from test_train import seed_program
from test_two_servers import FORM, _serve
from webchat import fake_spec

RULE = "Answer in one short sentence."


def test_the_procrastinate_queue_needs_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINETUNE_QUEUE", "procrastinate")
    with pytest.raises(ConfigError, match="needs a PostgreSQL database"):
        load_settings()
    monkeypatch.setenv("MINETUNE_QUEUE", "celery")
    with pytest.raises(ConfigError, match="queue must be one of local, procrastinate"):
        load_settings()


def test_retry_needs_the_queue() -> None:
    from minetune.app import queue
    from minetune.errors import MinetuneError

    with pytest.raises(MinetuneError, match="queues the job for a worker"):
        queue.retry(load_settings(), 1)


def _wait_for(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _worker(home: Path, database_url: str, model_root: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "MINETUNE_HOME": str(home),
        "MINETUNE_DATABASE_URL": database_url,
        "MINETUNE_MODEL_ROOTS": str(model_root),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "minetune.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def team(
    database_url: str,
    tmp_path: Path,
    tiny_model_dir: Path,
    fake_llm: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, str, str]]:
    """Servers A and B (queue = procrastinate) on one PostgreSQL database, alice's token."""
    if not database_url.startswith("postgresql"):
        pytest.skip("servers and workers share a queue only on PostgreSQL")
    monkeypatch.setenv("MINETUNE_QUEUE", "procrastinate")
    monkeypatch.setenv("MINETUNE_EMBEDDER", "minilm")
    store = Store.open(load_settings(database_url=database_url), "alice")
    token = issue_token(store.db, "alice")
    store.close()
    servers = [_serve(tmp_path / f"home-{i}", database_url, tiny_model_dir.parent) for i in range(2)]
    try:
        yield servers[0][1], servers[1][1], token
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(20)


@pytest.mark.slow
def test_two_servers_and_a_worker_on_one_postgresql(
    team: tuple[str, str, str], database_url: str, tiny_model_dir: Path, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    a, b, token = team
    store = Store.open(load_settings(database_url=database_url), "alice")
    store.create_program("chat", "You answer questions.", fake_spec(fake_llm))
    seed_program(store, tiny_model_dir)
    http = httpx.Client(
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}, timeout=30
    )

    # A critique through server A becomes a rule in the next prompt through server B.
    fake_llm.reflection_replies.append(f'{{"rule": "{RULE}", "supersedes": []}}')
    client_a, client_b = (openai.OpenAI(base_url=u + "/v1", api_key=token, max_retries=0) for u in (a, b))
    ask = [{"role": "user", "content": "What is the capital of France?"}]
    first = client_a.chat.completions.create(model="minetune/chat", messages=ask)  # type: ignore[arg-type]
    rated = http.post(a + "/v1/feedback", json={"response_id": first.id, "stars": 2, "critique": "too long"})
    assert rated.status_code == 200, rated.text

    def rule_on_b() -> bool:
        client_b.chat.completions.create(model="minetune/chat", messages=ask)  # type: ignore[arg-type]
        return RULE in str(fake_llm.last["messages"][0]["content"])

    _wait_for(rule_on_b, "the rule learned through A in B's prompt", 60)

    # A training run started through A runs on the worker, live on both servers.
    worker = _worker(tmp_path / "worker-1", database_url, tiny_model_dir.parent)
    form = FORM | {"steps": "400"}
    started = http.post(a + "/training/local", data=form)
    assert started.status_code == 202, started.text
    run = started.json()["run"]

    def running_on_worker() -> bool:
        seen = [http.get(f"{url}/training/runs/{run}").json() for url in (a, b)]
        record = job_rows.get(store, run)
        return (
            record.status == "running"
            and record.owner.endswith(f":{worker.pid}")
            and all(s["status"] == "running" and (s.get("step") or 0) >= 1 for s in seen)
        )

    _wait_for(running_on_worker, "the run to train on the worker")
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)

    # The next worker marks it interrupted; nothing of it was published.
    second = _worker(tmp_path / "worker-2", database_url, tiny_model_dir.parent)
    try:
        _wait_for(
            lambda: job_rows.get(store, run).status == "interrupted", "the killed run to be interrupted"
        )
        assert adapters_db.list_adapters(store, "p") == []
        assert store.active_version("p").adapter is None
        assert http.get(f"{b}/training/runs/{run}").json()["status"] == "interrupted"

        env = os.environ | {"MINETUNE_HOME": str(tmp_path / "cli"), "MINETUNE_DATABASE_URL": database_url}
        retried = subprocess.run(
            [sys.executable, "-m", "minetune.cli", "worker", "retry", str(run)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert retried.returncode == 0, retried.stderr
        assert f"a retry of job {run}" in " ".join(retried.stdout.split())
        again = max(r.id for r in job_rows.list_jobs(store, "p", kinds=["train"]))
        assert again != run

        def finished() -> str | None:
            status = job_rows.get(store, again).status
            return status if status not in ("queued", "running") else None

        assert _wait_for(finished, "the retried run", 240) == "succeeded", job_rows.get(store, again).error
        record = job_rows.get(store, again)
        assert record.owner.endswith(f":{second.pid}")
        assert http.get(f"{a}/training/runs/{again}").json()["status"] == "succeeded"
        ((adapter, _),) = adapters_db.list_adapters(store, "p")
        assert adapter.path and Path(adapter.path).is_dir()
    finally:
        second.terminate()
        second.wait(30)
        http.close()
        store.close()
