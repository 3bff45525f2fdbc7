"""The fast query embedder (MiniLM as int8 ONNX): its top-k agrees with MiniLM's, it is derived
locally once and cached, a cached load needs no torch, and switching embedders re-embeds lazily."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fakes import FakeOpenAI
from minetune.config import load_settings
from minetune.learn import fast_embed
from minetune.learn.embed import cache_dir, load_embedder
from minetune.learn.fast_embed import ONNX_INT8, OnnxMiniLMEmbedder, cache_path
from minetune.loop import Session
from minetune.store import Store

CANDIDATES = [
    "How do I sort a list of dicts by a key in Python?",
    "Read a CSV file with pandas",
    "What's the best way to rebase a feature branch onto main?",
    "Undo my last git commit",
    "How do I make a sourdough starter?",
    "Substitute eggs in a chocolate cake",
    "Plan three days in Lisbon",
    "Pack for two weeks with only a carry-on",
    "How do I start running as a beginner?",
    "Home workout without equipment",
    "Build an emergency fund on a small salary",
    "Pay off credit card debt faster",
    "Explain Bayes' theorem with an example",
    "Derivative of x^x",
    "Why is the sky blue?",
    "Summarise the causes of World War I",
    "Grow tomatoes on a balcony",
    "Stop a puppy from biting",
    "Learn guitar chords faster",
    "Explain LoRA fine-tuning simply",
    "Fix a dripping tap",
    "Jump start a car",
    "Deal with stress before an exam",
    "Write a wedding toast for my sister",
    "Find which process listens on a port in Linux",
    "Find duplicate rows in PostgreSQL",
]
QUERIES = [
    "python: sorting dictionaries by a field?",
    "git rebase onto main branch",
    "baking bread starter tips",
    "cheap travel itinerary for Portugal",
    "couch to 5k advice",
    "how to get out of debt",
    "probability with Bayes rule",
    "my dog keeps nipping",
    "car battery is dead",
    "anxiety before a test",
    "a speech for a wedding",
    "SQL query to find duplicates",
]


@pytest.fixture(scope="module")
def embedders(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, OnnxMiniLMEmbedder, Path]:
    folder = tmp_path_factory.mktemp("embedders")
    return load_embedder("minilm"), OnnxMiniLMEmbedder(folder), folder


def test_top_k_agrees_with_minilm(embedders: tuple[object, OnnxMiniLMEmbedder, Path]) -> None:
    minilm, fast, _ = embedders
    base_c, base_q = minilm.encode(CANDIDATES), minilm.encode(QUERIES)  # type: ignore[attr-defined]
    fast_c, fast_q = fast.encode(CANDIDATES), fast.encode(QUERIES)
    assert fast_c.shape == (len(CANDIDATES), 384) and fast_c.dtype == np.float32
    assert np.allclose(np.linalg.norm(fast_c, axis=1), 1.0, atol=1e-4)
    k = 3
    recall = np.mean(
        [
            len(set(np.argsort(-(base_c @ bq))[:k]) & set(np.argsort(-(fast_c @ fq))[:k])) / k
            for bq, fq in zip(base_q, fast_q, strict=True)
        ]
    )
    assert recall >= 0.9
    assert float(np.mean(np.sum(base_c * fast_c, axis=1))) > 0.97
    # A single text (the request path) and the same text in a padded batch nearly agree (dynamic
    # int8 quantisation scales activations per batch, so they are not bit-identical).
    single = np.stack([fast.encode([q])[0] for q in QUERIES])
    assert float(np.min(np.sum(single * fast_q, axis=1))) > 0.98


def test_cached_model_is_reused_without_torch(
    embedders: tuple[object, OnnxMiniLMEmbedder, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, fast, folder = embedders
    assert cache_path(folder).is_file()

    def no_export(target: Path) -> Path:
        raise AssertionError("exported again although cached")

    monkeypatch.setattr(fast_embed, "export_int8", no_export)
    again = OnnxMiniLMEmbedder(folder)
    assert np.allclose(again.encode(["hello there"]), fast.encode(["hello there"]), atol=1e-6)
    code = (
        "import sys, json; from pathlib import Path;"
        "from minetune.learn.fast_embed import OnnxMiniLMEmbedder;"
        f"e = OnnxMiniLMEmbedder(Path({str(folder)!r})); e.encode(['hi']);"
        "heavy = ('torch', 'transformers', 'sentence_transformers');"
        "print(json.dumps([m for m in heavy if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_default_embedder_caches_under_home(isolated_env: Path) -> None:
    assert load_settings().embedder == ONNX_INT8
    assert cache_dir(isolated_env) == isolated_env / "cache" / "embedders"


def test_switching_embedders_re_embeds_lazily(fake_llm: FakeOpenAI) -> None:
    model = f"openai-compatible:fake@{fake_llm.base_url}"
    fake_llm.queue("Your cat is called Winston.", "Winston, of course.", "Still Winston.")
    settings = load_settings(embedder="minilm")
    with Session(Store.open(settings), settings, model=model) as chat:
        good = chat.send("What's my cat's name?")
        chat.rate(5)
        chat.new_conversation()
        chat.send("What is the name of my cat?")
        old = chat.store.turn_embeddings([good.turn_id], "minilm")
        assert old and not chat.store.turn_embeddings([good.turn_id], ONNX_INT8)
    settings = load_settings(embedder=ONNX_INT8)
    with Session(Store.open(settings), settings, model=model) as chat:
        reply = chat.send("Remind me what my cat is called?")
        assert chat.store.attempt(reply.attempt_id).demo_attempt_ids == [good.attempt_id]
        fast = chat.store.turn_embeddings([good.turn_id], ONNX_INT8)
        # Re-embedded with the new embedder (one stored vector per turn, tagged with its model).
        assert fast and fast[good.turn_id] != old[good.turn_id]
        assert not chat.store.turn_embeddings([good.turn_id], "minilm")
