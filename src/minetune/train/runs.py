"""Runs for a program from the store: :func:`train` / :func:`resume` / :func:`run`.

Every run is a ``training_jobs`` row (status, hyperparameters, loss curve, metrics, the attempt
ids it trained on), and a finished run becomes an ``adapters`` row stored under
``$MINETUNE_HOME/adapters/<program>/<id>/`` and a new program version whose model spec loads it.
Nothing changes the active version until the adapter is complete (and, for a gated run, kept by
its gate), so a cancelled, failed or refused run leaves the previous adapter active.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from minetune.config import Settings
from minetune.errors import MinetuneError, ModelError
from minetune.files import private_dirs, private_tree
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store import training as jobs_db
from minetune.store.schema import Adapter, TrainingJob
from minetune.train.base import (
    BaseModel,
    adapters_root,
    base_for,
    check_adapter_dir,
    check_model_root,
    job_dir,
)
from minetune.train.config import (
    METADATA_FILE,
    FitResult,
    ProgressCallback,
    TrainConfig,
    TrainingError,
)
from minetune.train.datasets import DEFAULT_THRESHOLD, METHODS, MIN_EXAMPLES, build_dataset
from minetune.train.engines import check_engine, fit, last_checkpoint
from minetune.train.examples import Selection, choose_method, default_eval_sets, examples_for, too_few
from minetune.train.gate import GateConfig, GateDecision
from minetune.train.scoring import EvalSets

MAX_CURVE_POINTS = 1000


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
    gate: GateConfig | None = None  # keep the adapter only if it passes (continual updates)

    def ewc_anchor(self) -> list[Any]:
        """The parent's examples the EWC penalty is estimated on (none without a penalty)."""
        if self.config.ewc_lambda <= 0 or self.parent is None:
            return []
        return list(self.ewc_examples)[: self.config.ewc_examples]

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
            "gate": self.gate.to_dict() if self.gate is not None else None,
            "ewc": [list(ex.attempt_ids) for ex in self.ewc_anchor()],
            "examples": [list(ex.attempt_ids) for ex in self.train],
            "eval": {
                "pairs": [list(ex.attempt_ids) for ex in self.eval_sets.pairs],
                "targets": [list(ex.attempt_ids) for ex in self.eval_sets.targets],
                "retain": [list(ex.attempt_ids) for ex in self.eval_sets.retain],
            },
        }


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
        return {k: v for k, v in metrics.items() if k not in ("margins", "target_losses")}

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
    job_id: int | None = None,
    model_roots_only: bool = False,
) -> Outcome:
    """Run ``plan`` as a recorded job (a new one, or ``job_id`` when resuming) and publish the adapter.
    With ``model_roots_only`` (the web app) the base model must be a folder under the configured
    model roots (:func:`~minetune.train.base.check_model_root`).

    Bad input fails before anything is recorded (including options the chosen engine does not
    support); a failure while training marks the job failed and raises :class:`TrainingError`;
    Ctrl-C (or ``cancel``) marks it cancelled, with a checkpoint kept for :func:`resume` when the
    engine saved one; ``plan.gate`` may refuse the adapter (status ``rejected``, reason in the
    job's error). Only a kept adapter changes the active version (when ``plan.activate``).
    """
    plan.config.check(plan.method)
    check_engine(plan.method, plan.config)
    if plan.gate is not None and plan.gate.problems():
        raise TrainingError("Invalid gate settings: " + "; ".join(plan.gate.problems()) + ".")
    if len(plan.train) < 1:
        raise TrainingError("There are no examples to train on.")
    if model_roots_only:
        check_model_root(settings, plan.base)
    try:
        base_dir = plan.base.directory()
    except ModelError as exc:
        raise TrainingError(f"The base model cannot be loaded: {exc}") from None
    if not (base_dir / "config.json").is_file():
        raise TrainingError(f"{base_dir} is not a transformers model folder (it has no config.json).")
    parent_dir = check_adapter_dir(plan.parent.path) if plan.parent is not None else None
    root = adapters_root(settings, plan.program, store.user_name)
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
    work = private_dirs(job_dir(settings, plan.program, store.user_name, job_id))
    resume = last_checkpoint(work / "checkpoints") is not None
    try:
        result = fit(
            base_dir,
            plan.method,
            plan.train,
            plan.config,
            work,
            parent_adapter=parent_dir,
            eval_sets=plan.eval_sets,
            ewc_examples=plan.ewc_anchor(),
            on_progress=on_progress,
            cancel=cancel,
            resume=resume,
        )
    except KeyboardInterrupt:
        _cancelled(store, job_id, work)
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
        return Outcome(_cancelled(store, job_id, work), "cancelled", fit=result)
    metrics = dict(previous.metrics or {}) | _summary(result)
    decision = plan.gate.decide(result.before, result.after) if plan.gate is not None else None
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
        private_tree(final)
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


def _cancelled(store: Store, job_id: int, work: Path) -> TrainingJob:
    """Mark the job cancelled; offer ``--resume`` only when a checkpoint was saved to resume from."""
    if last_checkpoint(work / "checkpoints") is not None:
        error = (
            f"Cancelled; the previous adapter stays active. Resume with `minetune train --resume {job_id}`."
        )
    else:
        shutil.rmtree(work, ignore_errors=True)
        error = (
            "Cancelled; the previous adapter stays active. No checkpoint was saved (the resident engine "
            "keeps none, and the trl engine saves one only when cancelled cleanly or every save_steps), "
            "so it cannot be resumed: start a new run with `minetune train`."
        )
    return jobs_db.update_job(store, job_id, status="cancelled", error=error, finished_at=datetime.now(UTC))


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
    gate: GateConfig | None = None,
    kind: str = "train",
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    model_roots_only: bool = False,
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
        raise too_few(method, available, minimum, threshold)
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
    if eval_sets is None:
        learned = {a for ex in chosen for a in ex.attempt_ids}
        learned |= set(parent.lineage_attempt_ids or []) if parent is not None else set()
        eval_sets = default_eval_sets(
            store, program, method, found.valid, threshold, config.seed, exclude=learned
        )
    plan = Plan(
        program=program,
        method=method,
        base=base_model,
        train=chosen,
        eval_sets=eval_sets,
        config=config,
        kind=kind,
        domain=parent.domain if parent is not None and domain == "general" else domain,
        parent=parent,
        activate=activate,
        selection=selection.to_dict(),
        threshold=threshold,
        gate=gate,
    )
    return run(
        store, settings, plan, on_progress=on_progress, cancel=cancel, model_roots_only=model_roots_only
    )


def resume(
    store: Store,
    settings: Settings,
    job_id: int,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Outcome:
    """Continue a cancelled (or failed) local job from its last checkpoint, as the same run: the
    same examples, held-out sets, EWC anchor and gate (an update is published and activated only
    if it passes the gate it was started with)."""
    job = jobs_db.get_job(store, job_id)
    program = jobs_db.job_program_name(store, job_id)
    if job.kind != "local":
        raise TrainingError(f"Job {job_id} is a hosted job; see `minetune finetune status {job_id}`.")
    if job.status not in ("cancelled", "failed", "running"):
        raise TrainingError(f"Job {job_id} is {job.status}; only cancelled or failed jobs can be resumed.")
    work = job_dir(settings, program, store.user_name, job_id)
    if last_checkpoint(work / "checkpoints") is None:
        raise TrainingError(
            f"Job {job_id} left no checkpoint to resume from; start a new run with `minetune train`."
        )
    hp = dict(job.hyperparameters or {})
    kind = str(hp.get("kind") or "train")
    if kind == "update" and not hp.get("gate"):
        raise TrainingError(
            f"Job {job_id} is an incremental update recorded without its gate settings, so it cannot be "
            "resumed through its gate; start a new update with `minetune train update`."
        )
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
    ewc_examples = lookup(hp.get("ewc") or [], job.method, "EWC")
    parent = adapters_db.get_adapter(store, hp["parent_adapter"]) if hp.get("parent_adapter") else None
    if parent is not None and parent.tainted_at is not None:
        raise TrainingError(
            f"Job {job_id} continues adapter {parent.id}, which learned from forgotten data; retrain it "
            "first (`minetune train --retrain-tainted`)."
        )
    replaces = adapters_db.get_adapter(store, hp["replaces_adapter"]) if hp.get("replaces_adapter") else None
    base = BaseModel(job.base_model, str(hp.get("base_backend") or "hf"), hp.get("base_url"))
    plan = Plan(
        program=program,
        method=job.method,
        base=base,
        train=train_examples,
        eval_sets=sets,
        config=config,
        kind=kind,
        domain=str(hp.get("domain") or "general"),
        parent=parent,
        replaces=replaces,
        activate=bool(hp.get("activate", True)),
        replayed=int(hp.get("replayed") or 0),
        ewc_examples=ewc_examples,
        selection=dict(hp.get("selection") or {}),
        threshold=threshold,
        gate=GateConfig.from_dict(hp["gate"]) if hp.get("gate") else None,
    )
    return run(store, settings, plan, on_progress=on_progress, cancel=cancel, job_id=job_id)


def _lookup_loose(by_key: dict[Any, Any], keys: list[list[int]], method: str) -> list[Any]:
    return [ex for key in keys if (ex := by_key.get((method, *key))) is not None]


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
