"""Fast incremental SFT: a base model kept resident on the device with one LoRA adapter.

An incremental update (a few new accepted answers plus a replay sample) is small, so with TRL
most of its time goes to set-up: loading the base, wrapping it, building datasets and a trainer.
:class:`ResidentLoRA` pays that once. Each :meth:`ResidentLoRA.update` restores the parent
adapter's weights into the resident LoRA modules, trains one plain PyTorch loop and saves a
standard PEFT adapter directory (loadable by ``hf:DIR?adapter=…`` and by TRL runs).

What makes the loop fast, and why:

* bf16 weights with fp32 LoRA parameters under autocast — the frozen base is never upcast;
* no attention mask when a batch has no padding, so SDPA takes its causal flash kernel;
* logits only at positions that carry a label, in chunks, so the vocabulary projection and the
  fp32 cross-entropy never materialise for the prompt or the whole batch at once;
* fused AdamW over the LoRA parameters only, and no host sync inside the loop;
* optionally ``torch.compile`` on each decoder layer (one compiled graph reused by all layers).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minetune.errors import MinetuneError
from minetune.train.base import check_adapter_dir
from minetune.train.config import Engine, FitResult, Progress, TrainConfig, TrainingError
from minetune.train.rows import encode
from minetune.train.scoring import EvalSets, Scorer, score

# Rows of logits computed at once; bounds the fp32 cross-entropy buffer to LOSS_CHUNK x vocab.
LOSS_CHUNK = 4096

# What fit_resident implements: every TrainConfig option but the TRL-only ones (checkpoints,
# gradient checkpointing, EWC, the DPO/KTO beta); engines.check_engine refuses those set.
RESIDENT = Engine(
    name="resident",
    methods=("sft",),
    options=frozenset(
        {
            "epochs",
            "max_steps",
            "learning_rate",
            "batch_size",
            "grad_accum",
            "rank",
            "alpha",
            "dropout",
            "target_modules",
            "max_length",
            "seed",
            "warmup_steps",
            "scheduler",
            "weight_decay",
            "precision",
            "threads",
            "engine",
        }
    ),
    values={
        "precision": ("auto", "fp32", "bf16"),
        "scheduler": ("linear", "cosine", "constant", "constant_with_warmup"),
    },
    resumable=False,
)


class FastTrainError(MinetuneError):
    """The resident trainer cannot run with these inputs."""


@dataclass(frozen=True)
class Row:
    """One training sequence: token ids and the index where the loss starts (0: every token)."""

    ids: Sequence[int]
    loss_from: int = 0


@dataclass
class UpdateResult:
    """What one update did. ``train_s`` is the loop alone; ``total_s`` adds restore and save."""

    steps: int
    total_steps: int
    tokens: int
    train_s: float
    total_s: float
    losses: list[float] = field(default_factory=list)
    adapter_dir: Path | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s if self.train_s > 0 else 0.0


@dataclass(frozen=True)
class _Batch:
    ids: Any  # (batch, width) token ids on the device
    mask: Any  # attention mask, or None when the batch has no padding
    positions: Any  # flat indices into (batch * (width - 1)) next-token slots that carry a label
    targets: Any  # the token expected at each of those positions
    count: int
    tokens: int  # real (unpadded) tokens in the batch


def _batches(rows: Sequence[Row], batch_size: int, pad_id: int, device: Any) -> list[_Batch]:
    """Batches built once and moved to the device, with the labelled positions found on the host
    (so the loop never waits on the GPU to learn how many there are).

    Rows are grouped by length so batches carry little padding; a batch without padding gets no
    mask at all (the fast causal attention path)."""
    import torch

    order = sorted(range(len(rows)), key=lambda i: len(rows[i].ids))
    out = []
    for start in range(0, len(order), batch_size):
        chunk = [rows[i] for i in order[start : start + batch_size]]
        width = max(len(r.ids) for r in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        labelled = torch.zeros((len(chunk), width - 1), dtype=torch.bool)
        for j, row in enumerate(chunk):
            n = len(row.ids)
            ids[j, :n] = torch.tensor(list(row.ids), dtype=torch.long)
            labelled[j, max(row.loss_from, 1) - 1 : n - 1] = True  # slot t predicts token t + 1
        positions = labelled.flatten().nonzero().squeeze(1)
        targets = ids[:, 1:].flatten()[positions]
        mask = None
        if any(len(r.ids) < width for r in chunk):
            lengths = torch.tensor([len(r.ids) for r in chunk])
            mask = (torch.arange(width)[None, :] < lengths[:, None]).long().to(device, non_blocking=True)
        out.append(
            _Batch(
                ids=ids.to(device, non_blocking=True),
                mask=mask,
                positions=positions.to(device, non_blocking=True),
                targets=targets.to(device, non_blocking=True),
                count=max(int(positions.numel()), 1),
                tokens=sum(len(r.ids) for r in chunk),
            )
        )
    return out


class ResidentLoRA:
    """A causal LM with one trainable LoRA adapter, kept on its device between updates.

    ``model`` is a loaded transformers causal LM (any dtype/device); ``rank``/``alpha``/``target``
    configure the adapter exactly as :class:`peft.LoraConfig` would."""

    def __init__(
        self,
        model: Any,
        *,
        rank: int = 16,
        alpha: int | None = None,
        target: str | list[str] = "all-linear",
        dropout: float = 0.0,
        compile: bool = False,
        pad_id: int = 0,
    ) -> None:
        import torch
        from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

        self.device = next(model.parameters()).device
        self.pad_id = pad_id
        self.autocast = self.device.type == "cuda" and next(model.parameters()).dtype != torch.float32
        model.config.use_cache = False
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha or 2 * rank,
            lora_dropout=dropout,
            target_modules=target,
            task_type="CAUSAL_LM",
        )
        self.model: Any = get_peft_model(model, config)
        if self.autocast:
            from peft.tuners.tuners_utils import BaseTunerLayer

            # PEFT casts each LoRA input to the adapter's fp32; under autocast that is a wasted
            # round trip through fp32 of every activation, since the matmul runs in bf16 anyway.
            for module in self.model.modules():
                if isinstance(module, BaseTunerLayer):
                    module.cast_input_dtype_enabled = False  # type: ignore[assignment]
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # The freshly initialised adapter, so an update without a parent starts from scratch.
        self._initial = {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()}
        self.lock = threading.Lock()  # one update at a time on the resident model
        self.compiled = False
        if compile:
            for layer in self._decoder_layers():
                layer.compile()
            self.compiled = True

    @classmethod
    def load(
        cls, model_dir: str | Path, *, device: str | None = None, precision: str = "auto", **kwargs: Any
    ) -> ResidentLoRA:
        """Load a base model directory onto ``device`` (default: CUDA when present, else CPU).
        ``precision`` auto is bf16 weights on CUDA and fp32 on CPU; fp32 or bf16 force one."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
        if precision not in ("auto", "fp32", "bf16"):
            raise FastTrainError(f"The resident trainer runs in fp32 or bf16, not {precision}.")
        bf16 = precision == "bf16" or (precision == "auto" and cuda)
        dtype = torch.bfloat16 if bf16 else torch.float32
        try:
            tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir))
            model: Any = AutoModelForCausalLM.from_pretrained(
                str(model_dir), dtype=dtype, attn_implementation="sdpa"
            )
        except Exception as exc:  # OSError, ValueError, unknown architectures, safetensors errors
            raise FastTrainError(f"Could not load the base model from {model_dir}: {exc}") from None
        model.to(device or ("cuda" if cuda else "cpu"))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        trainer = cls(model, pad_id=int(pad or 0), **kwargs)
        trainer.tokenizer = tokenizer
        return trainer

    tokenizer: Any = None

    def _decoder_layers(self) -> list[Any]:
        inner = self.model.get_base_model()
        layers = getattr(getattr(inner, "model", inner), "layers", None)
        if layers is None:
            raise FastTrainError("torch.compile needs a decoder with model.layers (Llama-, Qwen-style).")
        return list(layers)

    # -- adapter state ----------------------------------------------------------------------

    def restore(self, parent: str | Path | None) -> None:
        """Set the adapter to ``parent``'s saved weights, or to a fresh initialisation."""
        import torch
        from peft import set_peft_model_state_dict

        if parent is None:
            state = self._initial
        else:
            from safetensors.torch import load_file

            path = Path(parent) / "adapter_model.safetensors"
            if not path.is_file():
                raise FastTrainError(f"No adapter_model.safetensors in {parent}.")
            try:
                state = load_file(str(path))
            except Exception as exc:
                raise FastTrainError(f"The adapter in {parent} is unreadable: {exc}") from None
        try:
            with torch.no_grad():
                result = set_peft_model_state_dict(self.model, state)
        except RuntimeError as exc:  # e.g. a parent trained with another rank or target modules
            detail = str(exc).strip().splitlines()[-1][:200]
            raise FastTrainError(f"The adapter in {parent} does not fit this model: {detail}") from None
        unexpected = getattr(result, "unexpected_keys", None) or []
        if unexpected:
            raise FastTrainError(f"The adapter in {parent} does not fit this model ({unexpected[0]}, ...).")

    def save(self, out_dir: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write a standard PEFT adapter directory (plus ``minetune.json`` metadata if given)."""
        out = Path(out_dir)
        self.model.save_pretrained(str(out))
        if metadata is not None:
            (out / "minetune.json").write_text(json.dumps(metadata, indent=2))
        return out

    # -- training ---------------------------------------------------------------------------

    def _loss(self, batch: _Batch) -> Any:
        """Mean cross-entropy over labelled next-token positions, computing only those logits."""
        import torch
        import torch.nn.functional as F

        inner = self.model.get_base_model()
        backbone = getattr(inner, "model", None)
        head = inner.get_output_embeddings()
        if backbone is None or head is None:
            raise FastTrainError("The fast trainer needs a decoder-only model with an output head.")
        hidden = backbone(input_ids=batch.ids, attention_mask=batch.mask).last_hidden_state
        states = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, batch.positions)
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, states.shape[0], LOSS_CHUNK):
            logits = head(states[start : start + LOSS_CHUNK]).float()
            total = total + F.cross_entropy(
                logits, batch.targets[start : start + LOSS_CHUNK], reduction="sum"
            )
        return total / batch.count

    def train(
        self,
        rows: Sequence[Row],
        *,
        epochs: float = 1,
        max_steps: int | None = None,
        batch_size: int = 8,
        grad_accum: int = 1,
        learning_rate: float = 1e-4,
        warmup_steps: float = 0.0,
        weight_decay: float = 0.0,
        scheduler: str | None = None,
        linear_decay: bool = False,
        seed: int = 0,
        on_step: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> UpdateResult:
        """Train the current adapter on ``rows`` (shuffled once per epoch with ``seed``).

        As transformers' Trainer counts them: an optimizer step takes ``grad_accum`` batches (the
        loss is the mean over all their labelled tokens; an epoch's last step may take fewer);
        ``max_steps`` (when given) overrides ``epochs``, which may be fractional; ``warmup_steps``
        below 1 is a fraction of the steps. ``scheduler`` is a transformers schedule name
        (default ``linear`` with ``linear_decay``, else ``constant``); AdamW applies
        ``weight_decay``. ``on_step(step, total)`` runs after each optimizer step without
        waiting for the GPU; ``cancel`` stops after the current step."""
        import torch
        from transformers import get_scheduler

        if not rows:
            raise FastTrainError("Nothing to train on: the update has no rows.")
        if min(batch_size, grad_accum, max_steps or 1) < 1 or not epochs > 0 or not learning_rate > 0:
            raise FastTrainError(
                "Batch size, gradient accumulation and steps must be at least 1, and epochs and the "
                "learning rate above 0."
            )
        if warmup_steps < 0 or weight_decay < 0:
            raise FastTrainError("Warmup and weight decay cannot be negative.")
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(
            self.params, lr=learning_rate, weight_decay=weight_decay, fused=self.device.type == "cuda"
        )
        batches = _batches(rows, batch_size, self.pad_id, self.device)
        per_epoch = math.ceil(len(batches) / grad_accum)
        total_steps = max_steps if max_steps is not None else max(1, math.ceil(per_epoch * epochs))
        warmup = int(warmup_steps) if warmup_steps >= 1 else math.ceil(total_steps * warmup_steps)
        schedule = get_scheduler(
            scheduler or ("linear" if linear_decay else "constant"),
            optimizer,
            num_warmup_steps=warmup,
            num_training_steps=total_steps,
        )
        losses = []
        tokens = 0
        self.model.train()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step = 0
        while step < total_steps:
            order = torch.randperm(len(batches), generator=generator).tolist()
            for first in range(0, len(order), grad_accum):
                group = [batches[i] for i in order[first : first + grad_accum]]
                labelled = sum(b.count for b in group)
                step_loss: Any = 0.0
                for batch in group:
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                        loss = self._loss(batch) * (batch.count / labelled)
                    loss.backward()
                    step_loss = step_loss + loss.detach()
                    tokens += batch.tokens
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(step_loss)
                step += 1
                if on_step is not None:
                    on_step(step, total_steps)
                if step >= total_steps or (cancel is not None and cancel.is_set()):
                    break
            if cancel is not None and cancel.is_set():
                break
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - start
        self.model.eval()
        return UpdateResult(
            steps=step,
            total_steps=total_steps,
            tokens=tokens,
            train_s=train_s,
            total_s=train_s,
            losses=[float(x) for x in torch.stack(losses).cpu().tolist()],
        )

    def update(
        self,
        rows: Sequence[Row],
        *,
        parent: str | Path | None = None,
        out_dir: str | Path | None = None,
        metadata: dict[str, Any] | None = None,
        **train_options: Any,
    ) -> UpdateResult:
        """One incremental update: continue ``parent`` (None: a fresh adapter) on ``rows`` and
        save the result to ``out_dir`` if given. ``train_options`` go to :meth:`train`."""
        begin = time.perf_counter()
        self.restore(parent)
        result = self.train(rows, **train_options)
        if out_dir is not None:
            result.adapter_dir = self.save(out_dir, metadata)
        result.total_s = time.perf_counter() - begin
        return result


_RESIDENT: dict[tuple[str, str], ResidentLoRA] = {}


def resident(model_dir: str | Path, **kwargs: Any) -> ResidentLoRA:
    """The process-wide resident trainer for a base model directory (loaded on first use)."""
    key = (str(Path(model_dir).resolve()), json.dumps(kwargs, sort_keys=True, default=str))
    trainer = _RESIDENT.get(key)
    if trainer is None:
        trainer = _RESIDENT[key] = ResidentLoRA.load(model_dir, **kwargs)
    return trainer


def fit_resident(
    base_dir: Path,
    examples: Sequence[Any],
    config: TrainConfig,
    work_dir: Path,
    *,
    parent_adapter: Path | None = None,
    eval_sets: EvalSets | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> FitResult:
    """:func:`minetune.train.engines.fit` for SFT on the resident trainer: same inputs, same
    :class:`~minetune.train.config.FitResult`, the adapter saved to ``work_dir/adapter``."""
    import shutil

    notify = on_progress or (lambda _p: None)
    started = time.perf_counter()

    def elapsed() -> float:
        return time.perf_counter() - started

    RESIDENT.check("sft", config)
    cuda = _cuda()
    if config.precision == "bf16" and not cuda:
        raise TrainingError("bf16 training needs a GPU; use precision fp32 on CPU.")
    notify(Progress("loading"))
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    trainer = resident(
        base_dir,
        precision=config.precision,
        rank=config.rank,
        alpha=config.alpha,
        target=config.target_modules,
        dropout=config.dropout,
        compile=cuda,
    )
    rows = [Row(*encode(trainer.tokenizer, ex.prompt, ex.response, config.max_length)) for ex in examples]
    sets = eval_sets or EvalSets()
    with trainer.lock:
        trainer.restore(check_adapter_dir(parent_adapter) if parent_adapter is not None else None)
        scorer = Scorer(trainer.model, trainer.tokenizer, config.max_length)
        before = score(scorer, sets) if not sets.empty() else {}

        def step(done: int, total: int) -> None:
            notify(Progress("training", done, total, elapsed_s=elapsed()))

        result = trainer.train(
            rows,
            epochs=config.epochs,
            max_steps=config.max_steps,
            batch_size=config.batch_size,
            grad_accum=config.grad_accum,
            learning_rate=config.lr("sft"),
            warmup_steps=config.warmup_steps,
            weight_decay=config.weight_decay,
            scheduler=config.scheduler,
            seed=config.seed,
            on_step=step,
            cancel=cancel,
        )
        curve = [{"step": i + 1, "train_loss": loss} for i, loss in enumerate(result.losses)]
        cancelled = cancel is not None and cancel.is_set() and result.steps < result.total_steps
        adapter_dir: Path | None = None
        after: dict[str, Any] = {}
        if not cancelled:
            notify(Progress("evaluating", result.steps, result.total_steps, elapsed_s=elapsed()))
            after = score(scorer, sets) if not sets.empty() else {}
            adapter_dir = work_dir / "adapter"
            if adapter_dir.exists():
                shutil.rmtree(adapter_dir)
            trainer.save(adapter_dir)
            notify(Progress("done", result.steps, result.total_steps, elapsed_s=elapsed()))
    log = {"engine": "resident", "compiled": trainer.compiled, "tokens_per_s": result.tokens_per_s}
    return FitResult(
        adapter_dir,
        cancelled,
        curve,
        result.steps,
        result.total_steps,
        elapsed(),
        result.tokens,
        before,
        after,
        log if not cancelled else {},
        result.train_s,
    )


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
