"""Continual learning: incremental, gated adapter updates from a buffer of new examples.

Every accepted (or rated) answer that the active adapter has not learned from yet is *in the
buffer*. When the buffer reaches a threshold, :func:`update` trains the active adapter further
(``PeftModel.from_pretrained(base, dir, is_trainable=True)``) on the new examples mixed with a
replayed sample of the examples it already learned (``replay_ratio`` per new example, at most
``replay_max``), optionally with an EWC penalty. The result is kept only if it passes the gate
(:class:`minetune.train.gate.GateConfig`, stored with the job so a resumed update meets it too):

* **held-out data** — the validation split's preference pairs (without pairs: its accepted
  answers), leaving out any the parent adapter or this update trained on; at least
  ``min_held_out`` of them, or the update is refused;
* **improvement** — the per-pair change of the preference margin, log p(chosen) − log p(rejected)
  (without pairs: the per-answer fall of the loss), must average more than ``min_improvement``
  and pass an exact one-sided paired sign test at level ``significance`` (beyond noise);
* **retention** — the loss on older examples the update did not train on (a sample of those it
  did not replay) may rise by at most ``retention_tolerance`` (relative).

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
from minetune.train.examples import choose_method, default_eval_sets, examples_for, sample
from minetune.train.gate import DEFAULT_MIN_HELD_OUT, DEFAULT_SIGNIFICANCE, GateConfig
from minetune.train.rows import target_text
from minetune.train.runs import Outcome, Plan, run


@dataclass
class ContinualConfig:
    """Settings of incremental updates (see the module docstring)."""

    threshold: int = 8  # new examples that trigger an update
    replay_ratio: float = 1.0  # replayed older examples per new example
    replay_max: int = 64
    min_improvement: float = 0.0
    retention_tolerance: float = 0.05  # allowed relative rise of the loss on older examples
    retain_examples: int = 32  # older examples measured for retention
    min_held_out: int = DEFAULT_MIN_HELD_OUT  # held-out pairs (or answers) the gate needs
    significance: float = DEFAULT_SIGNIFICANCE  # level of the gate's one-sided sign test
    ewc_lambda: float = 0.0
    stars: int = DEFAULT_THRESHOLD  # stars that accept an answer
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2.0))

    def check(self) -> None:
        problems = []
        if self.threshold < 1:
            problems.append("the update threshold must be at least 1")
        if self.replay_ratio < 0 or self.replay_max < 0:
            problems.append("the replay ratio and maximum cannot be negative")
        problems += self.gate().problems()
        if problems:
            raise TrainingError("Invalid update settings: " + "; ".join(problems) + ".")

    def gate(self) -> GateConfig:
        return GateConfig(
            min_improvement=self.min_improvement,
            retention_tolerance=self.retention_tolerance,
            min_held_out=self.min_held_out,
            significance=self.significance,
        )

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


def gate(config: ContinualConfig) -> GateConfig:
    """The keep-or-refuse rule of :func:`update` (see :class:`minetune.train.gate.GateConfig`)."""
    return config.gate()


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
    trained = {a for ex in fresh + replay for a in ex.attempt_ids}
    # Retention is measured only on older answers this update does not train on (none are added
    # back from the replay sample: it would measure what the update just fitted).
    unseen = [ex for ex in buf.old if target_text(ex) is not None and trained.isdisjoint(ex.attempt_ids)]
    retain = sample(unseen, config.retain_examples, seed + 1)
    # Held out means neither this update nor the adapter it continues has trained on it.
    learned = trained | set(buf.parent.lineage_attempt_ids or []) if buf.parent is not None else trained
    sets = default_eval_sets(store, program, buf.method, buf.valid, config.stars, seed, exclude=learned)
    sets.retain = retain
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
        gate=config.gate(),
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
    outcome = run(store, settings, plan, on_progress=on_progress, cancel=cancel)
    status = {"succeeded": "updated"}.get(outcome.status, outcome.status)
    return UpdateReport(status, buf, outcome)
