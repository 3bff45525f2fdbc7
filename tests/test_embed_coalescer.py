"""Concurrent one-text encodes are merged into batches; each caller gets its own row, and a
failure reaches every caller of the failed batch."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from minetune.learn.embed import Coalescer


def test_concurrent_calls_share_batches_and_get_their_own_rows() -> None:
    first_started, release = threading.Event(), threading.Event()
    batches: list[list[str]] = []

    def encode_batch(texts: list[str]) -> np.ndarray:
        batches.append(list(texts))
        if len(batches) == 1:  # hold the first batch so the other callers queue up behind it
            first_started.set()
            assert release.wait(10)
        return np.array([[float(len(t)), float(t.count("x"))] for t in texts], dtype=np.float32)

    coalescer = Coalescer(encode_batch)
    texts = ["a" * i + "x" * (i % 3) for i in range(1, 21)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        first = pool.submit(coalescer.encode_one, texts[0])
        assert first_started.wait(10)
        rest = [pool.submit(coalescer.encode_one, t) for t in texts[1:]]
        deadline = time.monotonic() + 10
        while len(coalescer._queue) < len(rest) and time.monotonic() < deadline:
            time.sleep(0.001)  # until every other caller waits behind the held batch
        release.set()
        results = [first.result(10)] + [f.result(10) for f in rest]

    for text, row in zip(texts, results, strict=True):
        assert row.tolist() == [float(len(text)), float(text.count("x"))]
    assert sorted(t for b in batches for t in b) == sorted(texts)  # each text encoded exactly once
    # The 19 callers that waited behind the held batch were served by one batch.
    assert len(batches) == 2 and batches[0] == [texts[0]] and sorted(batches[1]) == sorted(texts[1:])


def test_a_failed_batch_reaches_its_callers_and_the_next_call_works() -> None:
    calls = {"n": 0}

    def encode_batch(texts: list[str]) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("model broke")
        return np.ones((len(texts), 3), dtype=np.float32)

    coalescer = Coalescer(encode_batch)
    with pytest.raises(RuntimeError, match="model broke"):
        coalescer.encode_one("hello")
    assert coalescer.encode_one("again").tolist() == [1.0, 1.0, 1.0]
