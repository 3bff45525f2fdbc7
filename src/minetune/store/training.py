"""Store helpers for weight-level learning: reading rated turns for datasets, and training jobs.

These are plain repository functions over a :class:`~minetune.store.repo.Store` (scoped to its
user, one transaction each, committed on return). They return rows and plain records; deciding
what counts as an accepted answer or a preference pair is the job of :mod:`minetune.train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from minetune.errors import NotFoundError, StoreError
from minetune.store.repo import _VERSION_FIELDS, Store, new_version
from minetune.store.schema import (
    COMPLETE,
    Attempt,
    Conversation,
    Program,
    ProgramVersion,
    TrainingJob,
    Turn,
)

JOB_KINDS = ("local", "hosted")
JOB_METHODS = ("sft", "dpo", "kto")


@dataclass(frozen=True)
class FeedbackRecord:
    """One feedback event on an attempt, in time order."""

    id: int
    kind: str
    stars: int | None
    critique: str | None


@dataclass(frozen=True)
class AttemptRecord:
    """An attempt with exactly what was sent, what came back, and every feedback event on it."""

    id: int
    number: int
    messages: list[dict[str, Any]]
    response: str
    model_spec: str
    version_id: int | None
    feedback: tuple[FeedbackRecord, ...]
    status: str = COMPLETE  # only complete attempts are answers (see schema.ATTEMPT_STATUSES)

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE


@dataclass(frozen=True)
class TurnRecord:
    """A user message and every attempt at answering it (ordered by attempt number)."""

    id: int
    conversation_id: int
    index: int
    user_message: str
    attempts: tuple[AttemptRecord, ...]


def rated_turns(store: Store, program: str) -> list[TurnRecord]:
    """Every turn of ``program`` that has at least one feedback event, with all its attempts
    (each with its status: datasets use only complete ones, and unfinished ones are never rated);
    turns the user excluded (dataset page) are left out.

    Turns come in conversation then turn order; attempts in number order; feedback in id order.
    """
    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        has_feedback = (
            select(Attempt.turn_id)
            .join(Attempt.feedback)
            .join(Turn, Turn.id == Attempt.turn_id)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .where(Conversation.program_id == prog.id)
            .distinct()
        )
        turns = s.scalars(
            select(Turn)
            .options(selectinload(Turn.attempts).selectinload(Attempt.feedback))
            .where(Turn.id.in_(has_feedback), Turn.excluded.is_(False))
            .order_by(Turn.conversation_id, Turn.index)
        ).all()
        return [
            TurnRecord(
                id=t.id,
                conversation_id=t.conversation_id,
                index=t.index,
                user_message=t.user_message,
                attempts=tuple(
                    AttemptRecord(
                        id=a.id,
                        number=a.number,
                        messages=list(a.messages or []),
                        response=a.response,
                        model_spec=a.model_spec,
                        version_id=a.version_id,
                        feedback=tuple(
                            FeedbackRecord(f.id, f.kind, f.stars, f.critique)
                            for f in sorted(a.feedback, key=lambda f: f.id)
                        ),
                        status=a.status,
                    )
                    for a in sorted(t.attempts, key=lambda a: a.number)
                ),
            )
            for t in turns
        ]


# -- training jobs -------------------------------------------------------------------------------


def _job(store: Store, s: Any, job_id: int, *, for_update: bool = False) -> TrainingJob:
    query = (
        select(TrainingJob)
        .join(Program, Program.id == TrainingJob.program_id)
        .where(TrainingJob.id == job_id, Program.user_id == store.user_id)
    )
    if for_update:
        query = query.with_for_update(of=TrainingJob)
    job = s.scalar(query)
    if job is None:
        raise NotFoundError(f"No training job with id {job_id}. See `minetune finetune list`.")
    return job


def create_job(
    store: Store, program: str, *, kind: str, method: str, base_model: str, **fields: Any
) -> TrainingJob:
    """Record a new training job of ``program``; ``fields`` are other TrainingJob columns."""
    if kind not in JOB_KINDS:
        raise StoreError(f"Unknown job kind {kind!r}; expected one of {', '.join(JOB_KINDS)}.")
    if method not in JOB_METHODS:
        raise StoreError(f"Unknown training method {method!r}; expected one of {', '.join(JOB_METHODS)}.")
    with store.db.transaction() as s:
        job = TrainingJob(
            program_id=store.program_row(s, program).id,
            kind=kind,
            method=method,
            base_model=base_model,
            **fields,
        )
        s.add(job)
        s.flush()
        return job


def update_job(store: Store, job_id: int, **fields: Any) -> TrainingJob:
    """Change columns of a job; dict columns given as ``metrics=...`` replace the stored value."""
    with store.db.transaction() as s:
        job = _job(store, s, job_id)
        for name, value in fields.items():
            if not hasattr(TrainingJob, name) or name in ("id", "program_id"):
                raise StoreError(f"Training jobs have no settable field {name!r}.")
            setattr(job, name, value)
        s.flush()
        return job


def get_job(store: Store, job_id: int) -> TrainingJob:
    with store.db.transaction() as s:
        return _job(store, s, job_id)


def job_by_provider_id(store: Store, provider_job_id: str) -> TrainingJob:
    """The job a provider knows as ``provider_job_id`` (e.g. ``ftjob-...``)."""
    with store.db.transaction() as s:
        job = s.scalar(
            select(TrainingJob)
            .join(Program, Program.id == TrainingJob.program_id)
            .where(TrainingJob.provider_job_id == provider_job_id, Program.user_id == store.user_id)
            .order_by(TrainingJob.id.desc())
        )
        if job is None:
            raise NotFoundError(f"No training job with provider id {provider_job_id!r} in this store.")
        return job


def list_jobs(
    store: Store, program: str | None = None, kind: str | None = None
) -> list[tuple[TrainingJob, str]]:
    """(job, program name) for this user's jobs, newest first, optionally of one program/kind."""
    with store.db.transaction() as s:
        query = (
            select(TrainingJob, Program.name)
            .join(Program, Program.id == TrainingJob.program_id)
            .where(Program.user_id == store.user_id)
            .order_by(TrainingJob.id.desc())
        )
        if program is not None:
            query = query.where(TrainingJob.program_id == store.program_row(s, program).id)
        if kind is not None:
            query = query.where(TrainingJob.kind == kind)
        return [(job, name) for job, name in s.execute(query)]


def job_program_name(store: Store, job_id: int) -> str:
    with store.db.transaction() as s:
        job = _job(store, s, job_id)
        name = s.scalar(select(Program.name).where(Program.id == job.program_id))
        assert name is not None
        return name


def complete_job(
    store: Store,
    job_id: int,
    *,
    result_model: str,
    note: str,
    activate: bool,
    version_changes: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> tuple[TrainingJob, ProgramVersion | None]:
    """Mark a job succeeded and publish its result as a new program version, exactly once.

    In one transaction (the job row locked where the database supports it): when the job has
    already published a version (``metrics["version"]``) nothing is added and (job, None) is
    returned; otherwise a version copied from the active one with ``version_changes`` applied is
    added, activated when ``activate``, and its number stored in the job's metrics.
    """
    unknown = set(version_changes) - set(_VERSION_FIELDS)
    if unknown:
        raise StoreError(f"Unknown version fields: {', '.join(sorted(unknown))}")
    with store.db.transaction() as s:
        job = _job(store, s, job_id, for_update=True)
        merged = dict(job.metrics or {}) | (metrics or {})
        if "version" in (job.metrics or {}):
            job.metrics = merged
            job.result_model = result_model
            job.status = "succeeded"
            return job, None
        prog = s.get(Program, job.program_id)
        assert prog is not None
        version = new_version(s, prog, note, activate, **version_changes)
        job.status = "succeeded"
        job.result_model = result_model
        job.metrics = merged | {"version": version.number, "activated": activate}
        job.finished_at = job.finished_at or datetime.now(UTC)
        s.flush()
        return job, version
