"""The job runner: one running job per program and lane (across runners, threads and processes),
cancel from another process, crash recovery, progress and errors on the row, and a job started
outside the server visible with progress in the web app. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from minetune.app import jobs
from minetune.app.jobs import JobContext, JobRunner
from minetune.config import load_settings
from minetune.store import Store
from minetune.store import jobs as jobs_db
from minetune.store.schema import Job, utcnow
from minetune.train.config import TrainingError

WORKER = str(Path(__file__).parent / "jobs_worker.py")


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store.open(load_settings())
    store.create_program("p")
    store.create_program("q")
    yield store
    store.close()


def fast_runner(**kwargs: Any) -> JobRunner:
    return JobRunner(heartbeat_s=0.1, claim_poll_s=0.02, **kwargs)


def never_overlap(records: list[jobs_db.JobRecord]) -> None:
    """The jobs' running windows (claimed → finished, and the work's own begin → end) are disjoint."""
    windows = sorted((r.started_at, r.finished_at) for r in records)
    for (_, finished), (started, _) in zip(windows, windows[1:], strict=False):
        assert finished is not None and started is not None and started >= finished
    work = sorted((r.result["began"], r.result["ended"]) for r in records)
    for (_, ended), (began, _) in zip(work, work[1:], strict=False):
        assert began >= ended


# -- the database arbitrates -----------------------------------------------------------------------


def test_the_database_refuses_a_second_running_job_of_a_program_and_lane(store: Store) -> None:
    first = jobs_db.create(store, "p", "continual", "h:1")
    second = jobs_db.create(store, "p", "train", "h:2")
    learning = jobs_db.create(store, "p", "learn", "h:2")
    other = jobs_db.create(store, "q", "train", "h:2")
    assert jobs_db.claim(store, first.id, "h:1")
    assert not jobs_db.claim(store, second.id, "h:2")  # same program, same lane (train)
    assert jobs_db.claim(store, learning.id, "h:2")  # learning is another lane
    assert jobs_db.claim(store, other.id, "h:2")  # another program
    assert jobs_db.get(store, second.id).status == "queued"
    assert jobs_db.finish(store, first.id, "succeeded")
    assert not jobs_db.finish(store, first.id, "failed")  # already ended: unchanged
    assert jobs_db.claim(store, second.id, "h:2")
    record = jobs_db.get(store, second.id)
    assert (record.status, record.owner, record.lane) == ("running", "h:2", "train")
    assert record.started_at is not None


def test_two_runners_never_run_two_jobs_of_one_program_at_once(store: Store) -> None:
    running: dict[str, int] = {"p": 0, "q": 0}
    most: dict[str, int] = {"p": 0, "q": 0}
    lock = threading.Lock()
    q_done = threading.Event()
    p_may_end = threading.Event()

    def work(ctx: JobContext) -> dict[str, float]:
        import time

        with lock:
            running[ctx.program] += 1
            most[ctx.program] = max(most[ctx.program], running[ctx.program])
        began = time.time()
        if ctx.program == "p":
            p_may_end.wait(30)  # the first p job holds p until q's job has run
        else:
            q_done.set()
        with lock:
            running[ctx.program] -= 1
        return {"began": began, "ended": time.time()}

    a, b = fast_runner(), fast_runner()
    handles = [r.submit(store, "p", "train", work) for r in (a, b, a, b)]
    q = b.submit(store, "q", "continual", work)
    assert q is not None and q.wait(30) and q_done.is_set()  # q ran while p was held
    p_may_end.set()
    for handle in handles:
        assert handle is not None and handle.wait(60)
    records = [jobs_db.get(store, h.id) for h in handles if h is not None]
    assert [r.status for r in records] == ["succeeded"] * 4
    assert most == {"p": 1, "q": 1}
    never_overlap(records)


def spawn(database_url: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent / "src"))
    return subprocess.Popen(
        [sys.executable, WORKER, database_url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_processes_never_overlap_on_one_program(store: Store, database_url: str) -> None:
    procs = [spawn(database_url, "serial", "p", "3", "0.3") for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    records = jobs_db.list_jobs(store, "p")
    assert len(records) == 6 and {r.status for r in records} == {"succeeded"}
    assert len({r.owner for r in records}) == 2  # both processes ran jobs
    never_overlap(records)


# -- cancel and crash recovery -------------------------------------------------------------------


def claimed_job(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("claimed "), (line, proc.stderr.read() if proc.stderr else "")
    return int(line.split()[1])


def test_cancel_from_another_process(store: Store, database_url: str) -> None:
    proc = spawn(database_url, "hold", "p")
    try:
        job_id = claimed_job(proc)
        assert jobs_db.get(store, job_id).status == "running"
        jobs.runner().cancel(store, job_id)  # this process does not hold the job: the flag travels
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "ended cancelled" in out
    record = jobs_db.get(store, job_id)
    assert record.status == "cancelled" and record.cancel_requested and record.finished_at is not None


def test_a_killed_process_leaves_its_job_interrupted_on_the_next_start(
    store: Store, database_url: str
) -> None:
    from minetune.server.app import create_app

    proc = spawn(database_url, "hold", "p")
    job_id = claimed_job(proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert jobs_db.get(store, job_id).status == "running"  # nobody has looked yet
    queued = jobs_db.create(store, "p", "train", "h:1")
    assert not jobs_db.claim(store, queued.id, "h:1")  # the dead job still holds the program

    create_app(load_settings())  # a server start-up recovers
    record = jobs_db.get(store, job_id)
    assert record.status == "interrupted" and record.error == jobs_db.INTERRUPTED
    assert jobs_db.claim(store, queued.id, "h:1")  # the program is free again
    assert jobs.recover(store.db) == []  # a live owner's job (h:1 is not this host) is left alone


def test_a_job_whose_heartbeat_stopped_on_another_host_is_interrupted(store: Store) -> None:
    stale = jobs_db.create(store, "p", "train", "elsewhere:1")
    fresh = jobs_db.create(store, "q", "train", "elsewhere:2")
    assert jobs_db.claim(store, stale.id, "elsewhere:1") and jobs_db.claim(store, fresh.id, "elsewhere:2")
    with store.db.transaction() as s:
        s.execute(update(Job).where(Job.id == stale.id).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
    marked = JobRunner(stale_s=60).recover(store.db)
    assert [r.id for r in marked] == [stale.id]
    assert jobs_db.get(store, stale.id).status == "interrupted"
    assert jobs_db.get(store, fresh.id).status == "running"


def test_heartbeats_keep_a_long_job_alive_and_a_queued_cancel_ends_it_at_once(store: Store) -> None:
    runner = fast_runner(stale_s=0.5)
    release = threading.Event()

    def slow(ctx: JobContext) -> None:
        assert release.wait(30)

    holder = runner.submit(store, "p", "train", slow)
    assert holder is not None and holder.claimed.wait(10)
    waiting = runner.submit(store, "p", "train", slow)
    assert waiting is not None and waiting.settled.wait(10)  # queued behind the holder
    before = jobs_db.get(store, holder.id).heartbeat_at
    record = jobs_db.get(store, holder.id)
    while record.heartbeat_at == before:
        record = jobs_db.get(store, holder.id)
    assert runner.recover(store.db) == []  # beaten within stale_s: alive
    assert runner.cancel(store, waiting.id).status == "cancelled"
    release.set()
    assert holder.wait(30) and waiting.wait(30)
    assert jobs_db.get(store, holder.id).status == "succeeded"
    assert jobs_db.get(store, waiting.id).status == "cancelled"


# -- progress, results and errors ----------------------------------------------------------------


def test_progress_results_and_errors_are_on_the_row(store: Store) -> None:
    runner = fast_runner()

    def good(ctx: JobContext) -> dict[str, Any]:
        ctx.progress(phase="training", step=1, total=2, loss=0.5, point={"step": 1, "train_loss": 0.5})
        ctx.progress(step=2, loss=0.25, point={"step": 2, "train_loss": 0.25})
        return {"answer": 42}

    def bad(ctx: JobContext) -> None:
        raise TrainingError("No base model to train on.")

    ok = runner.submit(store, "p", "train", good, payload={"method": "sft"})
    assert ok is not None and ok.wait(30)
    record = ok.record()
    assert record.status == "succeeded" and record.result == {"answer": 42}
    assert record.payload == {"method": "sft"}
    assert record.progress["step"] == 2 and record.progress["loss"] == 0.25
    assert [p["step"] for p in record.progress["curve"]] == [1, 2]

    failed = runner.submit(store, "p", "train", bad)
    assert failed is not None and failed.wait(30)
    assert (failed.record().status, failed.record().error) == ("failed", "No base model to train on.")
    with pytest.raises(TrainingError, match="No base model"):  # inline (the CLI): recorded and raised
        runner.submit(store, "p", "train", bad, inline=True)
    assert jobs_db.list_jobs(store, "p")[0].status == "failed"


def test_learning_jobs_run_one_at_a_time_in_order_and_errors_never_reach_the_caller(store: Store) -> None:
    seen: list[int] = []

    def learner(i: int) -> Any:
        def fn() -> None:
            seen.append(i)
            if i == 1:
                raise RuntimeError("boom")

        return fn

    handles = [
        jobs.submit_learning(store, load_settings(), "p", learner(i), payload={"i": i}) for i in range(3)
    ]
    for handle in handles:
        assert handle.wait(30)
    assert seen == [0, 1, 2]
    assert [h.record().status for h in handles] == ["succeeded", "failed", "succeeded"]
    assert "RuntimeError: boom" in (handles[1].record().error or "")


# -- visible in the web app -------------------------------------------------------------------------


def test_a_job_started_outside_the_server_shows_with_live_progress_in_the_web_app(store: Store) -> None:
    from webusers import csrf_token, served

    settings = load_settings()
    at_step, release = threading.Event(), threading.Event()

    def train(on_progress: Any, cancel: threading.Event) -> None:
        from minetune.train.config import Progress

        on_progress(Progress("training", step=3, total=10, loss=1.5))
        at_step.set()
        assert release.wait(30)
        if cancel.is_set():
            on_progress(Progress("cancelled", step=3, total=10))

    # The CLI runs its training inline, in its own runner: here on another thread of this process.
    cli = threading.Thread(
        target=jobs.run_training,
        args=(store, settings, "p", "train", train),
        kwargs={"payload": {"method": "sft"}},
    )
    cli.start()
    assert at_step.wait(30)
    (record,) = jobs_db.list_jobs(store, "p")
    with served(settings) as web:  # a real server on 127.0.0.1, as `minetune serve` would be
        run = web.client.get(f"/training/runs/{record.id}").json()
        page = web.client.get("/training", params={"program": "p"}, headers={"Accept": "text/html"}).text
        token = csrf_token(web.client, "/training?program=p")
        cancel = web.client.post(f"/training/runs/{record.id}/cancel", data={"csrf_token": token})
    assert (run["status"], run["phase"], run["step"], run["total"], run["loss"]) == (
        "running",
        "training",
        3,
        10,
        1.5,
    )
    assert run["method"] == "sft" and run["done"] is False and run["owner"] == jobs.this_owner()
    assert f'data-run="{record.id}"' in page
    assert cancel.status_code == 200 and cancel.json()["phase"] == "cancelling"
    assert jobs_db.get(store, record.id).cancel_requested
    release.set()
    cli.join(30)
    assert jobs_db.get(store, record.id).status == "succeeded"  # the fake returned normally
