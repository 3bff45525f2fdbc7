"""Configuration and results of one LoRA run: :class:`TrainConfig`, :class:`Progress`,
:class:`FitResult`, the training errors and the places adapters live.

Nothing here imports torch; every other module of :mod:`minetune.train` may import this one.
Learning rates are set deliberately (TRL's defaults are meant for full fine-tuning): LoRA SFT
2e-4, DPO and KTO 5e-5.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from minetune.errors import MinetuneError
from minetune.train.datasets import DEFAULT_SEED

DEFAULT_LR = {"sft": 2e-4, "dpo": 5e-5, "kto": 5e-5}
ADAPTERS_DIR = "adapters"
JOBS_DIR = ".jobs"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
METADATA_FILE = "minetune.json"


class TrainingError(MinetuneError):
    """Training cannot start or did not finish; the previous adapter stays active."""


class AdapterError(TrainingError):
    """An adapter directory is missing, incomplete or corrupt."""


@dataclass
class TrainConfig:
    """Hyperparameters of one LoRA run (TRL config fields are derived from these).

    ``learning_rate`` None picks the method's default (:data:`DEFAULT_LR`); ``max_steps`` None
    trains ``epochs`` epochs. ``ewc_lambda`` > 0 adds an elastic-weight-consolidation penalty
    that keeps a continued adapter near its parent where the parent's examples are sensitive.
    ``threads`` sets torch's CPU threads for the run (None leaves them alone).
    ``processes`` > 1 trains with that many DDP processes (one per GPU, or gloo on CPU), each
    taking ``batch_size / processes`` examples of every step.
    """

    epochs: float = 3.0
    max_steps: int | None = None
    learning_rate: float | None = None
    batch_size: int = 4
    grad_accum: int = 1
    rank: int = 16
    alpha: int | None = None
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    max_length: int = 1024
    beta: float = 0.1
    seed: int = DEFAULT_SEED
    save_steps: int = 25
    warmup_steps: float = 0.0
    scheduler: str = "linear"
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    threads: int | None = None
    ewc_lambda: float = 0.0
    ewc_examples: int = 32
    engine: str = "auto"  # auto | trl | resident (see minetune.train.fast)
    processes: int = 1  # > 1: DDP processes started by torchrun (see minetune.train.distributed)

    def lr(self, method: str) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LR[method]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def check(self, method: str) -> None:
        problems = []
        if self.max_steps is None and not self.epochs > 0:
            problems.append("epochs must be above 0")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append("max_steps must be at least 1")
        if self.batch_size < 1 or self.grad_accum < 1:
            problems.append("batch size and gradient accumulation must be at least 1")
        if method == "kto" and self.batch_size < 2:
            problems.append("KTO needs a batch size of at least 2 (it estimates a KL term across the batch)")
        if self.rank < 1:
            problems.append("the LoRA rank must be at least 1")
        if self.processes < 1:
            problems.append("the number of training processes must be at least 1")
        elif self.batch_size % self.processes:
            problems.append(f"the batch size must divide evenly across {self.processes} processes")
        if not self.lr(method) > 0:
            problems.append("the learning rate must be above 0")
        if self.max_length < 16:
            problems.append("max_length must be at least 16 tokens")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            problems.append("precision must be auto, fp32, bf16 or fp16")
        if self.engine not in ("auto", "trl", "resident"):
            problems.append("engine must be auto, trl or resident")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            problems.append("warmup_steps and weight_decay cannot be negative")
        if self.warmup_steps > 0 and self.scheduler == "constant":
            problems.append(
                "the constant scheduler has no warmup; use scheduler constant_with_warmup (or linear, cosine)"
            )
        if problems:
            raise TrainingError("Invalid training settings: " + "; ".join(problems) + ".")


@dataclass(frozen=True)
class Progress:
    """A progress report: ``phase`` is loading, training, evaluating, saving or done."""

    phase: str
    step: int = 0
    total: int = 0
    loss: float | None = None
    epoch: float | None = None
    elapsed_s: float = 0.0


ProgressCallback = Callable[[Progress], None]


@dataclass
class FitResult:
    """What :func:`fit` produced. ``adapter_dir`` is None when the run was cancelled."""

    adapter_dir: Path | None
    cancelled: bool
    loss_curve: list[dict[str, Any]]
    steps: int
    total_steps: int
    runtime_s: float
    train_tokens: int
    before: dict[str, Any]
    after: dict[str, Any]
    log: dict[str, Any] = field(default_factory=dict)  # the last training log (rewards, kl, ...)
    train_s: float = 0.0  # seconds in the training loop itself (no loading, evaluation or saving)

    @property
    def first_loss(self) -> float | None:
        return self.loss_curve[0]["train_loss"] if self.loss_curve else None

    @property
    def final_loss(self) -> float | None:
        return self.loss_curve[-1]["train_loss"] if self.loss_curve else None


@dataclass(frozen=True)
class Engine:
    """What a training engine supports, declared next to it (:mod:`minetune.train.engines` for
    ``trl``, :mod:`minetune.train.fast` for ``resident``).

    ``options`` are the :class:`TrainConfig` fields the engine implements; any other field must
    keep its default, or the run is refused (:meth:`check`) rather than silently trained
    differently. ``values`` limits some options to the values it implements. ``resumable``:
    whether it saves checkpoints that :func:`minetune.train.runs.resume` can continue from.
    """

    name: str
    methods: tuple[str, ...]
    options: frozenset[str]
    values: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    resumable: bool = True

    def problems(self, method: str, config: TrainConfig) -> list[str]:
        """What in ``config`` (for ``method``) this engine would not do as asked."""
        out = []
        if method not in self.methods:
            out.append(f"method {method.upper()} (it trains {', '.join(m.upper() for m in self.methods)})")
        defaults = TrainConfig()
        for f in fields(TrainConfig):
            value = getattr(config, f.name)
            if f.name not in self.options and value != getattr(defaults, f.name):
                out.append(f"{f.name}={value!r}")
            elif f.name in self.values and value not in self.values[f.name]:
                allowed = ", ".join(str(v) for v in self.values[f.name])
                out.append(f"{f.name}={value!r} (it supports {allowed})")
        return out

    def check(self, method: str, config: TrainConfig, *, resume: bool = False) -> None:
        problems = self.problems(method, config)
        if resume and not self.resumable:
            problems.append("resuming (it saves no checkpoints)")
        if problems:
            raise TrainingError(
                f"The {self.name} engine does not support {'; '.join(problems)}. "
                "Use engine trl, or leave those settings at their defaults."
            )
