"""Local LoRA training (SFT, DPO, KTO) with TRL and PEFT, on CPU or GPU.

Two layers:

* :func:`fit` trains one adapter from examples (:mod:`minetune.train.datasets` objects) on a
  local base model — TRL's ``SFTTrainer`` (prompt/completion, loss on the answer only),
  ``DPOTrainer`` or ``KTOTrainer`` with a PEFT LoRA config, or continuing an existing adapter
  (``PeftModel.from_pretrained(base, dir, is_trainable=True)``). It reports progress, stops
  cleanly on a cancel event (the first Ctrl-C; a checkpoint is saved for resuming), and scores
  held-out sets before and after training (:class:`Scorer`).
* :func:`train` / :func:`resume` run it for a program from the store: every run is a
  ``training_jobs`` row (status, hyperparameters, loss curve, metrics, the attempt ids it trained
  on), and a finished run becomes an ``adapters`` row stored under
  ``$MINETUNE_HOME/adapters/<program>/<id>/`` and a new program version whose model spec loads it.
  Nothing changes the active version until the adapter is complete, so a cancelled or failed run
  leaves the previous adapter active.

Learning rates are set deliberately (TRL's defaults are meant for full fine-tuning): LoRA SFT
2e-4, DPO and KTO 5e-5. torch, transformers, trl and peft are imported inside functions.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import signal
import struct
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from minetune.config import Settings
from minetune.errors import MinetuneError, ModelError
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store import training as jobs_db
from minetune.store.schema import Adapter, TrainingJob
from minetune.train.datasets import (
    DEFAULT_SEED,
    DEFAULT_THRESHOLD,
    METHODS,
    MIN_EXAMPLES,
    DPOExample,
    KTOExample,
    SFTExample,
    build_dataset,
)

DEFAULT_LR = {"sft": 2e-4, "dpo": 5e-5, "kto": 5e-5}
ADAPTERS_DIR = "adapters"
JOBS_DIR = ".jobs"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
METADATA_FILE = "minetune.json"
MAX_CURVE_POINTS = 1000
AUTO_ORDER = ("dpo", "sft", "kto")


class TrainingError(MinetuneError):
    """Training cannot start or did not finish; the previous adapter stays active."""


class AdapterError(TrainingError):
    """An adapter directory is missing, incomplete or corrupt."""


# -- configuration ---------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Hyperparameters of one LoRA run (TRL config fields are derived from these).

    ``learning_rate`` None picks the method's default (:data:`DEFAULT_LR`); ``max_steps`` None
    trains ``epochs`` epochs. ``ewc_lambda`` > 0 adds an elastic-weight-consolidation penalty
    that keeps a continued adapter near its parent where the parent's examples are sensitive.
    ``threads`` sets torch's CPU threads for the run (None leaves them alone).
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
        if not self.lr(method) > 0:
            problems.append("the learning rate must be above 0")
        if self.max_length < 16:
            problems.append("max_length must be at least 16 tokens")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            problems.append("precision must be auto, fp32, bf16 or fp16")
        if self.engine not in ("auto", "trl", "resident"):
            problems.append("engine must be auto, trl or resident")
        if self.engine == "resident" and (method != "sft" or self.ewc_lambda > 0):
            problems.append("the resident engine trains SFT without EWC only; use engine trl")
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


# -- base models and adapter directories -----------------------------------------------------------


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


def adapters_root(settings: Settings, program: str) -> Path:
    return settings.home / ADAPTERS_DIR / _safe(program)


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


# -- examples to TRL rows and to scored text -------------------------------------------------------


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _prompt(ex: Any) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in ex.prompt]


def trl_row(ex: Any) -> dict[str, Any]:
    """The TRL conversational row of an example: prompt/completion (SFT: the loss is on the
    completion only, whatever the chat template), prompt/chosen/rejected, prompt/completion/label."""
    if isinstance(ex, SFTExample):
        return {"prompt": _prompt(ex), "completion": _assistant(ex.response)}
    if isinstance(ex, DPOExample):
        return {"prompt": _prompt(ex), "chosen": _assistant(ex.chosen), "rejected": _assistant(ex.rejected)}
    if isinstance(ex, KTOExample):
        return {"prompt": _prompt(ex), "completion": _assistant(ex.completion), "label": bool(ex.label)}
    raise TrainingError(f"Not a training example: {type(ex).__name__}")


def target_text(ex: Any) -> str | None:
    """The answer an example says is good (for measuring loss on it), or None."""
    if isinstance(ex, SFTExample):
        return ex.response
    if isinstance(ex, DPOExample):
        return ex.chosen
    if isinstance(ex, KTOExample):
        return ex.completion if ex.label else None
    return None


def _interleave_kto(examples: Sequence[Any]) -> list[Any]:
    good = [e for e in examples if e.label]
    bad = [e for e in examples if not e.label]
    out: list[Any] = []
    for i in range(max(len(good), len(bad))):
        out.extend(x[i] for x in (good, bad) if i < len(x))
    return out


def encode(
    tokenizer: Any, prompt: Sequence[dict[str, str]], completion: str, max_length: int
) -> tuple[list[int], int]:
    """Token ids of prompt + completion as the chat template renders them, and where the
    completion starts. Long prompts lose their beginning; long completions their end."""
    messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
    eos = tokenizer.eos_token or ""
    if getattr(tokenizer, "chat_template", None):
        head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages + _assistant(completion), tokenize=False)
        tail = full[len(head) :] if full.startswith(head) else completion + eos
    else:
        head = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"
        tail = " " + completion + eos
    p_ids = list(tokenizer(head, add_special_tokens=False)["input_ids"])
    c_ids = list(tokenizer(tail, add_special_tokens=False)["input_ids"])
    c_ids = c_ids[: max(1, max_length - 1)]
    keep = max(1, max_length - len(c_ids))
    p_ids = p_ids[-keep:]
    return p_ids + c_ids, len(p_ids)


class Scorer:
    """Log-probabilities of answers under a (PEFT) causal LM, for evaluation and the gate.

    ``logps`` gives (sum of answer-token log-probs, answer tokens) per (prompt, answer);
    ``loss`` the token-weighted mean negative log-likelihood; ``margins`` log p(chosen) −
    log p(rejected) per pair (sums over the answer's tokens, as DPO's implicit reward).
    """

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 1024, batch_size: int = 8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size

    def logps(self, items: Sequence[tuple[Sequence[dict[str, str]], str]]) -> list[tuple[float, int]]:
        import torch

        if not items:
            return []
        encoded = [encode(self.tokenizer, p, c, self.max_length) for p, c in items]
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out: list[tuple[float, int]] = []
        try:
            with torch.no_grad():
                for start in range(0, len(encoded), self.batch_size):
                    batch = encoded[start : start + self.batch_size]
                    width = max(len(ids) for ids, _ in batch)
                    ids = torch.full((len(batch), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(batch), width), dtype=torch.long)
                    for i, (row, _) in enumerate(batch):
                        ids[i, : len(row)] = torch.tensor(row)
                        mask[i, : len(row)] = 1
                    logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                    for i, (row, begin) in enumerate(batch):
                        targets = torch.tensor(row[begin:], device=device)
                        scores = logits[i, begin - 1 : len(row) - 1].float().log_softmax(-1)
                        picked = scores.gather(-1, targets[:, None]).squeeze(-1)
                        out.append((float(picked.sum()), int(targets.numel())))
        finally:
            if was_training:
                self.model.train()
        return out

    def loss(self, items: Sequence[tuple[Sequence[dict[str, str]], str]]) -> float | None:
        scored = self.logps(items)
        tokens = sum(n for _, n in scored)
        return -sum(s for s, _ in scored) / tokens if tokens else None

    def margins(self, pairs: Sequence[Any]) -> list[float]:
        items: list[tuple[Sequence[dict[str, str]], str]] = []
        for ex in pairs:
            items += [(_prompt(ex), ex.chosen), (_prompt(ex), ex.rejected)]
        scored = self.logps(items)
        return [scored[i][0] - scored[i + 1][0] for i in range(0, len(scored), 2)]


@dataclass
class EvalSets:
    """Held-out data scored before and after training: preference ``pairs`` (margin), ``targets``
    (answers whose loss should fall) and ``retain`` (older answers whose loss should not rise)."""

    pairs: list[Any] = field(default_factory=list)
    targets: list[Any] = field(default_factory=list)
    retain: list[Any] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.pairs or self.targets or self.retain)


def _texts(examples: Sequence[Any]) -> list[tuple[Sequence[dict[str, str]], str]]:
    out: list[tuple[Sequence[dict[str, str]], str]] = []
    for ex in examples:
        text = target_text(ex)
        if text is not None:
            out.append((_prompt(ex), text))
    return out


def score(scorer: Scorer, sets: EvalSets) -> dict[str, Any]:
    """Margin per held-out pair, and losses on the held-out targets and retained examples."""
    result: dict[str, Any] = {}
    if sets.pairs:
        margins = scorer.margins(sets.pairs)
        result["margins"] = margins
        result["margin"] = sum(margins) / len(margins)
    if sets.targets:
        result["valid_loss"] = scorer.loss(_texts(sets.targets))
    if sets.retain:
        result["retain_loss"] = scorer.loss(_texts(sets.retain))
    return result


def evaluate_adapter(
    base_dir: str | Path,
    adapter: str | Path | None,
    examples: Sequence[Any] = (),
    pairs: Sequence[Any] = (),
    max_length: int = 1024,
) -> dict[str, Any]:
    """Loss on the examples' good answers and the margin on preference pairs, under ``base_dir``
    with ``adapter`` (None: the base model alone)."""
    with _quiet():
        model, tokenizer = _load_base(Path(base_dir), "fp32")
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(check_adapter_dir(adapter)))
        sets = EvalSets(pairs=list(pairs), targets=list(examples))
        result = score(Scorer(model, tokenizer, max_length), sets)
    return {"loss": result.get("valid_loss"), "margin": result.get("margin")}


# -- fitting ---------------------------------------------------------------------------------------


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


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
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


@contextlib.contextmanager
def _first_ctrl_c_cancels(cancel: threading.Event) -> Iterator[None]:
    """While training in the main thread, the first Ctrl-C sets ``cancel`` (the run stops after
    the current step and saves a checkpoint); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if cancel.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        cancel.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _device_and_precision(config: TrainConfig) -> tuple[bool, str]:
    """(use the GPU, precision)."""
    import torch

    cuda = torch.cuda.is_available()
    precision = config.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if not cuda and precision != "fp32":
        raise TrainingError(f"{precision} training needs a GPU; use precision fp32 on CPU.")
    return cuda, precision


def _load_base(model_dir: Path, precision: str) -> tuple[Any, Any]:
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


def _trainer_parts(method: str) -> tuple[Any, Any]:
    if method == "sft":
        from trl import SFTConfig, SFTTrainer

        return SFTConfig, SFTTrainer
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer
    raise TrainingError(f"Unknown training method {method!r}; choose one of: {', '.join(METHODS)}.")


def _trl_args(method: str, config: TrainConfig, out: Path, cuda: bool, precision: str) -> Any:
    config_cls, _ = _trainer_parts(method)
    wanted: dict[str, Any] = {
        "output_dir": str(out),
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "learning_rate": config.lr(method),
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps if config.max_steps is not None else -1,
        "lr_scheduler_type": config.scheduler,
        "warmup_steps": config.warmup_steps,
        "weight_decay": config.weight_decay,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": max(1, config.save_steps),
        "save_total_limit": 1,
        "report_to": "none",
        "seed": config.seed,
        "data_seed": config.seed,
        "disable_tqdm": True,
        "use_cpu": not cuda,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "gradient_checkpointing": config.gradient_checkpointing,
        "activation_checkpointing": config.gradient_checkpointing,
        "max_length": config.max_length,
        "dataloader_pin_memory": cuda,
        "dataset_num_proc": None,
    }
    if method == "sft":
        wanted["completion_only_loss"] = True
        wanted["packing"] = False
    else:
        wanted["beta"] = config.beta
    known = {f.name for f in fields(config_cls)}
    return config_cls(**{k: v for k, v in wanted.items() if k in known})


class _EWC:
    """Elastic weight consolidation on the trainable (LoRA) weights: λ/2 · Σ F (θ − θ*)²."""

    def __init__(self, model: Any, tokenizer: Any, examples: Sequence[Any], strength: float, max_length: int):
        import torch

        self.strength = strength
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.anchor = {n: p.detach().clone() for n, p in self.params.items()}
        self.fisher = {n: torch.zeros_like(p) for n, p in self.params.items()}
        texts = _texts(examples)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        for prompt, answer in texts:
            row, begin = encode(tokenizer, prompt, answer, max_length)
            ids = torch.tensor([row], device=device)
            labels = ids.clone()
            labels[0, :begin] = -100
            model.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=labels).loss.backward()
            for n, p in self.params.items():
                if p.grad is not None:
                    self.fisher[n] += p.grad.detach() ** 2 / max(1, len(texts))
        model.zero_grad(set_to_none=True)
        if was_training:
            model.train()

    def penalty(self) -> Any:
        total: Any = 0.0
        for n, p in self.params.items():
            total = total + (self.fisher[n] * (p - self.anchor[n]) ** 2).sum()
        return self.strength / 2 * total


def _with_ewc(trainer_cls: Any, ewc: _EWC) -> Any:
    class EWCTrainer(trainer_cls):
        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any) -> Any:
            result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
            if return_outputs:
                loss, outputs = result
                return loss + ewc.penalty(), outputs
            return result + ewc.penalty()

    return EWCTrainer


def _last_checkpoint(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder))


@_quiet()  # a context manager used as a decorator: quiet for the whole call
def fit(
    base_dir: Path,
    method: str,
    examples: Sequence[Any],
    config: TrainConfig,
    work_dir: Path,
    *,
    parent_adapter: Path | None = None,
    eval_sets: EvalSets | None = None,
    ewc_examples: Sequence[Any] = (),
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    resume: bool = False,
) -> FitResult:
    """Train a LoRA adapter on ``examples`` and save it to ``work_dir/adapter``.

    Checkpoints go to ``work_dir/checkpoints`` (``resume`` continues from the newest). With
    ``parent_adapter`` that adapter is trained further instead of a new one. ``eval_sets`` are
    scored before and after. When ``cancel`` is set (or on the first Ctrl-C in the main thread)
    training stops after the current step with a checkpoint, and the result has no adapter.
    """
    config.check(method)
    if not examples:
        raise TrainingError("There are no examples to train on.")
    if _resident_engine(method, config, resume):
        from minetune.train.fast import fit_resident

        return fit_resident(
            base_dir, examples, config, work_dir, parent_adapter=parent_adapter, eval_sets=eval_sets,
            on_progress=on_progress, cancel=cancel,
        )
    stop: threading.Event = cancel or threading.Event()
    notify = on_progress or (lambda _p: None)
    started = time.perf_counter()
    notify(Progress("loading"))
    import torch
    from transformers import set_seed

    if config.threads:
        torch.set_num_threads(config.threads)
    cuda, precision = _device_and_precision(config)
    set_seed(config.seed)  # before the LoRA weights are initialised, so runs repeat exactly
    model, tokenizer = _load_base(base_dir, precision)
    if cuda:
        model.to("cuda")
    from peft import LoraConfig, PeftModel

    peft_config = None
    if parent_adapter is not None:
        check_adapter_dir(parent_adapter)
        try:
            model = PeftModel.from_pretrained(model, str(parent_adapter), is_trainable=True)
        except Exception as exc:
            raise AdapterError(
                f"Could not load the adapter {parent_adapter} onto {base_dir}: "
                f"{' '.join(str(exc).split())[:300]}"
            ) from None
    else:
        from peft import get_peft_model

        peft_config = LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha or 2 * config.rank,
            lora_dropout=config.dropout,
            target_modules=config.target_modules,
            task_type="CAUSAL_LM",
        )
        # Wrapped here (not by the trainer) so the untrained model can be scored first.
        model = get_peft_model(model, peft_config)
    scorer = Scorer(model, tokenizer, config.max_length)
    sets = eval_sets or EvalSets()
    before = score(scorer, sets) if not sets.empty() else {}
    ewc = None
    if config.ewc_lambda > 0 and ewc_examples:
        ewc = _EWC(
            model, tokenizer, list(ewc_examples)[: config.ewc_examples], config.ewc_lambda, config.max_length
        )

    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback

    rows = [trl_row(ex) for ex in (_interleave_kto(examples) if method == "kto" else examples)]
    args = _trl_args(method, config, work_dir / "checkpoints", cuda, precision)
    _, trainer_cls = _trainer_parts(method)
    if ewc is not None:
        trainer_cls = _with_ewc(trainer_cls, ewc)
    curve: list[dict[str, Any]] = []
    last_log: dict[str, Any] = {}

    class Reporter(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                point = {"step": int(state.global_step), "train_loss": float(logs["loss"])}
                if "epoch" in logs:
                    point["epoch"] = round(float(logs["epoch"]), 4)
                curve.append(point)
                last_log.clear()
                last_log.update({k: v for k, v in logs.items() if isinstance(v, int | float)})
                notify(
                    Progress(
                        "training",
                        int(state.global_step),
                        int(state.max_steps),
                        float(logs["loss"]),
                        point.get("epoch"),
                        time.perf_counter() - started,
                    )
                )
            self.on_step_end(args, state, control)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if stop.is_set():
                control.should_save = True
                control.should_training_stop = True

    try:
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[Reporter()],
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise TrainingError(
            f"Could not set up {method.upper()} training: {' '.join(str(exc).split())[:300]}"
        ) from None
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    checkpoint = _last_checkpoint(work_dir / "checkpoints") if resume else None
    if resume and checkpoint is None:
        raise TrainingError(f"No checkpoint to resume from in {work_dir / 'checkpoints'}.")
    notify(Progress("training", 0, 0, None, None, time.perf_counter() - started))
    train_started = time.perf_counter()
    with _first_ctrl_c_cancels(stop):
        output = trainer.train(resume_from_checkpoint=checkpoint)
    train_s = time.perf_counter() - train_started
    state = trainer.state
    runtime = time.perf_counter() - started
    tokens = int(last_log.get("num_tokens", 0)) or _count_tokens(tokenizer, examples, config, state)
    if stop.is_set() and state.global_step < state.max_steps:
        return FitResult(
            None,
            True,
            curve,
            int(state.global_step),
            int(state.max_steps),
            runtime,
            tokens,
            before,
            {},
            {},
            train_s,
        )
    notify(Progress("evaluating", int(state.global_step), int(state.max_steps), None, None, runtime))
    after = score(scorer, sets) if not sets.empty() else {}
    notify(Progress("saving", int(state.global_step), int(state.max_steps), None, None, runtime))
    adapter_dir = work_dir / "adapter"
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    trainer.model.save_pretrained(str(adapter_dir), selected_adapters=["default"])
    log = last_log | {"train_loss_mean": float(getattr(output, "training_loss", float("nan")))}
    notify(
        Progress(
            "done", int(state.global_step), int(state.max_steps), None, None, time.perf_counter() - started
        )
    )
    return FitResult(
        adapter_dir,
        False,
        curve,
        int(state.global_step),
        int(state.max_steps),
        time.perf_counter() - started,
        tokens,
        before,
        after,
        log,
        train_s,
    )


def _resident_engine(method: str, config: TrainConfig, resume: bool) -> bool:
    """Whether :func:`fit` uses the resident trainer: asked for, or ``auto`` for an SFT update on
    a GPU (where TRL's per-run set-up dominates a small update); TRL otherwise."""
    if config.engine != "auto":
        return config.engine == "resident"
    if method != "sft" or resume or config.ewc_lambda > 0 or config.grad_accum != 1:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _count_tokens(tokenizer: Any, examples: Sequence[Any], config: TrainConfig, state: Any) -> int:
    """Approximate tokens trained on: example lengths × the epochs run (DPO counts both answers)."""
    per_epoch = 0
    for ex in examples:
        row = trl_row(ex)
        for key in ("completion", "chosen", "rejected"):
            if key in row:
                per_epoch += len(
                    encode(tokenizer, row["prompt"], row[key][0]["content"], config.max_length)[0]
                )
    epochs = float(getattr(state, "epoch", 0.0) or 0.0)
    return int(per_epoch * epochs)


# -- runs for a program ------------------------------------------------------------------------------


@dataclass
class Plan:
    """Everything one run needs, stored in the job so it can be resumed or repeated."""

    program: str
    method: str
    base: BaseModel
    train: list[Any]
    eval_sets: EvalSets
    config: TrainConfig
    kind: str = "train"  # train | update | retrain | create
    domain: str = "general"
    parent: Adapter | None = None
    replaces: Adapter | None = None
    activate: bool = True
    replayed: int = 0
    ewc_examples: list[Any] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)  # how the examples were chosen (for retraining)
    threshold: int = DEFAULT_THRESHOLD

    def attempt_ids(self) -> list[int]:
        return sorted({a for ex in self.train for a in ex.attempt_ids})

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **self.config.to_dict(),
            "learning_rate": self.config.lr(self.method),
            "kind": self.kind,
            "domain": self.domain,
            "base_backend": self.base.backend,
            "base_url": self.base.base_url,
            "parent_adapter": self.parent.id if self.parent else None,
            "replaces_adapter": self.replaces.id if self.replaces else None,
            "activate": self.activate,
            "threshold": self.threshold,
            "selection": self.selection,
            "replayed": self.replayed,
            "examples": [list(ex.attempt_ids) for ex in self.train],
            "eval": {
                "pairs": [list(ex.attempt_ids) for ex in self.eval_sets.pairs],
                "targets": [list(ex.attempt_ids) for ex in self.eval_sets.targets],
                "retain": [list(ex.attempt_ids) for ex in self.eval_sets.retain],
            },
        }


Gate = Callable[[dict[str, Any], dict[str, Any]], "GateDecision"]


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    reason: str
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """The result of a run: the job, and the adapter and version when one was published."""

    job: TrainingJob
    status: str  # succeeded | rejected | cancelled
    adapter: Adapter | None = None
    version: int | None = None
    fit: FitResult | None = None
    gate: GateDecision | None = None

    @property
    def loss_curve(self) -> list[dict[str, Any]]:
        return list(self.job.loss_curve or [])


def _curve(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(points) <= MAX_CURVE_POINTS:
        return points
    stride = math.ceil(len(points) / MAX_CURVE_POINTS)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def _summary(result: FitResult) -> dict[str, Any]:
    def clean(metrics: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in metrics.items() if k != "margins"}

    metrics: dict[str, Any] = {
        "steps": result.steps,
        "total_steps": result.total_steps,
        "runtime_s": round(result.runtime_s, 3),
        "train_s": round(result.train_s, 3),
        "train_tokens": result.train_tokens,
        "tokens_per_s": round(result.train_tokens / result.train_s, 1) if result.train_s else None,
        "first_loss": result.first_loss,
        "final_loss": result.final_loss,
        "before": clean(result.before),
        "after": clean(result.after),
    }
    for key in ("rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected", "kl"):
        if key in result.log:
            metrics[key.replace("/", "_")] = result.log[key]
    return metrics


def run(
    store: Store,
    settings: Settings,
    plan: Plan,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    gate: Gate | None = None,
    job_id: int | None = None,
) -> Outcome:
    """Run ``plan`` as a recorded job (a new one, or ``job_id`` when resuming) and publish the adapter.

    Bad input fails before anything is recorded; a failure while training marks the job failed
    and raises :class:`TrainingError`; Ctrl-C (or ``cancel``) marks it cancelled with a checkpoint
    kept for :func:`resume`; ``gate`` may refuse the adapter (status ``rejected``, reason in the
    job's error). Only a kept adapter changes the active version (when ``plan.activate``).
    """
    plan.config.check(plan.method)
    if len(plan.train) < 1:
        raise TrainingError("There are no examples to train on.")
    try:
        base_dir = plan.base.directory()
    except ModelError as exc:
        raise TrainingError(f"The base model cannot be loaded: {exc}") from None
    if not (base_dir / "config.json").is_file():
        raise TrainingError(f"{base_dir} is not a transformers model folder (it has no config.json).")
    parent_dir = check_adapter_dir(plan.parent.path) if plan.parent is not None else None
    root = adapters_root(settings, plan.program)
    if job_id is None:
        job = jobs_db.create_job(
            store,
            plan.program,
            kind="local",
            method=plan.method,
            base_model=plan.base.name,
            status="running",
            hyperparameters=plan.hyperparameters(),
            example_attempt_ids=plan.attempt_ids(),
        )
        job_id = job.id
    else:
        jobs_db.update_job(store, job_id, status="running", error=None)
    work = root / JOBS_DIR / str(job_id)
    resume = _last_checkpoint(work / "checkpoints") is not None
    try:
        result = fit(
            base_dir,
            plan.method,
            plan.train,
            plan.config,
            work,
            parent_adapter=parent_dir,
            eval_sets=plan.eval_sets,
            ewc_examples=plan.ewc_examples,
            on_progress=on_progress,
            cancel=cancel,
            resume=resume,
        )
    except KeyboardInterrupt:
        _cancelled(store, job_id)
        raise
    except MinetuneError as exc:
        jobs_db.update_job(store, job_id, status="failed", error=str(exc), finished_at=datetime.now(UTC))
        raise
    except Exception as exc:
        message = (
            f"{plan.method.upper()} training failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        )
        jobs_db.update_job(store, job_id, status="failed", error=message, finished_at=datetime.now(UTC))
        raise TrainingError(message) from exc
    previous = jobs_db.get_job(store, job_id)
    curve = _curve(list(previous.loss_curve or []) + result.loss_curve if resume else result.loss_curve)
    if result.cancelled:
        job = jobs_db.update_job(store, job_id, loss_curve=curve)
        return Outcome(_cancelled(store, job_id), "cancelled", fit=result)
    metrics = dict(previous.metrics or {}) | _summary(result)
    decision = gate(result.before, result.after) if gate is not None else None
    if decision is not None:
        metrics["gate"] = decision.report | {"accepted": decision.accepted, "reason": decision.reason}
    if decision is not None and not decision.accepted:
        job = jobs_db.update_job(
            store,
            job_id,
            status="rejected",
            error=decision.reason,
            metrics=metrics,
            loss_curve=curve,
            finished_at=datetime.now(UTC),
        )
        shutil.rmtree(work, ignore_errors=True)
        return Outcome(job, "rejected", fit=result, gate=decision)
    jobs_db.update_job(store, job_id, metrics=metrics, loss_curve=curve)
    assert result.adapter_dir is not None
    trained = result.adapter_dir

    def place(adapter_id: int) -> str:
        final = root / str(adapter_id)
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        (trained / METADATA_FILE).write_text(
            json.dumps(
                {
                    "adapter": adapter_id,
                    "program": plan.program,
                    "method": plan.method,
                    "base_model": plan.base.name,
                    "parent_adapter": plan.parent.id if plan.parent else None,
                    "training_job": job_id,
                    "domain": plan.domain,
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        trained.replace(final)
        return str(final.resolve())

    adapter_metrics: dict[str, Any] = {
        k: metrics[k] for k in ("final_loss", "before", "after", "gate") if k in metrics
    }
    with _deferred_interrupt():
        adapter, version = _publish(store, plan, place, job_id, adapter_metrics)
    shutil.rmtree(work, ignore_errors=True)
    return Outcome(jobs_db.get_job(store, job_id), "succeeded", adapter, version.number, result, decision)


def _publish(
    store: Store, plan: Plan, place: Callable[[int], str], job_id: int, adapter_metrics: dict[str, Any]
) -> tuple[Adapter, Any]:
    return adapters_db.publish_adapter(
        store,
        plan.program,
        place=place,
        serve_spec=plan.base.spec,
        method=plan.method,
        base_model=plan.base.name,
        job_id=job_id,
        parent_id=plan.parent.id if plan.parent else None,
        replaces_id=plan.replaces.id if plan.replaces else None,
        domain=plan.domain,
        example_attempt_ids=plan.attempt_ids(),
        metrics=adapter_metrics | {"examples": len(plan.train), "replayed": plan.replayed},
        activate=plan.activate,
        note=_note(plan),
    )


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C while the adapter's files move and its rows commit, then deliver it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def _note(plan: Plan) -> str:
    what = {"train": "trained", "update": "incremental update", "retrain": "retrained", "create": "domain"}[
        plan.kind
    ]
    text = f"LoRA {plan.method.upper()} adapter ({what}, {len(plan.train)} examples"
    if plan.replayed:
        text += f", {plan.replayed} replayed"
    text += ")"
    if plan.domain != "general":
        text += f" for domain {plan.domain!r}"
    if plan.replaces is not None:
        text += f", replacing tainted adapter {plan.replaces.id}"
    return text


def _cancelled(store: Store, job_id: int) -> TrainingJob:
    return jobs_db.update_job(
        store,
        job_id,
        status="cancelled",
        error=(
            f"Cancelled; the previous adapter stays active. Resume with `minetune train --resume {job_id}`."
        ),
        finished_at=datetime.now(UTC),
    )


# -- choosing examples -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which examples of a program to train on (all by default)."""

    since: datetime | None = None
    until: datetime | None = None
    conversations: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "conversations": list(self.conversations),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Selection:
        data = data or {}
        since, until = data.get("since"), data.get("until")
        return cls(
            datetime.fromisoformat(since) if since else None,
            datetime.fromisoformat(until) if until else None,
            tuple(int(c) for c in data.get("conversations") or ()),
        )

    def empty(self) -> bool:
        return self.since is None and self.until is None and not self.conversations

    def apply(self, store: Store, examples: list[Any]) -> list[Any]:
        if self.empty():
            return examples
        info = adapters_db.turn_info(store, [ex.turn_id for ex in examples])
        kept = []
        for ex in examples:
            meta = info.get(ex.turn_id)
            if meta is None:
                continue
            if self.conversations and meta.conversation_id not in self.conversations:
                continue
            if self.since is not None and meta.created_at < _aware(self.since):
                continue
            if self.until is not None and meta.created_at >= _aware(self.until):
                continue
            kept.append(ex)
        return kept


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass
class Examples:
    """A method's examples for a program, split, after a selection."""

    method: str
    train: list[Any]
    valid: list[Any]


def examples_for(
    store: Store,
    program: str,
    method: str,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    seed: int = DEFAULT_SEED,
    selection: Selection | None = None,
) -> Examples:
    dataset = build_dataset(store, program, method, threshold=threshold, seed=seed)
    selection = selection or Selection()
    return Examples(method, selection.apply(store, dataset.train), selection.apply(store, dataset.valid))


def choose_method(
    store: Store, program: str, *, threshold: int = DEFAULT_THRESHOLD, minimum: int = MIN_EXAMPLES
) -> str:
    """``auto``: DPO when there are enough preference pairs, else SFT, else KTO."""
    from minetune.train.datasets import eligibility_report

    report = eligibility_report(store, program, threshold)
    for method in AUTO_ORDER:
        elig = report[method]
        if elig.count >= minimum and (minimum < MIN_EXAMPLES or elig.eligible):
            return method
    raise TrainingError(
        "Not enough rated examples to train on yet. " + " ".join(report[m].summary() for m in AUTO_ORDER)
    )


def _too_few(method: str, examples: Sequence[Any], minimum: int, threshold: int) -> TrainingError:
    from minetune.train.datasets import eligibility

    text = f"Too few {method.upper()} examples to train on: {len(examples)}, at least {minimum} needed."
    if minimum == MIN_EXAMPLES:
        text += " " + eligibility(method, examples, threshold).summary()
    return TrainingError(text)


def default_eval_sets(
    store: Store, program: str, method: str, valid: list[Any], threshold: int, seed: int
) -> EvalSets:
    """Held-out sets for a run: the validation split's preference pairs, and its answers."""
    pairs = (
        valid
        if method == "dpo"
        else examples_for(store, program, "dpo", threshold=threshold, seed=seed).valid
    )
    targets = [ex for ex in valid if target_text(ex) is not None]
    return EvalSets(pairs=list(pairs), targets=targets)


def train(
    store: Store,
    settings: Settings,
    program: str,
    *,
    method: str = "auto",
    base: str | None = None,
    config: TrainConfig | None = None,
    domain: str = "general",
    selection: Selection | None = None,
    continue_active: bool = False,
    activate: bool = True,
    threshold: int = DEFAULT_THRESHOLD,
    minimum: int = MIN_EXAMPLES,
    examples: Sequence[Any] | None = None,
    eval_sets: EvalSets | None = None,
    gate: Gate | None = None,
    kind: str = "train",
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Outcome:
    """Train a LoRA adapter for ``program`` from its rated interactions and publish it.

    ``method`` sft, dpo, kto or auto (:func:`choose_method`). The adapter is new unless
    ``continue_active`` (then the active adapter is trained further). ``examples`` replaces the
    store's training split (their lineage is recorded just the same). Raises
    :class:`TrainingError` with what is missing when there are fewer than ``minimum`` examples.
    """
    config = config or TrainConfig()
    store.program(program)  # unknown programs fail here
    if method == "auto":
        method = choose_method(store, program, threshold=threshold, minimum=minimum)
    if method not in METHODS:
        raise TrainingError(f"Unknown training method {method!r}; choose one of: sft, dpo, kto, auto.")
    selection = selection or Selection()
    found = examples_for(store, program, method, threshold=threshold, seed=config.seed, selection=selection)
    chosen = list(examples) if examples is not None else found.train
    available = chosen if examples is not None else found.train + found.valid
    if len(available) < minimum or not chosen:
        raise _too_few(method, available, minimum, threshold)
    if method == "kto" and len({bool(ex.label) for ex in chosen}) < 2:
        raise TrainingError(
            "KTO needs both desirable (accepted) and undesirable (rated 1-2★) answers to train on; "
            "rate some weak answers low, or use --method sft."
        )
    parent = adapters_db.active_adapter(store, program) if continue_active else None
    if continue_active and parent is None:
        raise TrainingError(f"Program {program!r} has no active minetune adapter to continue.")
    if parent is not None and parent.tainted_at is not None:
        raise TrainingError(
            f"Adapter {parent.id} learned from forgotten data; retrain it first "
            "(`minetune train --retrain-tainted`)."
        )
    base_model = base_for(store, settings, program, base, parent)
    plan = Plan(
        program=program,
        method=method,
        base=base_model,
        train=chosen,
        eval_sets=eval_sets
        if eval_sets is not None
        else default_eval_sets(store, program, method, found.valid, threshold, config.seed),
        config=config,
        kind=kind,
        domain=parent.domain if parent is not None and domain == "general" else domain,
        parent=parent,
        activate=activate,
        selection=selection.to_dict(),
        threshold=threshold,
    )
    return run(store, settings, plan, on_progress=on_progress, cancel=cancel, gate=gate)


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


def resume(
    store: Store,
    settings: Settings,
    job_id: int,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    gate: Gate | None = None,
) -> Outcome:
    """Continue a cancelled (or failed) local job from its last checkpoint, on the same examples."""
    job = jobs_db.get_job(store, job_id)
    program = jobs_db.job_program_name(store, job_id)
    if job.kind != "local":
        raise TrainingError(f"Job {job_id} is a hosted job; see `minetune finetune status {job_id}`.")
    if job.status not in ("cancelled", "failed", "running"):
        raise TrainingError(f"Job {job_id} is {job.status}; only cancelled or failed jobs can be resumed.")
    work = adapters_root(settings, program) / JOBS_DIR / str(job_id)
    if _last_checkpoint(work / "checkpoints") is None:
        raise TrainingError(
            f"Job {job_id} left no checkpoint to resume from; start a new run with `minetune train`."
        )
    hp = dict(job.hyperparameters or {})
    config = TrainConfig.from_dict(hp)
    threshold = int(hp.get("threshold", DEFAULT_THRESHOLD))
    by_key: dict[tuple[Any, ...], Any] = {}
    for method in {job.method, "dpo"}:
        dataset = build_dataset(store, program, method, threshold=threshold, seed=config.seed)
        for ex in dataset.examples:
            by_key.setdefault((method, *ex.attempt_ids), ex)

    def lookup(keys: list[list[int]], method: str, what: str) -> list[Any]:
        found = []
        for key in keys:
            ex = by_key.get((method, *key))
            if ex is None:
                raise TrainingError(
                    f"Job {job_id} cannot be resumed: some of its {what} examples were changed or forgotten "
                    "since it started. Start a new run with `minetune train`."
                )
            found.append(ex)
        return found

    train_examples = lookup(hp.get("examples") or [], job.method, "training")
    evals = hp.get("eval") or {}
    sets = EvalSets(
        pairs=lookup(evals.get("pairs") or [], "dpo", "held-out"),
        targets=lookup(evals.get("targets") or [], job.method, "held-out"),
        retain=_lookup_loose(by_key, evals.get("retain") or [], job.method),
    )
    parent = adapters_db.get_adapter(store, hp["parent_adapter"]) if hp.get("parent_adapter") else None
    replaces = adapters_db.get_adapter(store, hp["replaces_adapter"]) if hp.get("replaces_adapter") else None
    base = BaseModel(job.base_model, str(hp.get("base_backend") or "hf"), hp.get("base_url"))
    plan = Plan(
        program=program,
        method=job.method,
        base=base,
        train=train_examples,
        eval_sets=sets,
        config=config,
        kind=str(hp.get("kind") or "train"),
        domain=str(hp.get("domain") or "general"),
        parent=parent,
        replaces=replaces,
        activate=bool(hp.get("activate", True)),
        replayed=int(hp.get("replayed") or 0),
        selection=dict(hp.get("selection") or {}),
        threshold=threshold,
    )
    return run(store, settings, plan, on_progress=on_progress, cancel=cancel, gate=gate, job_id=job_id)


def _lookup_loose(by_key: dict[Any, Any], keys: list[list[int]], method: str) -> list[Any]:
    return [ex for key in keys if (ex := by_key.get((method, *key))) is not None]


def sample(items: Sequence[Any], count: int, seed: int) -> list[Any]:
    """A reproducible sample of ``count`` items (all when there are fewer), in their original order."""
    if count >= len(items):
        return list(items)
    picked = sorted(random.Random(seed).sample(range(len(items)), count))
    return [items[i] for i in picked]


def describe_job(job: TrainingJob) -> dict[str, Any]:
    """A plain summary of a local job for display."""
    metrics = dict(job.metrics or {})
    return {
        "id": job.id,
        "method": job.method,
        "status": job.status,
        "base_model": job.base_model,
        "examples": len(job.example_attempt_ids or []),
        "adapter": metrics.get("adapter"),
        "version": metrics.get("version"),
        "first_loss": metrics.get("first_loss"),
        "final_loss": metrics.get("final_loss"),
        "error": job.error,
        "created_at": job.created_at,
    }
