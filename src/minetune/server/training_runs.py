"""Training runs started from the web: background work, live progress in memory, one at a time.

A run wraps one library call — :func:`minetune.train.lora.train` for a local LoRA adapter or
:func:`minetune.train.hosted.start` for a hosted fine-tuning job — submitted to the server's
background pool. The request that starts it waits until the job is recorded (or the library
refused it: too few examples, no base model, ...), so errors come back at once as a 4xx.
Progress lives in memory (the job row holds the final loss curve); a hosted job's status is
fetched from the provider when its progress is asked for, at most once per poll interval.
Each user has at most one active run of each kind.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException

from minetune.errors import MinetuneError
from minetune.server.state import ServerState
from minetune.store import Store
from minetune.store import training as jobs_db

START_WAIT_S = 30.0  # how long a start request waits for the job to be recorded
KEEP_FINISHED = 20  # finished runs kept in memory per user
HOSTED_ACTIVE = frozenset({"uploading", "validating_files", "queued", "running"})
FINISHED = frozenset({"succeeded", "failed", "rejected", "cancelled"})


@dataclass
class TrainingRun:
    """One run's live state. ``status``: queued, running, succeeded, failed, rejected or cancelled."""

    id: str
    user: str
    program: str
    kind: str  # local | hosted
    method: str
    status: str = "queued"
    phase: str = "queued"
    step: int = 0
    total: int = 0
    loss: float | None = None
    job_id: int | None = None
    version: int | None = None
    error: str | None = None
    warning: str | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    last_poll: float = 0.0
    poll_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def active(self) -> bool:
        return self.status not in FINISHED

    def finish(self, status: str, *, error: str | None = None, version: int | None = None) -> None:
        self.status, self.phase = status, status
        self.error = error
        self.version = version if version is not None else self.version
        self.finished_at = time.time()
        self.ready.set()

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.id,
            "program": self.program,
            "kind": self.kind,
            "method": self.method,
            "status": self.status,
            "phase": self.phase,
            "step": self.step,
            "total": self.total,
            "loss": self.loss,
            "points": len(self.curve),
            "job": self.job_id,
            "version": self.version,
            "error": self.error,
            "warning": self.warning,
            "done": not self.active,
            "elapsed_s": round((self.finished_at or time.time()) - self.started_at, 1),
        }


class TrainingRuns:
    """Every run this server process started, by id."""

    def __init__(self) -> None:
        self._runs: dict[str, TrainingRun] = {}
        self._lock = threading.Lock()

    def begin(self, user: str, program: str, kind: str, method: str) -> TrainingRun:
        """Register a new run, or 409 when this user already has an active run of this kind."""
        with self._lock:
            for run in self._runs.values():
                if run.user == user and run.kind == kind and run.active:
                    job = f"job {run.job_id}" if run.job_id is not None else "starting"
                    raise HTTPException(
                        status_code=409,
                        detail=f"A {kind} training job is already running ({job}, program {run.program!r}); "
                        "wait for it to finish or cancel it first.",
                    )
            run = TrainingRun(secrets.token_hex(8), user, program, kind, method)
            self._runs[run.id] = run
            self._prune(user)
            return run

    def _prune(self, user: str) -> None:
        finished = sorted(
            (r for r in self._runs.values() if r.user == user and not r.active), key=lambda r: r.started_at
        )
        for run in finished[:-KEEP_FINISHED]:
            del self._runs[run.id]

    def discard(self, run: TrainingRun) -> None:
        with self._lock:
            self._runs.pop(run.id, None)

    def get(self, user: str, run_id: str) -> TrainingRun:
        """The run if it is this user's, else 404."""
        with self._lock:
            run = self._runs.get(run_id)
        if run is None or run.user != user:
            raise HTTPException(status_code=404, detail=f"No training run {run_id!r}.")
        return run

    def of(self, user: str, program: str | None = None) -> list[TrainingRun]:
        """This user's runs (optionally of one program), newest first."""
        with self._lock:
            runs = [r for r in self._runs.values() if r.user == user and program in (None, r.program)]
        return sorted(runs, key=lambda r: r.started_at, reverse=True)

    def cancel_local(self) -> None:
        """Ask every local run to stop after its current step (the server is shutting down)."""
        with self._lock:
            for run in self._runs.values():
                if run.kind == "local":
                    run.cancel.set()


_REGISTRY_LOCK = threading.Lock()


def registry(app_state: Any) -> TrainingRuns:
    """The app's run registry (created on first use)."""
    with _REGISTRY_LOCK:
        runs = getattr(app_state, "training_runs", None)
        if runs is None:
            runs = TrainingRuns()
            app_state.training_runs = runs
        return runs


def start(
    state: ServerState, run: TrainingRun, work: Callable[[TrainingRun], None], runs: TrainingRuns
) -> None:
    """Submit ``work`` and wait until it has recorded its job or failed; a failure before any job
    was recorded is a 400 with the library's message (and the run is forgotten)."""
    state.submit(_guarded, work, run)
    run.ready.wait(START_WAIT_S)
    if run.status == "failed" and run.job_id is None:
        runs.discard(run)
        raise HTTPException(status_code=400, detail=run.error or "Training could not start.")


def _guarded(work: Callable[[TrainingRun], None], run: TrainingRun) -> None:
    try:
        work(run)
    except MinetuneError as exc:
        run.finish("failed", error=str(exc))
    except Exception as exc:  # a background thread has nobody else to tell
        run.finish(
            "failed", error=f"Training failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        )


# -- local LoRA ----------------------------------------------------------------------------------


def newest_job_id(store: Store) -> int:
    jobs = jobs_db.list_jobs(store)
    return jobs[0][0].id if jobs else 0


def _job_started_after(store: Store, program: str, watermark: int) -> int | None:
    ids = [
        job.id
        for job, _ in jobs_db.list_jobs(store, program, kind="local")
        if job.id > watermark and job.status == "running"
    ]
    return min(ids) if ids else None


def local_work(state: ServerState, options: dict[str, Any]) -> Callable[[TrainingRun], None]:
    """The background call for a local LoRA run with ``options`` for :func:`lora.train`."""

    def work(run: TrainingRun) -> None:
        from minetune.train import lora

        store = state.store(run.user)
        watermark = newest_job_id(store)

        def on_progress(progress: lora.Progress) -> None:
            if run.job_id is None:
                run.job_id = _job_started_after(store, run.program, watermark)
            run.status, run.phase = "running", progress.phase
            run.step, run.total = progress.step, progress.total
            if progress.loss is not None:
                run.loss = progress.loss
                run.curve.append({"step": progress.step, "train_loss": progress.loss})
            run.ready.set()

        outcome = lora.train(
            store, state.settings, run.program, on_progress=on_progress, cancel=run.cancel, **options
        )
        run.job_id = outcome.job.id
        run.method = outcome.job.method
        error = None if outcome.status == "succeeded" else outcome.job.error
        run.finish(outcome.status, error=error, version=outcome.version)

    return work


# -- hosted fine-tuning ------------------------------------------------------------------------------


def hosted_work(state: ServerState, config: Any, options: dict[str, Any]) -> Callable[[TrainingRun], None]:
    """The background call that uploads the examples and creates a hosted job."""

    def work(run: TrainingRun) -> None:
        from minetune.train import hosted

        job = hosted.start(state.store(run.user), run.program, config=config, **options)
        assert job is not None  # no confirm callback: never declined
        run.job_id = job.id
        run.status, run.phase = "running", job.status
        run.last_poll = time.monotonic()
        run.ready.set()

    return work


def poll_hosted(state: ServerState, run: TrainingRun, config: Any) -> None:
    """Fetch a hosted job's status and events when the poll interval has passed (one at a time)."""
    if run.kind != "hosted" or not run.active or run.job_id is None:
        return
    if time.monotonic() - run.last_poll < config.poll_interval or not run.poll_lock.acquire(blocking=False):
        return
    try:
        from minetune.train import hosted

        def on_update(job: Any, events: list[dict[str, Any]]) -> None:
            for event in events:
                data = event.get("data")
                if event.get("type") == "metrics" and isinstance(data, dict) and "step" in data:
                    run.step = int(data["step"])
                    run.total = int(data.get("total_steps") or run.total)
                    loss = data.get("train_loss")
                    if isinstance(loss, int | float):
                        run.loss = float(loss)

        job = hosted.follow(
            state.store(run.user), run.job_id, config, on_update, max_polls=1, poll_interval=0
        )
        run.phase, run.warning = job.status, None
        run.curve = list(job.loss_curve)
        if job.done:
            run.finish(job.status, error=job.error, version=job.version)
    except MinetuneError as exc:
        run.warning = f"Could not check the job at the provider: {exc}"
    finally:
        run.last_poll = time.monotonic()
        run.poll_lock.release()
