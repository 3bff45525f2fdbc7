"""Helpers for the chat, dataset and metrics web tests: settings with a fake model, NDJSON reading,
seeded turns, and a tiny deterministic embedder so demo tests do not load MiniLM (the served apps
are in ``webusers``)."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np

from fakes import FakeOpenAI
from minetune.config import Settings, load_settings
from minetune.learn import embed
from minetune.program import render_messages
from minetune.store import Store

WORDS_EMBEDDER = "test-words"


def fake_spec(fake: FakeOpenAI) -> str:
    return f"openai-compatible:fake@{fake.base_url}"


def web_settings(fake: FakeOpenAI | None, **overrides: Any) -> Settings:
    """Settings talking to ``fake`` (None: no model at all); re-optimization off unless asked."""
    overrides.setdefault("reoptimize", False)
    if fake is not None:
        overrides["model"] = fake_spec(fake)
    return load_settings(**overrides)


def ndjson(client: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST and read an NDJSON stream to the end; fails on a non-200 status."""
    with client.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            response.read()
            raise AssertionError(f"{path}: {response.status_code} {response.text}")
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line.strip()]


def done(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert events[-1]["type"] == "done", events[-1]
    return events[-1]


class WordEmbedder:
    """Hashed bag of words, unit length: similar wording gives similar vectors."""

    name = WORDS_EMBEDDER
    dim = 64

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                out[row, zlib.crc32(word.encode()) % self.dim] += 1.0
            norm = float(np.linalg.norm(out[row]))
            if norm:
                out[row] /= norm
        return out


@contextmanager
def word_embedder() -> Iterator[str]:
    """Register :class:`WordEmbedder` under ``test-words``; use ``embedder=test-words`` in settings."""
    embed._CACHE[WORDS_EMBEDDER] = WordEmbedder()
    try:
        yield WORDS_EMBEDDER
    finally:
        embed._CACHE.pop(WORDS_EMBEDDER, None)


def seed(
    store: Store, message: str, answers: list[tuple[str, int | None]], critique: str | None = None
) -> int:
    """A one-turn conversation answered by each (response, stars) in turn; returns the turn id."""
    version = store.active_version()
    conv = store.start_conversation(title=message)
    turn = store.add_turn(conv.id, message)
    for response, stars in answers:
        attempt = store.add_attempt(
            turn.id,
            version_id=version.id,
            model_spec="openai:fake",
            messages=render_messages(version, message, []),
            response=response,
            latency_ms=1.0,
        )
        if stars is not None:
            store.add_feedback(attempt.id, "explicit", stars=stars, critique=critique)
    return turn.id
