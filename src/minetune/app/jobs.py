"""One job runner for everything that runs in the background: learning after feedback, continual
adapter updates, local training and hosted-job polling.

Every job is a row in the store (:mod:`minetune.store.jobs`), so its status, progress and result
are visible to every process sharing the database — a ``minetune train`` in a terminal shows live
on the web training page. Jobs are serialised per (user, program) and lane by the database itself:
claiming a job is an UPDATE that a partial unique index refuses while another job of the program
runs, in this process or any other (two ``minetune serve`` processes on one PostgreSQL included);
a refused job waits in the queue and tries again. A running job's owner (``host:pid``) refreshes
its heartbeat; :func:`recover` (at ``minetune serve`` start-up and before CLI commands that start
jobs) marks jobs whose owner died ``interrupted``. Cancelling sets a flag on the row, so a cancel
from any process reaches the work through :meth:`JobContext.cancelled` and :attr:`JobContext.cancel`.

This module runs work on threads of the process that submitted it (:class:`JobRunner`). Kinds
whose work can be rebuilt from the stored ``payload`` alone (training, continual updates, hosted
fine-tuning) have a
:data:`HANDLERS` entry; :func:`submit_stored` runs those here or, with ``queue = "procrastinate"``,
hands them to ``minetune worker`` processes through :mod:`minetune.app.queue`, which claim the
same rows and call the same handler.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from minetune.config import Settings
from minetune.errors import MinetuneError
from minetune.store import Store
from minetune.store import jobs as jobs_db
from minetune.store.db import Database
from minetune.store.jobs import JobRecord

if TYPE_CHECKING:
    from minetune.train.continual import ContinualConfig, UpdateReport

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0  # how often a process refreshes its jobs' heartbeats and reads cancel flags
STALE_S = 120.0  # a job whose heartbeat is older than this is taken for abandoned
CLAIM_POLL_S = 0.25  # how often a queued job tries to claim its program again
PROGRESS_EVERY_S = 0.5  # progress is written at most this often (a phase change at once)
MAX_CURVE_POINTS = 2000
KEEP_LEARN_JOBS = 100  # finished learning jobs kept per program (one per feedback event)

Work = Callable[["JobContext"], Any]


def this_host() -> str:
    return socket.gethostname()


def this_owner() -> str:
    """``host:pid`` of this process (read each time, so a forked child is itself)."""
    return f"{this_host()}:{os.getpid()}"


def owner_is_dead(owner: str) -> bool:
    """Whether ``owner`` is a process on this host that no longer exists. Owners on other hosts
    cannot be checked from here (their heartbeat tells), and this process is never dead."""
    host, _, pid_text = owner.rpartition(":")
    if host != this_host() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another OS user
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed child its parent has not reaped yet still 'exists' for kill(0)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class Cancelled(Exception):
    """Raised by work (or :meth:`JobContext.check_cancelled`) to end its job as cancelled."""


class JobEnded(Exception):
    """Raised by work to end its job with ``status`` (``failed`` or ``cancelled``) and a result."""

    def __init__(self, status: str, error: str | None = None, result: dict[str, Any] | None = None):
        super().__init__(error or status)
        self.status, self.error, self.result = status, error, result


@dataclass
class JobContext:
    """What work gets: its job id and store, progress reporting, and cancellation.

    ``cancel`` is set when the job's row is flagged for cancel (from any process), at the next
    heartbeat; :meth:`cancelled` reads the row itself. ``result`` is stored on the row when the
    work ends (a returned dict is merged in)."""

    job_id: int
    program: str
    kind: str
    store: Store
    payload: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] = field(default_factory=dict)
    _progress: dict[str, Any] = field(default_factory=dict)
    _written_at: float = 0.0
    _dirty: bool = False
    _training_job_id: int | None = None
    _end: tuple[str, str | None] | None = None
    _on_progress: Callable[[], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ended_as(self, status: str, error: str | None = None) -> None:
        """End the job as ``status`` (``cancelled`` or ``failed``) when the work returns normally
        (e.g. a training run that stopped on cancel returns an Outcome instead of raising)."""
        self._end = (status, error)

    def progress(
        self,
        *,
        phase: str | None = None,
        step: int | None = None,
        total: int | None = None,
        loss: float | None = None,
        message: str | None = None,
        point: dict[str, Any] | None = None,
        curve: list[dict[str, Any]] | None = None,
        force: bool = False,
    ) -> None:
        """Report progress; it is written to the row at most every :data:`PROGRESS_EVERY_S`
        (at once on a new phase or with ``force``), and always before the job ends."""
        with self._lock:
            changed_phase = phase is not None and phase != self._progress.get("phase")
            for key, value in (
                ("phase", phase),
                ("step", step),
                ("total", total),
                ("loss", loss),
                ("message", message),
            ):
                if value is not None:
                    self._progress[key] = value
            if curve is not None:
                self._progress["curve"] = list(curve)[-MAX_CURVE_POINTS:]
            if point is not None:
                points = self._progress.setdefault("curve", [])
                points.append(point)
                del points[:-MAX_CURVE_POINTS]
            self._dirty = True
            notify = self._on_progress
            due = force or changed_phase or time.monotonic() - self._written_at >= PROGRESS_EVERY_S
        if due:
            self.flush()
        if notify is not None:
            notify()

    def link_training_job(self, training_job_id: int) -> None:
        """Record the ``training_jobs`` row this job created (written with the next progress)."""
        with self._lock:
            if self._training_job_id != training_job_id:
                self._training_job_id = training_job_id
                self._dirty = True
        self.flush()

    @property
    def training_job_id(self) -> int | None:
        return self._training_job_id

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {k: (list(v) if isinstance(v, list) else v) for k, v in self._progress.items()}

    def flush(self) -> None:
        """Write pending progress to the row now."""
        with self._lock:
            if not self._dirty:
                return
            progress = {k: (list(v) if isinstance(v, list) else v) for k, v in self._progress.items()}
            training_job_id = self._training_job_id
            self._dirty = False
            self._written_at = time.monotonic()
        try:
            jobs_db.set_progress(self.store, self.job_id, progress, training_job_id=training_job_id)
        except Exception:  # progress is best effort; the job's end is recorded regardless
            log.warning("Could not record progress of job %s", self.job_id, exc_info=True)

    def cancelled(self) -> bool:
        """Whether this job was asked to stop (reads the row: a cancel from any process counts)."""
        if not self.cancel.is_set() and jobs_db.is_cancel_requested(self.store, self.job_id):
            self.cancel.set()
        return self.cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` when the job was asked to stop."""
        if self.cancelled():
            raise Cancelled()


@dataclass
class JobHandle:
    """This process's view of a job it submitted: events for claimed/settled/done and, once done,
    the work's Python return value or the exception that ended it."""

    id: int
    program: str
    kind: str
    store: Store
    claimed: threading.Event = field(default_factory=threading.Event)
    # Set once the job has reported progress, found its program busy, or ended: a caller that
    # waits for "started or refused" (the web's start request) waits on this.
    settled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None
    context: JobContext | None = None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job has ended; whether it did."""
        return self.done.wait(timeout)

    def record(self) -> JobRecord:
        """The job's row now."""
        return jobs_db.get(self.store, self.id)


@dataclass
class _Queued:
    handle: JobHandle
    work: Work
    payload: dict[str, Any]
    raise_errors: bool = False


class JobRunner:
    """Runs jobs on background threads of this process (or inline), one per program and lane at
    a time across every process sharing the database."""

    def __init__(
        self,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        stale_s: float = STALE_S,
        claim_poll_s: float = CLAIM_POLL_S,
        owner: str | None = None,
    ) -> None:
        self.heartbeat_s, self.stale_s, self.claim_poll_s = heartbeat_s, stale_s, claim_poll_s
        self._owner = owner
        self._lock = threading.Lock()
        self._queues: dict[tuple[int, int, str, str], deque[_Queued]] = {}
        self._workers: dict[tuple[int, int, str, str], threading.Thread] = {}
        self._active: dict[int, JobHandle] = {}  # job id -> handle, queued or running here
        self._handles: dict[int, JobHandle] = {}  # every job this runner ran (newest kept)
        self._beater: threading.Thread | None = None

    @property
    def owner(self) -> str:
        return self._owner or this_owner()

    # -- submitting ------------------------------------------------------------------------------

    def submit(
        self,
        store: Store,
        program: str,
        kind: str,
        work: Work,
        *,
        payload: dict[str, Any] | None = None,
        inline: bool = False,
        coalesce: bool = False,
    ) -> JobHandle | None:
        """Record a queued job of ``kind`` for ``program`` and run ``work(ctx)`` once it holds the
        program: on a background thread, or in this thread with ``inline`` (the CLI: waits for the
        program, then raises what the work raised, after recording it).

        With ``coalesce``, nothing is submitted (None) while a job of this kind and program is
        still queued: that one will do the same work."""
        if coalesce and jobs_db.list_jobs(store, program, kinds=[kind], statuses=["queued"], limit=1):
            return None
        record = jobs_db.create(store, program, kind, self.owner, payload)
        handle = JobHandle(record.id, record.program, kind, store)
        item = _Queued(handle, work, dict(payload or {}), raise_errors=inline)
        with self._lock:
            self._active[record.id] = handle
            self._remember(handle)
        self._ensure_beater()
        if inline:
            self._run(item)
            return handle
        key = (id(store.db), store.user_id, record.program, record.lane)
        with self._lock:
            self._queues.setdefault(key, deque()).append(item)
            worker = self._workers.get(key)
            if worker is not None and worker.is_alive():
                handle.settled.set()  # queued behind this process's job of the program
            else:
                worker = threading.Thread(
                    target=self._drain, args=(key,), name=f"minetune-job-{record.program}", daemon=True
                )
                self._workers[key] = worker
                worker.start()
        return handle

    def run_queued(self, store: Store, record: JobRecord, work: Work) -> JobHandle:
        """Run the already recorded queued job ``record`` in this thread (a queue worker's task)."""
        handle = JobHandle(record.id, record.program, record.kind, store)
        with self._lock:
            self._active[record.id] = handle
            self._remember(handle)
        self._ensure_beater()
        self._run(_Queued(handle, work, dict(record.payload or {})))
        return handle

    def _remember(self, handle: JobHandle) -> None:
        self._handles[handle.id] = handle
        if len(self._handles) > 1000:
            for old in sorted(self._handles)[:-500]:
                if old not in self._active:
                    del self._handles[old]

    def _drain(self, key: tuple[int, int, str, str]) -> None:
        while True:
            with self._lock:
                queue = self._queues.get(key)
                if not queue:
                    self._queues.pop(key, None)
                    self._workers.pop(key, None)
                    return
                item = queue.popleft()
            try:
                self._run(item)
            except BaseException:  # _run records everything; a worker thread must keep draining
                log.exception("Job %s ended abnormally", item.handle.id)

    # -- running ---------------------------------------------------------------------------------

    def _claim(self, item: _Queued) -> bool:
        """Wait until the job holds its program; False when it was cancelled (or ended) meanwhile."""
        handle, store = item.handle, item.handle.store
        while True:
            if jobs_db.claim(store, handle.id, self.owner):
                handle.claimed.set()
                return True
            record = jobs_db.get(store, handle.id)
            if record.status != "queued":
                return False
            if record.cancel_requested:
                jobs_db.finish(store, handle.id, "cancelled")
                return False
            handle.settled.set()  # behind another job of this program: the caller need not wait
            time.sleep(self.claim_poll_s)

    def _run(self, item: _Queued) -> None:
        handle, store = item.handle, item.handle.store
        ctx = JobContext(handle.id, handle.program, handle.kind, store, item.payload)
        ctx._on_progress = handle.settled.set
        handle.context = ctx
        status, error, value = "succeeded", None, None
        raised: BaseException | None = None
        try:
            if not self._claim(item):
                handle.error = Cancelled()
                return
            value = item.work(ctx)
            if isinstance(value, dict):
                ctx.result.update(value)
            if ctx._end is not None:
                status, error = ctx._end
        except Cancelled:
            status = "cancelled"
        except JobEnded as exc:
            status, error = exc.status, exc.error
            if exc.result:
                ctx.result.update(exc.result)
        except MinetuneError as exc:
            status, error, raised = "failed", str(exc), exc
        except Exception as exc:
            log.exception("Job %s (%s of %r) failed", handle.id, handle.kind, handle.program)
            status, error, raised = "failed", f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}", exc
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: the process is going away
            status, error, raised = "interrupted", f"Stopped: {type(exc).__name__}", exc
        finally:
            if handle.claimed.is_set():
                ctx.flush()
                try:
                    jobs_db.finish(
                        store,
                        handle.id,
                        status,
                        error=error,
                        result=_jsonable(ctx.result),
                        progress=ctx.snapshot(),
                    )
                except Exception:
                    log.exception("Could not record the end of job %s", handle.id)
                if handle.kind == "learn":
                    _prune_quietly(store, handle.program)
            handle.value, handle.error = value, raised
            with self._lock:
                self._active.pop(handle.id, None)
            handle.settled.set()
            handle.done.set()
        if raised is not None and item.raise_errors:
            raise raised  # inline (the CLI): the caller reports it; the row has it too

    # -- heartbeats --------------------------------------------------------------------------------

    def _ensure_beater(self) -> None:
        with self._lock:
            if self._beater is not None and self._beater.is_alive():
                return
            self._beater = threading.Thread(target=self._beat_loop, name="minetune-heartbeat", daemon=True)
            self._beater.start()

    def _beat_loop(self) -> None:
        swept = time.monotonic()
        while True:
            time.sleep(self.heartbeat_s)
            with self._lock:
                active = list(self._active.values())
                if not active:
                    self._beater = None
                    return
            by_db: dict[int, tuple[Database, list[JobHandle]]] = {}
            for handle in active:
                by_db.setdefault(id(handle.store.db), (handle.store.db, []))[1].append(handle)
            sweep = time.monotonic() - swept >= self.stale_s / 2
            for db, handles in by_db.values():
                try:
                    flagged = jobs_db.beat(db, [h.id for h in handles], self.owner)
                    for handle in handles:
                        ctx = handle.context
                        if ctx is None:
                            continue
                        if handle.id in flagged and handle.claimed.is_set():
                            ctx.cancel.set()
                        ctx.flush()
                    if sweep:
                        self.recover(db)
                except Exception:
                    log.warning("Heartbeat failed", exc_info=True)
            if sweep:
                swept = time.monotonic()

    # -- control -----------------------------------------------------------------------------------

    def cancel(self, store: Store, job_id: int) -> JobRecord:
        """Ask a job to stop (any process's: the flag is on the row); a queued one ends at once."""
        record = jobs_db.request_cancel(store, job_id)
        with self._lock:
            handle = self._active.get(job_id)
        if handle is not None and handle.context is not None:
            handle.context.cancel.set()
        return record

    def cancel_all(self, kinds: tuple[str, ...] | None = None) -> None:
        """Ask every job this runner holds (of ``kinds``) to stop (the server is shutting down)."""
        with self._lock:
            active = list(self._active.values())
        for handle in active:
            if kinds is None or handle.kind in kinds:
                try:
                    self.cancel(handle.store, handle.id)
                except Exception:
                    log.warning("Could not cancel job %s", handle.id, exc_info=True)

    def handle(self, job_id: int) -> JobHandle | None:
        """This runner's handle of ``job_id``, if it submitted it."""
        with self._lock:
            return self._handles.get(job_id)

    def wait(self, store: Store, job_id: int, timeout: float | None = None) -> JobRecord:
        """Wait until ``job_id`` has ended (its handle when submitted here, else its row) and
        return its row; the row as it is when ``timeout`` passes first."""
        handle = self.handle(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        if handle is not None:
            handle.wait(timeout)
            return jobs_db.get(store, job_id)
        while True:
            record = jobs_db.get(store, job_id)
            if not record.active or (deadline is not None and time.monotonic() >= deadline):
                return record
            time.sleep(self.claim_poll_s)

    def wait_idle(self, store: Store, program: str | None = None, timeout: float = 60.0) -> list[JobRecord]:
        """Wait until no job of ``program`` (or of this user) is queued or running; the rows that
        were active (as they ended, or as they are at the timeout)."""
        deadline = time.monotonic() + timeout
        seen: dict[int, JobRecord] = {}
        while True:
            active = jobs_db.list_jobs(store, program, statuses=jobs_db.ACTIVE, limit=1000)
            for record in active:
                seen[record.id] = record
            if not active or time.monotonic() >= deadline:
                return [jobs_db.get(store, i) for i in sorted(seen)]
            self.wait(store, active[-1].id, max(0.0, deadline - time.monotonic()))

    def recover(self, db: Database) -> list[JobRecord]:
        """Mark jobs left behind by dead processes ``interrupted`` (owner on this host gone, or
        heartbeat older than ``stale_s``); the jobs marked."""
        marked = jobs_db.mark_interrupted(
            db, dead_owner=owner_is_dead, stale_before=jobs_db.stale_cutoff(self.stale_s)
        )
        for record in marked:
            log.warning(
                "Job %s (%s of %r) was left %s by %s; marked interrupted",
                record.id,
                record.kind,
                record.program,
                "running" if record.started_at else "queued",
                record.owner,
            )
        return marked


def _prune_quietly(store: Store, program: str) -> None:
    try:
        jobs_db.prune(store, program, "learn", KEEP_LEARN_JOBS)
    except Exception:
        log.debug("Could not prune learning jobs", exc_info=True)


def _jsonable(value: Any) -> dict[str, Any]:
    import json

    try:
        return dict(json.loads(json.dumps(value, default=str)))
    except (TypeError, ValueError):
        return {"value": repr(value)[:1000]}


# -- the process's runner ------------------------------------------------------------------------

_RUNNER: JobRunner | None = None
_RUNNER_LOCK = threading.Lock()


def runner(settings: Settings | None = None) -> JobRunner:
    """This process's job runner. (``settings`` will pick the backend once there is more than one,
    e.g. a PostgreSQL queue with remote workers.)"""
    global _RUNNER
    with _RUNNER_LOCK:
        if _RUNNER is None:
            _RUNNER = JobRunner()
        return _RUNNER


def recover(db: Database) -> list[JobRecord]:
    """Mark jobs whose process died ``interrupted`` (call at start-up: ``minetune serve``, and CLI
    commands that start jobs)."""
    return runner().recover(db)


def submit(
    store: Store,
    program: str,
    kind: str,
    work: Work,
    *,
    payload: dict[str, Any] | None = None,
    inline: bool = False,
    coalesce: bool = False,
) -> JobHandle | None:
    """:meth:`JobRunner.submit` on this process's runner."""
    return runner().submit(store, program, kind, work, payload=payload, inline=inline, coalesce=coalesce)


# -- jobs that run from their stored payload (here or on a worker) --------------------------------

Handler = Callable[["JobContext", Settings], Any]
HANDLERS: dict[str, Handler] = {}


def _handler(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn

    return register


def submit_stored(
    store: Store, settings: Settings, program: str, kind: str, payload: dict[str, Any]
) -> JobHandle:
    """Run a :data:`HANDLERS` kind from ``payload`` (JSON): on a ``minetune worker`` through the
    PostgreSQL queue when ``settings.queue`` is ``procrastinate``, else on this process's threads."""
    if kind not in HANDLERS:
        raise MinetuneError(f"Jobs of kind {kind!r} cannot run from a stored payload.")
    if settings.queue == "procrastinate":
        from minetune.app import queue

        return queue.enqueue(store, settings, program, kind, payload)
    handle = runner(settings).submit(
        store, program, kind, lambda ctx: HANDLERS[kind](ctx, settings), payload=payload
    )
    assert handle is not None
    return handle


def run_stored(store: Store, settings: Settings, job_id: int) -> JobHandle:
    """Run the queued job ``job_id`` here, in this thread (a worker's task): claim it once its
    program is free, run its kind's handler on its payload, record the end. A job that was
    cancelled or already taken ends without running."""
    record = jobs_db.get(store, job_id)
    handler = HANDLERS[record.kind]
    return runner(settings).run_queued(store, record, lambda ctx: handler(ctx, settings))


@_handler("train")
def _train_from_payload(ctx: JobContext, settings: Settings) -> Any:
    """A local LoRA run (:func:`minetune.train.runs.train`) with the payload's ``options``."""
    from minetune.train.config import TrainConfig
    from minetune.train.runs import train

    options = dict(ctx.payload.get("options") or {})
    options["config"] = TrainConfig.from_dict(options.get("config") or {})
    with training_progress(ctx) as on_progress:
        outcome = train(
            ctx.store,
            settings,
            ctx.program,
            on_progress=on_progress,
            cancel=ctx.cancel,
            model_roots_only=bool(ctx.payload.get("model_roots_only")),
            **options,
        )
    ctx.result.update(outcome_result(ctx, outcome))
    if outcome.status in ("cancelled", "failed"):
        ctx.ended_as(outcome.status, outcome.job.error if outcome.status == "failed" else None)
    return outcome


MIN_POLL_S = 0.5  # a hosted job is polled at most this often, whatever the configured interval


@_handler("hosted")
def _hosted_from_payload(ctx: JobContext, settings: Settings) -> Any:
    """A hosted fine-tuning run with the payload's ``options``: upload and create the provider's job,
    then follow it until it finishes (step, loss curve and status on the job row); a cancel stops the
    following. The provider's key comes from this process's environment or keyring, never the row."""
    from minetune.train import hosted

    config = hosted.load_config(settings)
    job = hosted.start(ctx.store, ctx.program, config=config, **dict(ctx.payload.get("options") or {}))
    assert job is not None  # no confirm callback: never declined
    ctx.link_training_job(job.id)
    ctx.result.update({"method": job.method, "training_job": job.id})
    ctx.progress(phase=job.status, force=True)

    def on_update(view: Any, events: list[dict[str, Any]]) -> None:
        for event in events:
            data = event.get("data")
            if event.get("type") == "metrics" and isinstance(data, dict) and "step" in data:
                loss = data.get("train_loss")
                ctx.progress(
                    step=int(data["step"]),
                    total=int(data.get("total_steps") or 0) or None,
                    loss=float(loss) if isinstance(loss, int | float) else None,
                )

    interval = max(float(config.poll_interval), MIN_POLL_S)
    while not job.done:
        if ctx.cancel.wait(interval):
            raise Cancelled()
        try:
            job = hosted.follow(ctx.store, job.id, config, on_update, max_polls=1, poll_interval=0)
        except MinetuneError as exc:
            ctx.progress(message=f"Could not check the job at the provider: {exc}")
            continue
        ctx.progress(phase=job.status, curve=list(job.loss_curve), force=True)
    ctx.result["version"] = job.version
    if job.status != "succeeded":
        raise JobEnded("cancelled" if job.status == "cancelled" else "failed", error=job.error)
    return {"status": job.status}


@_handler("continual")
def _continual_from_payload(ctx: JobContext, settings: Settings) -> Any:
    return _continual(ctx, settings, None)


# -- learning after feedback ---------------------------------------------------------------------


def submit_learning(
    store: Store,
    settings: Settings,
    program: str,
    fn: Callable[[], object],
    *,
    payload: dict[str, Any] | None = None,
) -> JobHandle:
    """Run ``fn`` (re-optimization after feedback) as a ``learn`` job in the background: one at a
    time per program in every process, after any learning job already queued for it. Its errors
    are recorded on the job row (and logged), never raised into the caller."""
    handle = runner(settings).submit(store, program, "learn", lambda _ctx: fn(), payload=payload)
    assert handle is not None
    return handle


# -- continual adapter updates -------------------------------------------------------------------


def note_accepted(
    store: Store, settings: Settings, program: str, config: ContinualConfig | None = None
) -> JobHandle | None:
    """After an accepted answer: enqueue a ``continual`` job that checks ``program``'s buffer and,
    when it is full, runs one gated incremental update. Never blocks the caller; while such a
    check is still queued nothing more is enqueued (it will see this answer too), so an update
    already running is followed by exactly one more check. Errors end up on the job row
    (:func:`last_update`), never raised here."""
    if settings.queue == "procrastinate" and config is None:
        if jobs_db.list_jobs(store, program, kinds=["continual"], statuses=["queued"], limit=1):
            return None  # the queued check will see this answer too
        return submit_stored(store, settings, program, "continual", {})
    return runner(settings).submit(
        store, program, "continual", lambda ctx: _continual(ctx, settings, config), coalesce=True
    )


def _continual(ctx: JobContext, settings: Settings, config: ContinualConfig | None) -> UpdateReport | None:
    from minetune.models.spec import is_routed
    from minetune.train import continual
    from minetune.train.base import resolve_base
    from minetune.train.config import TrainingError

    store, program = ctx.store, ctx.program
    if is_routed(store.active_version(program).model_spec):
        raise TrainingError(
            f"{program!r} routes between domain adapters, so continual updates are off for it; "
            "update a domain's adapter with `minetune adapter create DOMAIN` instead."
        )
    resolve_base(store, settings, program)  # no local base model: say so instead of checking the buffer
    config = config or continual.ContinualConfig.from_settings(settings.continual)
    buf = continual.buffer(store, program, config)
    ctx.result.update({"status": "waiting", "new": len(buf.new), "threshold": config.threshold})
    if not buf.ready:
        return None
    with training_progress(ctx) as on_progress:
        report = continual.update(
            store, settings, program, config, on_progress=on_progress, cancel=ctx.cancel
        )
    ctx.result.update(_update_result(report))
    if report.outcome is not None:
        ctx.link_training_job(report.outcome.job.id)
    if report.status in ("cancelled", "failed"):
        ctx.ended_as(report.status, report.reason if report.status == "failed" else None)
    return report


def _update_result(report: UpdateReport) -> dict[str, Any]:
    result: dict[str, Any] = {"status": report.status, "reason": report.reason}
    for name in ("improvement", "version"):
        value = getattr(report, name, None)
        if isinstance(value, int | float | str) or value is None:
            result[name] = value
    return result


def last_update(store: Store, program: str) -> JobRecord | None:
    """The newest finished ``continual`` job of ``program`` (any process): its ``result`` says
    what the check or update did, its ``error`` why it could not run."""
    done = jobs_db.list_jobs(store, program, kinds=["continual"], statuses=jobs_db.FINISHED, limit=1)
    return done[0] if done else None


# -- training ------------------------------------------------------------------------------------


@contextmanager
def training_progress(ctx: JobContext) -> Iterator[Callable[[Any], None]]:
    """An ``on_progress`` callback for :mod:`minetune.train` runs that reports to ``ctx`` (phase,
    step, loss, the loss curve) and links the ``training_jobs`` row the run records."""
    from minetune.store import training as training_db

    newest = training_db.list_jobs(ctx.store)
    watermark = newest[0][0].id if newest else 0

    def on_progress(progress: Any) -> None:
        if ctx.training_job_id is None:
            ids = [
                job.id
                for job, _ in training_db.list_jobs(ctx.store, ctx.program, kind="local")
                if job.id > watermark and job.status == "running"
            ]
            if ids:
                ctx.link_training_job(min(ids))
        loss = progress.loss
        point = (
            {"step": progress.step, "train_loss": loss}
            if loss is not None and progress.phase == "training"
            else None
        )
        ctx.progress(phase=progress.phase, step=progress.step, total=progress.total, loss=loss, point=point)

    yield on_progress


def run_training(
    store: Store,
    settings: Settings,
    program: str,
    kind: str,
    train: Callable[[Callable[[Any], None], threading.Event], Any],
    *,
    payload: dict[str, Any] | None = None,
    inline: bool = True,
    on_progress: Callable[[Any], None] | None = None,
) -> JobHandle:
    """Run ``train(on_progress, cancel)`` (a :mod:`minetune.train` call returning an Outcome or a
    list of them) as a ``kind`` job (train or retrain): inline by default (the CLI), progress on the
    row (and to ``on_progress`` too), cancel from any process through the row."""

    def work(ctx: JobContext) -> Any:
        with training_progress(ctx) as report:

            def both(progress: Any) -> None:
                report(progress)
                if on_progress is not None:
                    on_progress(progress)

            outcome = train(both, ctx.cancel)
        ctx.result.update(outcome_result(ctx, outcome))
        if ctx.result.get("status") in ("cancelled", "failed"):
            ctx.ended_as(ctx.result["status"], ctx.result.get("error"))
        return outcome

    handle = runner(settings).submit(store, program, kind, work, payload=payload, inline=inline)
    assert handle is not None
    return handle


def outcome_result(ctx: JobContext, outcome: Any) -> dict[str, Any]:
    """The row's result for a training Outcome (or several): status, training job, version."""
    outcomes = outcome if isinstance(outcome, list) else [outcome]
    found: list[Any] = [getattr(o, "outcome", o) for o in outcomes]
    found = [o for o in found if o is not None and hasattr(o, "job")]
    if not found:
        return {"status": "nothing"}
    last = found[-1]
    ctx.link_training_job(last.job.id)
    return {
        "status": last.status,
        "training_job": last.job.id,
        "version": getattr(last, "version", None),
        "method": last.job.method,
        "training_jobs": [o.job.id for o in found],
        "error": last.job.error if last.status == "failed" else None,
    }
