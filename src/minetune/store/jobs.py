"""Job rows: data access for the job runner (:mod:`minetune.app.jobs`), no policy.

Every function but :func:`mark_interrupted` and :func:`beat` is scoped to the store's user and is
one transaction. The database enforces "at most one running job per (program, lane)" (a partial
unique index), so :func:`claim` is an UPDATE that simply fails while another process holds the
program; that works the same from any number of processes on SQLite or PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from minetune.errors import NotFoundError, StoreError
from minetune.store.db import Database
from minetune.store.repo import Store
from minetune.store.schema import JOB_KINDS, Job, Program, TrainingJob, User, utcnow

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")
# Kinds that must never run at the same time for one program share a lane.
# The owner of a job waiting on the PostgreSQL queue for a `minetune worker` (no process holds it yet,
# so no heartbeat is expected until a worker claims it).
QUEUE_OWNER = "queue"
LANES = {
    "learn": "learn",
    "continual": "train",
    "train": "train",
    "retrain": "train",
    "hosted": "hosted",
    "eval": "eval",  # minetune eval only reads the store and calls models: it blocks nothing else
}
INTERRUPTED = "The process running this job stopped before it finished."


@dataclass(frozen=True)
class JobRecord:
    """A job row as plain data (``program`` is the program's name)."""

    id: int
    program: str
    kind: str
    lane: str
    status: str
    progress: dict[str, Any]
    cancel_requested: bool
    owner: str
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    result: dict[str, Any]
    payload: dict[str, Any]
    training_job_id: int | None
    user: str = ""

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


def _record(job: Job, program: str, user: str = "") -> JobRecord:
    return JobRecord(
        id=job.id,
        program=program,
        kind=job.kind,
        lane=job.lane,
        status=job.status,
        progress=dict(job.progress or {}),
        cancel_requested=bool(job.cancel_requested),
        owner=job.owner,
        heartbeat_at=job.heartbeat_at,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job.error,
        result=dict(job.result or {}),
        payload=dict(job.payload or {}),
        training_job_id=job.training_job_id,
        user=user,
    )


def _owned_query(store: Store) -> Any:
    return (
        select(Job, Program.name)
        .join(Program, Program.id == Job.program_id)
        .where(Program.user_id == store.user_id)
    )


def create(
    store: Store, program: str, kind: str, owner: str, payload: dict[str, Any] | None = None
) -> JobRecord:
    """A new ``queued`` job of ``kind`` for ``program``, owned by ``owner`` (``host:pid``)."""
    if kind not in JOB_KINDS:
        raise StoreError(f"Unknown job kind {kind!r}; one of: {', '.join(JOB_KINDS)}.")
    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        job = Job(
            program_id=prog.id,
            kind=kind,
            lane=LANES[kind],
            status="queued",
            progress={},
            owner=owner,
            heartbeat_at=utcnow(),
            result={},
            payload=dict(payload or {}),
        )
        s.add(job)
        s.flush()
        return _record(job, prog.name, store.user_name)


def user_of(db: Database, job_id: int) -> str:
    """The name of the user whose program job ``job_id`` belongs to (for operators: the CLI's
    `minetune worker retry` and queue workers act on any user's job)."""
    with db.transaction() as s:
        name = s.execute(
            select(User.name)
            .join(Program, Program.user_id == User.id)
            .join(Job, Job.program_id == Program.id)
            .where(Job.id == job_id)
        ).scalar_one_or_none()
    if name is None:
        raise NotFoundError(f"No job {job_id}.")
    return str(name)


def get(store: Store, job_id: int) -> JobRecord:
    """The job if it is one of this user's, else NotFoundError."""
    with store.db.transaction() as s:
        row = s.execute(_owned_query(store).where(Job.id == job_id)).first()
        if row is None:
            raise NotFoundError(f"No job {job_id}.")
        return _record(row[0], row[1], store.user_name)


def list_jobs(
    store: Store,
    program: str | None = None,
    *,
    kinds: Iterable[str] | None = None,
    statuses: Iterable[str] | None = None,
    limit: int = 50,
) -> list[JobRecord]:
    """This user's jobs (optionally of one program, some kinds, some statuses), newest first."""
    query = _owned_query(store)
    if program is not None:
        query = query.where(Program.name == program)
    if kinds is not None:
        query = query.where(Job.kind.in_(list(kinds)))
    if statuses is not None:
        query = query.where(Job.status.in_(list(statuses)))
    with store.db.transaction() as s:
        rows = s.execute(query.order_by(Job.id.desc()).limit(limit)).all()
        return [_record(job, name, store.user_name) for job, name in rows]


def claim(store: Store, job_id: int, owner: str) -> bool:
    """Move a queued job to ``running`` for ``owner``; False while another job of its program and
    lane runs (the unique index refuses it) or when the job is no longer queued.

    ``started_at`` is taken after the row is claimed, so it is later than the moment the job it
    waited for was finished (on PostgreSQL the UPDATE waits for that transaction to commit)."""
    try:
        with store.db.transaction() as s:
            changed = _rows(
                s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(False))
                    .values(status="running", owner=owner, heartbeat_at=utcnow())
                )
            )
            if changed:
                s.execute(update(Job).where(Job.id == job_id).values(started_at=utcnow()))
            return bool(changed)
    except IntegrityError:
        return False


def beat(db: Database, job_ids: Sequence[int], owner: str) -> set[int]:
    """Refresh the heartbeat of ``owner``'s active jobs among ``job_ids``; the ids whose cancel was
    requested (or that are no longer active: someone else finished them) are returned."""
    if not job_ids:
        return set()
    with db.transaction() as s:
        s.execute(
            update(Job)
            .where(Job.id.in_(list(job_ids)), Job.owner == owner, Job.status.in_(ACTIVE))
            .values(heartbeat_at=utcnow())
        )
        rows = s.execute(select(Job.id, Job.status, Job.cancel_requested).where(Job.id.in_(list(job_ids))))
        return {id_ for id_, status, cancel in rows if cancel or status not in ACTIVE}


def set_progress(
    store: Store, job_id: int, progress: dict[str, Any], *, training_job_id: int | None = None
) -> None:
    """Replace the job's progress (and link the training job it recorded, when given)."""
    values: dict[str, Any] = {"progress": dict(progress)}
    if training_job_id is not None:
        values["training_job_id"] = training_job_id
    with store.db.transaction() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def request_cancel(store: Store, job_id: int) -> JobRecord:
    """Ask a job to stop: a queued one is cancelled at once, a running one is flagged (its owner
    sees the flag at its next heartbeat or check). Finished jobs are left as they are."""
    job = get(store, job_id)
    with store.db.transaction() as s:
        s.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == "queued")
            .values(status="cancelled", cancel_requested=True, finished_at=utcnow())
        )
        s.execute(update(Job).where(Job.id == job.id, Job.status == "running").values(cancel_requested=True))
    return get(store, job_id)


def is_cancel_requested(store: Store, job_id: int) -> bool:
    """Whether someone asked the job to stop (or it was already finished by someone else)."""
    with store.db.transaction() as s:
        row = s.execute(select(Job.status, Job.cancel_requested).where(Job.id == job_id)).first()
        return row is None or bool(row[1]) or row[0] not in ACTIVE


def finish(
    store: Store,
    job_id: int,
    status: str,
    *,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
) -> bool:
    """Record a job's end (``status`` one of :data:`FINISHED`); False if it had already ended."""
    if status not in FINISHED:
        raise StoreError(f"{status!r} is not a finished job status.")
    values: dict[str, Any] = {"status": status, "error": error, "finished_at": utcnow()}
    if result is not None:
        values["result"] = result
    if progress is not None:
        values["progress"] = progress
    with store.db.transaction() as s:
        changed = _rows(
            s.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE)).values(**values))
        )
        return bool(changed)


def discard(store: Store, job_id: int) -> None:
    """Delete a finished job row (a start that was refused before it did anything)."""
    job = get(store, job_id)
    if job.active:
        raise StoreError(f"Job {job_id} is {job.status}; only finished jobs can be discarded.")
    with store.db.transaction() as s:
        s.execute(delete(Job).where(Job.id == job.id))


def prune(store: Store, program: str, kind: str, keep: int) -> int:
    """Delete all but the newest ``keep`` finished jobs of ``kind`` for ``program``; how many."""
    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        ids = s.scalars(
            select(Job.id)
            .where(Job.program_id == prog.id, Job.kind == kind, Job.status.in_(FINISHED))
            .order_by(Job.id.desc())
            .offset(keep)
        ).all()
        if ids:
            s.execute(delete(Job).where(Job.id.in_(ids)))
        return len(ids)


def mark_interrupted(
    db: Database, *, dead_owner: Callable[[str], bool], stale_before: datetime | None
) -> list[JobRecord]:
    """Across every user: mark active jobs ``interrupted`` whose owner is dead (``dead_owner``) or
    whose heartbeat is older than ``stale_before``; a local training run they left ``running`` is
    marked failed (it can be resumed). The jobs marked are returned."""
    marked: list[JobRecord] = []
    with db.transaction() as s:
        rows = s.execute(
            select(Job, Program.name, User.name)
            .join(Program, Program.id == Job.program_id)
            .join(User, User.id == Program.user_id)
            .where(Job.status.in_(ACTIVE))
        ).all()
        now = utcnow()
        for job, program, user in rows:
            if job.status == "queued" and job.owner == QUEUE_OWNER:
                continue  # waiting for a worker, not abandoned
            beat_at = _aware(job.heartbeat_at)
            stale = stale_before is not None and (beat_at is None or beat_at < stale_before)
            if not (stale or dead_owner(job.owner)):
                continue
            changed = _rows(
                s.execute(
                    update(Job)
                    .where(Job.id == job.id, Job.status == job.status)
                    .values(status="interrupted", error=INTERRUPTED, finished_at=now)
                )
            )
            if not changed:
                continue
            if job.training_job_id is not None:
                s.execute(
                    update(TrainingJob)
                    .where(
                        TrainingJob.id == job.training_job_id,
                        TrainingJob.kind == "local",
                        TrainingJob.status == "running",
                    )
                    .values(status="failed", error=f"Interrupted: {INTERRUPTED}", finished_at=now)
                )
            s.flush()
            s.refresh(job)
            marked.append(_record(job, program, user))
    return marked


def _rows(result: Any) -> int:
    """How many rows an UPDATE changed."""
    return int(result.rowcount)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (stored as UTC); PostgreSQL aware ones."""
    if value is None or value.tzinfo is not None:
        return value
    from datetime import UTC

    return value.replace(tzinfo=UTC)


def stale_cutoff(seconds: float) -> datetime:
    """The heartbeat time before which an active job counts as abandoned."""
    return utcnow() - timedelta(seconds=seconds)
