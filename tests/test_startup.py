"""Start-up stays light (issue 12): ``minetune stats`` reads the store without the ORM, the server
starts without numpy, the ML stack, the openai SDK or Jinja2, and the embedder warm-up waits for
the first answer. Timings live in bench/startup.py; these tests guard what is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from minetune.config import load_settings
from minetune.errors import NotFoundError
from minetune.server import app as server_app
from minetune.store import DEFAULT_USER, Store
from minetune.store import schema as schema_module
from minetune.store import stats as stats_module
from serverutil import serve_app

SRC = str(Path(__file__).resolve().parents[1] / "src")
# What neither start-up path may import: the ML stack, numpy, the openai SDK (the proxy's upstream
# client), onnxruntime (the embedder, loaded after the first answer) and Jinja2 (the first page).
HEAVY = ("torch", "transformers", "sentence_transformers", "onnxruntime", "numpy", "openai", "jinja2")


def _loaded_modules(code: str, candidates: tuple[str, ...]) -> list[str]:
    """The ``candidates`` in sys.modules after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint('loaded:', *(m for m in {candidates!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": SRC}
    command = [sys.executable, "-c", probe]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1].split()
    assert last[0] == "loaded:"
    return last[1:]


def _rate(store: Store, program: str, message: str, *ratings: tuple[str, int | None]) -> None:
    conv = store.start_conversation(program)
    turn = store.add_turn(conv.id, message)
    attempt = store.add_attempt(
        turn.id, version_id=None, model_spec="m", messages=[{"role": "user", "content": message}],
        response="an answer", latency_ms=1.0, prompt_tokens=None, completion_tokens=None,
    )
    for kind, stars in ratings:
        store.add_feedback(attempt.id, kind, stars, text="perfect" if kind == "praise" else None)


def test_stats_without_the_orm_match_the_store(database_url: str) -> None:
    settings = load_settings(database_url=database_url)
    store, other = Store.open(settings), Store.open(settings, user="someone-else")
    try:
        store.create_program("timmy", "Be cheeky.")
        _rate(store, "default", "q1", ("explicit", 2), ("explicit", 5))
        _rate(store, "default", "q2", ("praise", None))
        _rate(store, "timmy", "q3", ("imported", 4), ("praise", None))
        _rate(other, "default", "not mine", ("explicit", 1))
        for program in (None, "default", "timmy"):
            light = stats_module.read_stats(settings.home, database_url, DEFAULT_USER, program)
            assert light == store.stats(program)
        assert light["turns"] == 1 and light["captures"] == 1 and light["ratings"]["4"] == 1
        with pytest.raises(NotFoundError, match="No program named 'nope'"):
            stats_module.read_stats(settings.home, database_url, DEFAULT_USER, "nope")
        with pytest.raises(NotFoundError):
            stats_module.read_stats(settings.home, database_url, DEFAULT_USER, "bad\x00name")
        # A user with no data yet has zero counts, and reading them creates nothing.
        users_before = store.row_counts()["users"]
        fresh = stats_module.read_stats(settings.home, database_url, "nobody-yet", "default")
        assert fresh["turns"] == 0 and fresh["ratings"] == {str(n): 0 for n in range(1, 6)}
        assert store.row_counts()["users"] == users_before
    finally:
        store.close()
        other.close()


def test_the_stats_command_prints_the_stores_numbers() -> None:
    store = Store.open(load_settings())
    try:
        _rate(store, "default", "q", ("explicit", 3), ("praise", None))
        expected = store.stats()
    finally:
        store.close()
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "40"}
    command = [sys.executable, "-m", "minetune.cli", "stats", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected


def test_stats_feedback_kinds_are_the_schemas() -> None:
    assert stats_module.FEEDBACK_KINDS == schema_module.FEEDBACK_KINDS


def test_the_stats_command_loads_neither_the_orm_nor_heavy_libraries() -> None:
    Store.open(load_settings()).close()  # created and migrated (a first run migrates with Alembic)
    code = (
        "import sys\nfrom minetune.cli import main\nsys.argv = ['minetune', 'stats', '--json']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
    )
    loaded = _loaded_modules(code, ("sqlalchemy.orm", "minetune.store.schema", "fastapi", *HEAVY))
    assert loaded == []


def test_server_start_up_imports_no_heavy_library() -> None:
    code = (
        "import uvicorn\nimport minetune.cli.serve\nfrom minetune.config import load_settings\n"
        "from minetune.server.app import create_app\ncreate_app(load_settings(), warm_up=True)"
    )
    assert _loaded_modules(code, HEAVY) == []


def test_warm_up_waits_for_the_first_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = threading.Event()
    monkeypatch.setattr("minetune.learn.embed.load_embedder", lambda *_args: loaded.set())
    monkeypatch.setattr(server_app, "WARM_UP_AFTER_S", 60.0)  # only the first answer can start it
    app = server_app.create_app(load_settings(), warm_up=True)
    with serve_app(app) as base:
        assert not loaded.wait(0.3)  # listening, nothing answered yet: the warm-up waits
        assert httpx.get(f"{base}/static/app.css").status_code == 200
        assert loaded.wait(10)


def test_a_warm_up_cancelled_before_it_starts_loads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr("minetune.learn.embed.load_embedder", lambda *args: calls.append(args))
    warm = server_app.EmbedderWarmUp("minilm-int8", Path("unused"))
    waiting = threading.Thread(target=warm.run)
    waiting.start()
    warm.cancel()
    waiting.join(10)
    assert not waiting.is_alive() and calls == []
