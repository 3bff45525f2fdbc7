"""Incremental LoRA updates of a Whisper-family model (PEFT on the seq2seq model).

:func:`train_update` continues the previous adapter (``PeftModel.from_pretrained(...,
is_trainable=True)``) or starts one on the base, trains on the newly corrected clips mixed with a
replay of older ones (so what the adapter already learned is rehearsed, not overwritten), and
measures, before and after: the token loss on the new clips, the word error rate on held-out
clips it never trains on, and the word error rate on the replayed older clips (retention).
:class:`WhisperGate` decides from those numbers whether the update is kept. The trainer returns a
result; the core (:mod:`minetune.app.speech`) records and publishes it.

torch, transformers and peft are imported inside the functions.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minetune.errors import MinetuneError
from minetune.models.audio import CHUNK_SECONDS, SAMPLE_RATE
from minetune.models.transcribe import generate_text, wer
from minetune.train.gate import GateDecision

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass(frozen=True)
class WhisperLoraConfig:
    """How one update trains: LoRA shape, optimiser, steps, and how much to replay."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    learning_rate: float = 3e-3
    steps: int = 40
    batch_size: int = 4
    replay_ratio: float = 1.0  # older clips per new clip, at most
    seed: int = 0
    target_modules: tuple[str, ...] = LORA_TARGETS

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"target_modules": list(self.target_modules)}


@dataclass(frozen=True)
class SpeechExample:
    """One clip and the text it says, with the attempts it came from (lineage)."""

    samples: Any  # 16 kHz mono float32
    text: str
    attempt_ids: tuple[int, ...] = ()


@dataclass
class WhisperUpdate:
    """What one update did and measured; ``adapter_dir`` holds the trained PEFT adapter."""

    adapter_dir: str
    steps: int
    seconds: float
    audio_seconds: float  # audio trained on (clip seconds × times seen)
    new_loss_before: float
    new_loss_after: float
    held_out_wer_before: float | None
    held_out_wer_after: float | None
    retention_wer_before: float | None
    retention_wer_after: float | None
    replayed: int = 0  # older clips rehearsed
    loss_curve: list[dict[str, float]] = field(default_factory=list)
    trained_attempt_ids: list[int] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("adapter_dir")
        data.pop("trained_attempt_ids")
        return data


@dataclass(frozen=True)
class WhisperGate:
    """Keep an update only when held-out WER does not rise by more than ``max_wer_rise`` and
    WER on the replayed older clips (retention) does not rise by more than ``max_retention_rise``,
    with at least ``min_held_out`` held-out clips."""

    max_wer_rise: float = 0.0
    max_retention_rise: float = 0.0
    min_held_out: int = 1

    def decide(self, update: WhisperUpdate, held_out: int) -> GateDecision:
        report = update.metrics() | {"held_out_clips": held_out}
        if held_out < self.min_held_out:
            return GateDecision(
                False, f"only {held_out} held-out clip(s); {self.min_held_out} needed", report
            )
        before, after = update.held_out_wer_before or 0.0, update.held_out_wer_after or 0.0
        if after > before + self.max_wer_rise:
            return GateDecision(
                False,
                f"held-out WER went from {before:.3f} to {after:.3f}; the gate keeps at most "
                f"{before + self.max_wer_rise:.3f}",
                report,
            )
        r_before, r_after = update.retention_wer_before, update.retention_wer_after
        if r_before is not None and r_after is not None and r_after > r_before + self.max_retention_rise:
            return GateDecision(
                False, f"forgets: WER on older clips rose from {r_before:.3f} to {r_after:.3f}", report
            )
        return GateDecision(True, f"held-out WER {before:.3f} -> {after:.3f}", report)


def _labels(processor: Any, model: Any, text: str) -> list[int]:
    ids = list(processor.tokenizer(text).input_ids)
    start = model.config.decoder_start_token_id
    return ids[1:] if ids and ids[0] == start else ids


def _batch(processor: Any, model: Any, examples: Sequence[SpeechExample]) -> tuple[Any, Any]:
    import torch

    pieces = [ex.samples[: int(CHUNK_SECONDS * SAMPLE_RATE)] for ex in examples]
    features = processor.feature_extractor(pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    labels = [_labels(processor, model, ex.text) for ex in examples]
    width = max(len(label) for label in labels)
    padded = torch.tensor([label + [-100] * (width - len(label)) for label in labels])
    return features.input_features, padded


def _losses(processor: Any, model: Any, examples: Sequence[SpeechExample]) -> list[float]:
    """Mean token loss of each example (eval mode, no gradient)."""
    import torch

    model.eval()
    out: list[float] = []
    with torch.no_grad():
        for ex in examples:
            features, labels = _batch(processor, model, [ex])
            out.append(float(model(input_features=features, labels=labels).loss))
    return out


def _wer(processor: Any, model: Any, examples: Sequence[SpeechExample], prompt: str | None) -> float | None:
    if not examples:
        return None
    model.eval()
    limit = int(CHUNK_SECONDS * SAMPLE_RATE)
    hyps = [generate_text(processor, model, ex.samples[:limit], prompt) for ex in examples]
    return wer([ex.text for ex in examples], hyps)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def load_trainable(model_dir: str, parent_adapter: str | None, config: WhisperLoraConfig) -> tuple[Any, Any]:
    """(processor, PEFT model ready to train): the parent adapter continued, or a new LoRA."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoProcessor, WhisperForConditionalGeneration

    torch.manual_seed(config.seed)
    processor = AutoProcessor.from_pretrained(model_dir)
    base = WhisperForConditionalGeneration.from_pretrained(model_dir)
    if parent_adapter:
        model = PeftModel.from_pretrained(base, parent_adapter, is_trainable=True)
    else:
        lora = LoraConfig(
            r=config.r,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=list(config.target_modules),
        )
        model = get_peft_model(base, lora)
    return processor, model


def train_update(
    model_dir: str,
    out_dir: str | Path,
    new: Sequence[SpeechExample],
    *,
    parent_adapter: str | None = None,
    replay: Sequence[SpeechExample] = (),
    held_out: Sequence[SpeechExample] = (),
    config: WhisperLoraConfig | None = None,
    prompt: str | None = None,
    on_step: Callable[[int, float], None] | None = None,
    cancel: threading.Event | None = None,
) -> WhisperUpdate:
    """Train one incremental update (see the module docstring); the adapter is saved in ``out_dir``.
    Word error rates are measured as the model will be used: greedy, with ``prompt`` (the vocabulary)."""
    import torch

    config = config or WhisperLoraConfig()
    if not new:
        raise MinetuneError("No new corrected clips to learn from.")
    rng = random.Random(config.seed)
    replayed = list(replay)
    rng.shuffle(replayed)
    replayed = replayed[: max(0, math.ceil(len(new) * config.replay_ratio))]
    processor, model = load_trainable(model_dir, parent_adapter, config)
    new_before = _mean(_losses(processor, model, new))
    held_before = _wer(processor, model, held_out, prompt)
    kept_before = _wer(processor, model, replayed, prompt)

    pool = list(new) + replayed
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate)
    curve: list[dict[str, float]] = []
    audio_seconds = 0.0
    start = time.perf_counter()
    order: list[SpeechExample] = []
    steps = 0
    model.train()
    for step in range(1, config.steps + 1):
        if cancel is not None and cancel.is_set():
            raise MinetuneError("The speech update was cancelled.")
        if len(order) < config.batch_size:
            more = list(pool)
            rng.shuffle(more)
            order += more
        batch, order = order[: config.batch_size], order[config.batch_size :]
        features, labels = _batch(processor, model, batch)
        loss = model(input_features=features, labels=labels).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        audio_seconds += sum(min(len(ex.samples), CHUNK_SECONDS * SAMPLE_RATE) for ex in batch) / SAMPLE_RATE
        value = float(loss.detach())
        curve.append({"step": step, "train_loss": round(value, 5)})
        steps = step
        if on_step is not None:
            on_step(step, value)
    seconds = time.perf_counter() - start
    new_after = _mean(_losses(processor, model, new))
    held_after = _wer(processor, model, held_out, prompt)
    kept_after = _wer(processor, model, replayed, prompt)
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    trained = sorted({a for ex in pool for a in ex.attempt_ids})
    return WhisperUpdate(
        str(target),
        steps,
        seconds,
        audio_seconds,
        new_before,
        new_after,
        held_before,
        held_after,
        kept_before,
        kept_after,
        len(replayed),
        curve,
        trained,
    )
