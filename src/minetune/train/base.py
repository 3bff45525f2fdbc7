"""Base models and adapter directories: which local model a program trains on, loading it,
and checking an adapter folder without torch."""

from __future__ import annotations

import contextlib
import json
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minetune.config import MODELS_DIR, Settings
from minetune.errors import MinetuneError
from minetune.files import user_folder
from minetune.store import Store
from minetune.store.schema import Adapter
from minetune.train.config import (
    ADAPTER_FILES,
    ADAPTERS_DIR,
    JOBS_DIR,
    AdapterError,
    TrainConfig,
    TrainingError,
)


@dataclass(frozen=True)
class BaseModel:
    """The local base model an adapter is trained on, and how a version serves it.

    ``name`` is the model as written in the spec (a directory or a hub id); ``backend`` is
    ``hf`` or ``vllm`` (with ``base_url``).
    """

    name: str
    backend: str = "hf"
    base_url: str | None = None

    def directory(self) -> Path:
        from minetune.models.local_hf import resolve_model_dir

        return resolve_model_dir(self.name)

    def spec(self, adapter: str | Path | None = None) -> str:
        """The model spec of this base with ``adapter`` (None: the plain base)."""
        tail = f"?adapter={adapter}" if adapter else ""
        if self.backend == "vllm":
            return f"vllm:{self.name}@{self.base_url}{tail}"
        return f"hf:{self.name}{tail}"


def base_from_spec(spec: str) -> BaseModel:
    """The base model of an ``hf:``/``vllm:`` spec or a plain directory (an adapter in it is dropped)."""
    text = spec.strip()
    if ":" not in text.split("/", 1)[0] or Path(text).expanduser().is_dir():
        return BaseModel(text)
    from minetune.models.spec import parse_spec

    parsed = parse_spec(text)
    if parsed.backend == "hf":
        return BaseModel(parsed.model)
    if parsed.backend == "vllm":
        return BaseModel(parsed.model, "vllm", parsed.base_url)
    raise TrainingError(
        f"Local training needs a local base model, not {parsed.raw!r}: pass --base hf:DIR (a folder with "
        "config.json and weights) — the model your adapters are for."
    )


def resolve_base(store: Store, settings: Settings, program: str, base: str | None = None) -> BaseModel:
    """The base model to train on: ``base``, else the active version's spec, else MINETUNE_MODEL."""
    for candidate in (base, store.active_version(program).model_spec, settings.model):
        if candidate and candidate.strip():
            return base_from_spec(candidate)
    raise TrainingError(
        "No base model to train on: pass --base hf:DIR (a local transformers model folder), or set the "
        "program's model to hf:DIR."
    )


def base_for(
    store: Store, settings: Settings, program: str, base: str | None, parent: Adapter | None
) -> BaseModel:
    if parent is None:
        return resolve_base(store, settings, program, base)
    current = resolve_base(store, settings, program, base) if base else None
    if current is not None and current.name != parent.base_model:
        raise TrainingError(
            f"Adapter {parent.id} is for {parent.base_model}, not {current.name}; "
            "train a new adapter instead."
        )
    try:
        active = resolve_base(store, settings, program, None)
    except TrainingError:
        active = BaseModel(parent.base_model)
    if active.name == parent.base_model:
        return active
    return BaseModel(parent.base_model)


def model_roots(settings: Settings) -> list[Path]:
    """The folders web training takes base models from: ``model_roots`` (default
    ``$MINETUNE_HOME/models``) and the folder of each ``hf:`` model configured in the settings."""
    roots = list(settings.model_roots or (settings.home / MODELS_DIR,))
    for spec in (settings.model, settings.reflection_model):
        if spec and spec.strip().lower().startswith("hf:"):
            with contextlib.suppress(MinetuneError):
                roots.append(Path(base_from_spec(spec).name).expanduser())
    resolved = []
    for root in roots:
        with contextlib.suppress(OSError, RuntimeError):
            resolved.append(root.resolve())
    return resolved


def check_model_root(settings: Settings, base: BaseModel) -> Path:
    """The folder of ``base`` when it is a model folder (with config.json) under one of
    :func:`model_roots`; else :class:`TrainingError` saying the same whatever the path is, so it
    tells nothing about folders outside the roots (whether they exist, what they hold)."""
    try:
        real = Path(base.name).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        real = None
    if real is not None:
        for root in model_roots(settings):
            if (real == root or root in real.parents) and (real / "config.json").is_file():
                return real
    shown = base.name if len(base.name) <= 200 else base.name[:200] + "…"
    raise TrainingError(
        f"{shown!r} is not a model folder under the configured model roots: the web app trains only on "
        "base models in $MINETUNE_HOME/models, in the folders listed in model_roots (config.toml or "
        "MINETUNE_MODEL_ROOTS), or the configured hf: model."
    )


def adapters_root(settings: Settings, program: str, user: str) -> Path:
    """Where ``user``'s adapters and job folders for ``program`` live:
    ``<adapters_dir>/<user>/<program>/`` — ``adapters_dir`` defaults to ``$MINETUNE_HOME/adapters``;
    a team points every server and worker at one shared folder (one folder per user; before there was a user
    segment it was ``adapters/<program>/``, which :func:`job_dir` still finds)."""
    return settings.adapters_path / user_folder(user) / _safe(program)


def job_dir(settings: Settings, program: str, user: str, job_id: int) -> Path:
    """The work folder of local training job ``job_id`` (checkpoints): under the user's folder, or
    where a job from before per-user folders left it."""
    current = adapters_root(settings, program, user) / JOBS_DIR / str(job_id)
    legacy = settings.home / ADAPTERS_DIR / _safe(program) / JOBS_DIR / str(job_id)
    return legacy if not current.exists() and legacy.is_dir() else current


def _safe(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return cleaned or "program"


def check_adapter_dir(path: str | Path) -> Path:
    """Raise :class:`AdapterError` unless ``path`` holds a loadable PEFT LoRA adapter (checked
    without torch: the config parses and the weights file is complete)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise AdapterError(f"Adapter directory {folder} does not exist.")
    config_file = folder / "adapter_config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if not isinstance(config, dict) or "peft_type" not in config:
            raise ValueError("no peft_type")
    except (OSError, ValueError) as exc:
        raise AdapterError(
            f"Adapter directory {folder} is corrupt: adapter_config.json is missing or invalid ({exc})."
        ) from None
    weights = [folder / name for name in ADAPTER_FILES if (folder / name).is_file()]
    if not weights:
        raise AdapterError(f"Adapter directory {folder} is corrupt: it has no adapter_model.safetensors.")
    if weights[0].suffix == ".safetensors":
        _check_safetensors(weights[0])
    return folder


def _check_safetensors(path: Path) -> None:
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > size - 8:
                raise ValueError("truncated header")
            header = json.loads(fh.read(length))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + length + end > size:
            raise ValueError("truncated tensor data")
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise AdapterError(f"Adapter weights {path} are corrupt ({exc}).") from None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence library warnings, progress bars and info logs while training (progress is reported
    through the callback instead)."""
    import datasets
    import transformers

    bars = datasets.is_progress_bar_enabled()
    hf_bars = transformers.logging.is_progress_bar_enabled()
    verbosity = transformers.logging.get_verbosity()
    datasets.disable_progress_bars()
    transformers.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if hf_bars:
            transformers.logging.enable_progress_bar()
        if bars:
            datasets.enable_progress_bars()


def device_and_precision(config: TrainConfig) -> tuple[bool, str]:
    """(use the GPU, precision): ``auto`` is bf16 on a GPU that supports it, else fp16; fp32 on CPU."""
    import torch

    cuda = torch.cuda.is_available()
    precision = config.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if not cuda and precision != "fp32":
        raise TrainingError(f"{precision} training needs a GPU; use precision fp32 on CPU.")
    return cuda, precision


def load_base(model_dir: Path, precision: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float32}[precision]
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir))
        model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    except Exception as exc:  # OSError, ValueError, safetensors errors, unknown architectures, ...
        raise TrainingError(
            f"Could not load the base model from {model_dir}: {' '.join(str(exc).split())[:300]}"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
