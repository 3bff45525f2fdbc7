"""Training runs on the web page: job rows of the job runner (:mod:`minetune.app.jobs`), so a run
started by the CLI or by another server process shows here with live progress, and a cancel
from here reaches it wherever it runs.

A run is one job: a local LoRA run (``train``, ``retrain`` or a ``continual`` update) or a hosted
fine-tuning job (``hosted``: upload, create, then poll the provider until it finishes). The
request that starts one waits until the job has begun (or was refused: too few examples, no
base model, ...), so refusals come back at once as a 4xx and leave no row behind. Each user has
at most one active run of each kind (local or hosted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException

from minetune.app import jobs
from minetune.config import Settings
from minetune.errors import NotFoundError
from minetune.store import Store
from minetune.store import jobs as jobs_db
from minetune.store.jobs import JobRecord

START_WAIT_S = 30.0  # how long a start request waits for the job to begin
LOCAL_KINDS = ("train", "retrain", "continual")
STARTED_BY_HAND = ("train", "retrain")  # one of these at a time per user (continual is automatic)


@dataclass(frozen=True)
class RunView:
    """What the page and ``/training/runs/{id}`` show of one job."""

    record: JobRecord

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def kind(self) -> str:
        return "hosted" if self.record.kind == "hosted" else "local"

    @property
    def method(self) -> str:
        return str(self.record.result.get("method") or self.record.payload.get("method") or "auto")

    @property
    def active(self) -> bool:
        return self.record.active

    @property
    def status(self) -> str:
        record = self.record
        if not record.active and record.result.get("status") == "rejected":
            return "rejected"  # the gate kept the old adapter
        return record.status

    @property
    def phase(self) -> str:
        if not self.active:
            return self.status
        if self.record.cancel_requested:
            return "cancelling"
        return str(self.record.progress.get("phase") or "queued")

    @property
    def curve(self) -> list[dict[str, Any]]:
        return [p for p in self.record.progress.get("curve") or [] if isinstance(p, dict)]

    def as_dict(self) -> dict[str, Any]:
        record, progress = self.record, self.record.progress
        ended = record.finished_at or jobs_db.utcnow()
        began = record.started_at or record.created_at
        return {
            "run": record.id,
            "program": record.program,
            "kind": self.kind,
            "job_kind": record.kind,
            "method": self.method,
            "status": self.status,
            "phase": self.phase,
            "step": int(progress.get("step") or 0),
            "total": int(progress.get("total") or 0),
            "loss": progress.get("loss"),
            "points": len(self.curve),
            "job": record.training_job_id,
            "version": record.result.get("version"),
            "error": record.error,
            "warning": progress.get("message"),
            "owner": record.owner,
            "done": not self.active,
            "elapsed_s": round(max(0.0, (_aware(ended) - _aware(began)).total_seconds()), 1),
        }


def _aware(value: Any) -> Any:
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _kinds(kind: str) -> tuple[str, ...]:
    return ("hosted",) if kind == "hosted" else LOCAL_KINDS


def runs(store: Store, program: str | None = None, limit: int = 20) -> list[RunView]:
    """This user's training runs (optionally of one program), newest first."""
    return [
        RunView(r) for r in jobs_db.list_jobs(store, program, kinds=("hosted", *LOCAL_KINDS), limit=limit)
    ]


def live(store: Store, program: str) -> RunView | None:
    """The program's active training run (from any process), if any: the running one first."""
    active = jobs_db.list_jobs(store, program, kinds=("hosted", *LOCAL_KINDS), statuses=jobs_db.ACTIVE)
    active.sort(key=lambda r: (r.status != "running", r.id))
    return RunView(active[0]) if active else None


def get(store: Store, run_id: str) -> RunView:
    """The run if it is this user's, else 404."""
    try:
        record = jobs_db.get(store, int(run_id))
    except (ValueError, NotFoundError):
        raise HTTPException(status_code=404, detail=f"No training run {run_id!r}.") from None
    if record.kind not in ("hosted", *LOCAL_KINDS):
        raise HTTPException(status_code=404, detail=f"No training run {run_id!r}.")
    return RunView(record)


def start(
    store: Store,
    settings: Settings,
    program: str,
    kind: str,
    work: jobs.Work | None,
    method: str,
    payload: dict[str, Any] | None = None,
) -> RunView:
    """Submit ``work`` as a ``kind`` job — or, without ``work``, the kind's stored handler on
    ``payload`` (run here or on a queue worker) — with a 409 while this user has an active run of
    its kind, and wait until it has begun, queued, or failed; a failure before it did anything is
    a 400 with the library's message, and its row is removed."""
    label = "hosted" if kind == "hosted" else "local"
    busy_kinds = ("hosted",) if kind == "hosted" else STARTED_BY_HAND
    busy = jobs_db.list_jobs(store, kinds=busy_kinds, statuses=jobs_db.ACTIVE, limit=1)
    if busy:
        other = busy[0]
        job = f"job {other.training_job_id}" if other.training_job_id is not None else "starting"
        raise HTTPException(
            status_code=409,
            detail=f"A {label} training job is already running ({job}, program {other.program!r}); "
            "wait for it to finish or cancel it first.",
        )
    handle: jobs.JobHandle | None
    if work is None:
        handle = jobs.submit_stored(store, settings, program, kind, {"method": method} | (payload or {}))
    else:
        handle = jobs.runner(settings).submit(store, program, kind, work, payload={"method": method})
    assert handle is not None
    handle.settled.wait(START_WAIT_S)
    record = handle.record()
    if record.status == "failed" and record.training_job_id is None and not record.progress:
        jobs_db.discard(store, record.id)
        raise HTTPException(status_code=400, detail=record.error or "Training could not start.")
    return RunView(record)


def cancel(store: Store, settings: Settings, run: RunView, hosted_config: Callable[[], Any]) -> RunView:
    """Cancel a run: a local one stops after its current step (wherever it runs); a hosted one is
    cancelled at the provider now and its job ends at once."""
    if not run.active:
        raise HTTPException(
            status_code=409, detail=f"The run has already {run.status}; there is nothing to cancel."
        )
    jobs.runner(settings).cancel(store, run.id)
    training_job = run.record.training_job_id
    if run.kind == "hosted" and training_job is not None:
        from minetune.train import hosted

        job = hosted.cancel(store, training_job, hosted_config())
        if job.done:
            jobs_db.finish(
                store, run.id, "cancelled" if job.status == "cancelled" else "failed", error=job.error
            )
    return RunView(jobs_db.get(store, run.id))


# -- local LoRA ----------------------------------------------------------------------------------


# -- hosted fine-tuning ------------------------------------------------------------------------------
