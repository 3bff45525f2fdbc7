"""Continual learning: incremental, gated adapter updates from a buffer of new examples.

Every accepted (or rated) answer that the active adapter has not learned from yet is *in the
buffer*. When the buffer reaches a threshold, :func:`update` trains the active adapter further
(``PeftModel.from_pretrained(base, dir, is_trainable=True)``) on the new examples mixed with a
replayed sample of the examples it already learned (``replay_ratio`` per new example, at most
``replay_max``), optionally with an EWC penalty. The result is kept only if it passes the gate:

* **improvement** — on held-out rated examples (the validation split's preference pairs) the mean
  preference margin, log p(chosen) − log p(rejected), must rise by more than ``min_improvement``
  (without held-out pairs: the held-out loss on accepted answers must fall);
* **retention** — the loss on older examples (a sample the update did not replay) may rise by at
  most ``retention_tolerance`` (relative).

A refused update leaves the previous adapter active and records the reason in the job. Every
update reports improvement, retention (relative change of the older-example loss) and regression
(the share of held-out pairs whose margin fell). Updates run in the background as ``continual`` jobs of
the job runner (:func:`minetune.app.jobs.note_accepted`, called after each accepted answer when
``[continual] enabled = true``, :class:`minetune.config.ContinualSettings`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from minetune.config import ContinualSettings, Settings
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store.schema import Adapter
from minetune.train.base import base_for
from minetune.train.config import ProgressCallback, TrainConfig, TrainingError
from minetune.train.datasets import DEFAULT_THRESHOLD
from minetune.train.examples import choose_method, examples_for, sample
from minetune.train.rows import target_text
from minetune.train.runs import GateDecision, Outcome, Plan, run
from minetune.train.scoring import EvalSets


@dataclass
class ContinualConfig:
    """Settings of incremental updates (see the module docstring)."""

    threshold: int = 8  # new examples that trigger an update
    replay_ratio: float = 1.0  # replayed older examples per new example
    replay_max: int = 64
    min_improvement: float = 0.0
    retention_tolerance: float = 0.05  # allowed relative rise of the loss on older examples
    retain_examples: int = 32  # older examples measured for retention
    ewc_lambda: float = 0.0
    stars: int = DEFAULT_THRESHOLD  # stars that accept an answer
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2.0))

    def check(self) -> None:
        problems = []
        if self.threshold < 1:
            problems.append("the update threshold must be at least 1")
        if self.replay_ratio < 0 or self.replay_max < 0:
            problems.append("the replay ratio and maximum cannot be negative")
        if self.retention_tolerance < 0:
            problems.append("the retention tolerance cannot be negative")
        if problems:
            raise TrainingError("Invalid update settings: " + "; ".join(problems) + ".")

    @classmethod
    def from_settings(cls, settings: ContinualSettings) -> ContinualConfig:
        """The update settings of ``[continual]`` in config.toml (``train`` holds LoRA settings)."""
        train = dict(settings.train)
        unknown = sorted(set(train) - set(TrainConfig().to_dict()))
        if unknown:
            raise TrainingError(f"Unknown [continual.train] setting(s): {', '.join(unknown)}.")
        return cls(
            threshold=settings.threshold,
            replay_ratio=settings.replay_ratio,
            replay_max=settings.replay_max,
            min_improvement=settings.min_improvement,
            retention_tolerance=settings.retention_tolerance,
            ewc_lambda=settings.ewc_lambda,
            stars=settings.stars,
            train=TrainConfig.from_dict({"epochs": 2.0} | train),
        )


@dataclass
class Buffer:
    """The examples of ``method`` the active adapter (``parent``) has and has not learned from."""

    program: str
    method: str
    parent: Adapter | None
    new: list[Any]
    old: list[Any]
    valid: list[Any]
    threshold: int

    @property
    def ready(self) -> bool:
        return len(self.new) >= self.threshold

    def summary(self) -> str:
        base = f"adapter {self.parent.id}" if self.parent else "no adapter yet"
        return (
            f"{self.program}: {len(self.new)} new {self.method.upper()} example(s) of {self.threshold} "
            f"needed for an update ({base}; {len(self.old)} already learned)."
        )


def buffer(
    store: Store, program: str, config: ContinualConfig | None = None, *, method: str | None = None
) -> Buffer:
    """What an update of ``program`` would learn now. The method is the active adapter's (or
    ``auto`` when there is none and ``method`` is not given)."""
    config = config or ContinualConfig()
    parent = adapters_db.active_adapter(store, program)
    if parent is not None and parent.tainted_at is not None:
        raise TrainingError(
            f"The active adapter {parent.id} learned from forgotten data; retrain it first "
            "(`minetune train --retrain-tainted`)."
        )
    if method is None:
        method = (
            parent.method if parent is not None else choose_method(store, program, threshold=config.stars)
        )
    found = examples_for(store, program, method, threshold=config.stars, seed=config.train.seed)
    learned = set(parent.lineage_attempt_ids or []) if parent is not None else set()
    new = [ex for ex in found.train if not set(ex.attempt_ids) <= learned]
    old = [ex for ex in found.train if set(ex.attempt_ids) <= learned]
    return Buffer(program, method, parent, new, old, found.valid, config.threshold)


def gate(config: ContinualConfig) -> Any:
    """The keep-or-refuse rule of :func:`update` over before/after scores (see the module docstring)."""

    def decide(before: dict[str, Any], after: dict[str, Any]) -> GateDecision:
        report: dict[str, Any] = {}
        if "margin" in before and "margin" in after:
            improvement = after["margin"] - before["margin"]
            pairs = list(zip(before.get("margins", []), after.get("margins", []), strict=False))
            report |= {
                "metric": "held-out preference margin",
                "margin_before": before["margin"],
                "margin_after": after["margin"],
                "regression": sum(1 for b, a in pairs if a < b) / len(pairs) if pairs else 0.0,
                "held_out": len(pairs),
            }
        elif before.get("valid_loss") is not None and after.get("valid_loss") is not None:
            improvement = before["valid_loss"] - after["valid_loss"]
            report |= {
                "metric": "held-out loss on accepted answers",
                "valid_loss_before": before["valid_loss"],
                "valid_loss_after": after["valid_loss"],
                "regression": 1.0 if improvement < 0 else 0.0,
            }
        else:
            return GateDecision(
                False,
                "Refused: there are no held-out rated examples to measure the update by (rate more answers).",
                report,
            )
        report["improvement"] = improvement
        retention = None
        if before.get("retain_loss") and after.get("retain_loss") is not None:
            retention = after["retain_loss"] / before["retain_loss"] - 1
            report |= {
                "retain_loss_before": before["retain_loss"],
                "retain_loss_after": after["retain_loss"],
                "retention": retention,
            }
        if improvement <= config.min_improvement:
            return GateDecision(
                False,
                f"Refused: the {report['metric']} did not improve ({_signed(improvement)}, "
                f"needed more than {_signed(config.min_improvement)}); the previous adapter stays active.",
                report,
            )
        if retention is not None and retention > config.retention_tolerance:
            return GateDecision(
                False,
                f"Refused: the loss on older examples rose {retention:.1%} (tolerance "
                f"{config.retention_tolerance:.1%}); the previous adapter stays active.",
                report,
            )
        kept = f"Kept: {report['metric']} {_signed(improvement)}"
        if retention is not None:
            kept += f", older-example loss {retention:+.1%}"
        return GateDecision(True, kept + ".", report)

    return decide


def _signed(value: float) -> str:
    return f"{value:+.4g}"


@dataclass
class UpdateReport:
    """What an update did: ``status`` waiting (buffer not full), updated, rejected or cancelled."""

    status: str
    buffer: Buffer
    outcome: Outcome | None = None

    @property
    def reason(self) -> str:
        if self.outcome is None:
            return self.buffer.summary()
        if self.outcome.gate is not None:
            return self.outcome.gate.reason
        return self.outcome.job.error or self.outcome.status

    @property
    def gate(self) -> dict[str, Any]:
        return dict((self.outcome.job.metrics or {}).get("gate", {})) if self.outcome else {}

    @property
    def improvement(self) -> float | None:
        return self.gate.get("improvement")

    @property
    def retention(self) -> float | None:
        return self.gate.get("retention")

    @property
    def regression(self) -> float | None:
        return self.gate.get("regression")


def plan_update(
    store: Store,
    settings: Settings,
    program: str,
    config: ContinualConfig,
    *,
    new: list[Any] | None = None,
    method: str | None = None,
    base: str | None = None,
) -> tuple[Buffer, Plan]:
    """The buffer and the run an update would make (``new`` replaces the buffer's new examples)."""
    config.check()
    buf = buffer(store, program, config, method=method)
    fresh = list(new) if new is not None else buf.new
    if not fresh:
        raise TrainingError(f"Nothing new to learn for {program!r}: {buf.summary()}")
    seed = config.train.seed
    want = min(round(config.replay_ratio * len(fresh)), config.replay_max)
    replay = sample(buf.old, want, seed)
    replayed = {id(ex) for ex in replay}
    unreplayed = [ex for ex in buf.old if id(ex) not in replayed]
    retain = sample(unreplayed, config.retain_examples, seed + 1)
    if len(retain) < config.retain_examples:
        retain += sample(
            [ex for ex in replay if target_text(ex)], config.retain_examples - len(retain), seed + 2
        )
    pairs = (
        buf.valid
        if buf.method == "dpo"
        else examples_for(store, program, "dpo", threshold=config.stars, seed=seed).valid
    )
    sets = EvalSets(
        pairs=list(pairs),
        targets=[ex for ex in buf.valid if target_text(ex) is not None],
        retain=[ex for ex in retain if target_text(ex) is not None],
    )
    train_config = TrainConfig.from_dict(config.train.to_dict() | {"ewc_lambda": config.ewc_lambda})
    plan = Plan(
        program=program,
        method=buf.method,
        base=base_for(store, settings, program, base, buf.parent),
        train=fresh + replay,
        eval_sets=sets,
        config=train_config,
        kind="update",
        domain=buf.parent.domain if buf.parent is not None else "general",
        parent=buf.parent,
        activate=True,
        replayed=len(replay),
        ewc_examples=list(buf.old),
        threshold=config.stars,
    )
    return buf, plan


def update(
    store: Store,
    settings: Settings,
    program: str,
    config: ContinualConfig | None = None,
    *,
    force: bool = False,
    new: list[Any] | None = None,
    method: str | None = None,
    base: str | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> UpdateReport:
    """Run one gated incremental update of ``program``'s active adapter when the buffer is full
    (or ``force``). ``new`` replaces the buffer's new examples (e.g. to test the gate)."""
    config = config or ContinualConfig()
    buf = buffer(store, program, config, method=method)
    if new is None and not force and not buf.ready:
        return UpdateReport("waiting", buf)
    buf, plan = plan_update(store, settings, program, config, new=new, method=method, base=base)
    outcome = run(store, settings, plan, on_progress=on_progress, cancel=cancel, gate=gate(config))
    status = {"succeeded": "updated"}.get(outcome.status, outcome.status)
    return UpdateReport(status, buf, outcome)
