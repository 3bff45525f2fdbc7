"""Heavy jobs on a real queue: procrastinate on the PostgreSQL database the store already uses.

With ``queue = "procrastinate"`` (config.toml, or ``MINETUNE_QUEUE``) a server or CLI that starts
a training run or a continual update records the job row as usual (status ``queued``, owner
``queue``) and defers one procrastinate task naming the row; a ``minetune worker`` process, on
this machine or another one (a GPU box) with the same ``database_url``, picks it up, claims the
row and runs the kind's handler (:data:`minetune.app.jobs.HANDLERS`) — the same code that runs in
process with the default local queue. Status, progress, cancel and results stay on the job row,
so every server shows them live. The task's arguments are two ids: no user text enters the queue.

A worker killed mid-job leaves its row ``running`` under a dead owner; the next worker (or server)
start marks it ``interrupted`` (:func:`minetune.app.jobs.recover`), nothing of it is published
(an adapter is published only when its run finishes), and :func:`retry` queues it again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from minetune.app import jobs
from minetune.config import Settings
from minetune.errors import MinetuneError
from minetune.store import Store
from minetune.store import jobs as jobs_db

log = logging.getLogger(__name__)

TASK_NAME = "minetune.run_job"
QUEUE_NAME = "minetune"
_apps: dict[str, Any] = {}
_apps_lock = threading.Lock()
_worker_settings: Settings | None = None  # the settings of `minetune worker` in this process


def _conninfo(database_url: str) -> str:
    """libpq's form of the store's SQLAlchemy URL (``postgresql+psycopg://`` → ``postgresql://``)."""
    from sqlalchemy.engine import make_url

    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def queue_app(settings: Settings) -> Any:
    """The procrastinate app on the settings' PostgreSQL database (its schema applied once)."""
    url = settings.resolved_database_url
    with _apps_lock:
        app = _apps.get(url)
        if app is None:
            import procrastinate

            conninfo = _conninfo(url)
            app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
            app.task(name=TASK_NAME, queue=QUEUE_NAME, pass_context=False)(_run_job)
            with app.open():
                _ensure_schema(app, conninfo)
            _apps[url] = app
        return app


def _ensure_schema(app: Any, conninfo: str) -> None:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        found = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
    if not (found and found[0]):
        app.schema_manager.apply_schema()


def enqueue(
    store: Store, settings: Settings, program: str, kind: str, payload: dict[str, Any]
) -> jobs.JobHandle:
    """Record a queued ``kind`` job for ``program`` and defer it to the workers."""
    app = queue_app(settings)
    record = jobs_db.create(store, program, kind, jobs_db.QUEUE_OWNER, payload)
    try:
        with app.open():
            app.tasks[TASK_NAME].defer(job_id=record.id, user=store.user_name)
    except Exception as exc:
        jobs_db.finish(store, record.id, "failed", error=f"Could not queue the job: {exc}")
        raise MinetuneError(
            f"Could not queue the job on PostgreSQL: {' '.join(str(exc).split())[:200]}"
        ) from exc
    handle = jobs.JobHandle(record.id, record.program, kind, store)
    handle.settled.set()  # queued for a worker: the caller need not wait here
    return handle


def retry(settings: Settings, job_id: int) -> jobs.JobHandle:
    """Queue an ``interrupted`` or ``failed`` job of a stored kind again, whichever user's it is, as
    a new job with the same payload (the old row stays as the record of what happened)."""
    if settings.queue != "procrastinate":
        raise MinetuneError(
            'Retrying queues the job for a worker: set queue = "procrastinate" (with PostgreSQL); '
            "without a queue, start the training again (`minetune train`)."
        )
    db_store = Store.open(settings)
    try:
        user = jobs_db.user_of(db_store.db, job_id)
    finally:
        db_store.close()
    store = Store.open(settings, user)
    try:
        record = jobs_db.get(store, job_id)
        if record.status not in ("interrupted", "failed"):
            raise MinetuneError(
                f"Job {job_id} is {record.status}; only interrupted or failed jobs are retried."
            )
        if record.kind not in jobs.HANDLERS:
            raise MinetuneError(f"Job {job_id} ({record.kind}) cannot be run again from its stored payload.")
        return jobs.submit_stored(store, settings, record.program, record.kind, dict(record.payload))
    finally:
        store.close()


def _run_job(job_id: int, user: str) -> None:
    """The procrastinate task: run job ``job_id`` of ``user`` with this worker's settings."""
    settings = _worker_settings
    if settings is None:
        raise MinetuneError("Queued jobs run in `minetune worker` processes.")
    store = Store.open(settings, user)
    try:
        jobs.run_stored(store, settings, job_id)
    finally:
        store.close()


def run_worker(settings: Settings, *, concurrency: int = 1, until_idle: bool = False) -> None:
    """Run queued jobs until stopped (Ctrl-C / SIGTERM), or with ``until_idle`` until none is left.
    Jobs that dead processes left running are marked ``interrupted`` first."""
    if settings.queue != "procrastinate":
        raise MinetuneError(
            'minetune worker runs jobs from the PostgreSQL queue: set queue = "procrastinate" and a '
            "PostgreSQL database_url in config.toml (or MINETUNE_QUEUE / MINETUNE_DATABASE_URL)."
        )
    store = Store.open(settings)  # migrates the store if this is the first process on it
    try:
        for record in jobs.recover(store.db):
            log.warning(
                "job %s (%s of %r) was interrupted; `minetune worker retry %s` queues it again",
                record.id,
                record.kind,
                record.program,
                record.id,
            )
    finally:
        store.close()
    global _worker_settings
    _worker_settings = settings
    app = queue_app(settings)
    app.run_worker(
        queues=[QUEUE_NAME], concurrency=concurrency, wait=not until_idle, install_signal_handlers=True
    )
