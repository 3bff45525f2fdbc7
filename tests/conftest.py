"""Shared fixtures: an isolated MINETUNE_HOME, stores on SQLite and PostgreSQL, a loopback fake
OpenAI-compatible server, and a tiny random Hugging Face model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_finetune import FakeFineTune
from fakes import FakeOpenAI, build_tiny_model


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own MINETUNE_HOME and no ambient model/key settings."""
    home = tmp_path / "home"
    monkeypatch.setenv("MINETUNE_HOME", str(home))
    for var in (
        "MINETUNE_MODEL",
        "MINETUNE_DATABASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "MINETUNE_API_KEY",
        "MINETUNE_RETRY_LIMIT",
    ):
        monkeypatch.delenv(var, raising=False)
    # Nothing listens here, so auto-detection never finds a real Ollama on the machine.
    monkeypatch.setenv("MINETUNE_OLLAMA_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # No test reads or writes the real system keyring (tests/test_keys.py installs a fake one).
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    return home


@pytest.fixture
def fake_llm() -> Iterator[FakeOpenAI]:
    """A loopback OpenAI-compatible server; ``fake_llm.requests`` holds every request body."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def ft(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFineTune]:
    """A loopback fake of the OpenAI fine-tuning API, with minetune's settings pointed at it."""
    with FakeFineTune() as fake:
        monkeypatch.setenv("MINETUNE_FINETUNE_BASE_URL", fake.base_url)
        # The fake is a base URL the user set for fine-tuning, so MINETUNE_API_KEY is scoped to it.
        monkeypatch.setenv("MINETUNE_API_KEY", fake.api_key)
        monkeypatch.setenv("MINETUNE_FINETUNE_POLL_INTERVAL", "0")
        yield fake


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random causal LM with a chat template, saved once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


POSTGRES_URL = os.environ.get("MINETUNE_TEST_POSTGRES_URL")


def _backends() -> list[object]:
    # In CI the PostgreSQL runs are required: a missing URL fails them instead of skipping.
    skip = not POSTGRES_URL and not os.environ.get("CI")
    postgres = pytest.param(
        "postgres",
        marks=[pytest.mark.postgres, pytest.mark.skipif(skip, reason="MINETUNE_TEST_POSTGRES_URL not set")],
    )
    return ["sqlite", postgres]


@pytest.fixture(params=_backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty database on each backend; also exported as MINETUNE_DATABASE_URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        assert POSTGRES_URL, "CI must set MINETUNE_TEST_POSTGRES_URL (see .ci/run)"
        url = _fresh_postgres_schema(POSTGRES_URL)
    monkeypatch.setenv("MINETUNE_DATABASE_URL", url)
    return url


def _fresh_postgres_schema(url: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    return url
