"""A separate process for the job runner tests: ``python tests/jobs_worker.py URL MODE ...``.

- ``serial PROGRAM COUNT SECONDS``: submit COUNT ``train`` jobs for PROGRAM that each hold the
  program for SECONDS, recording when their work began and ended (``time.time()``) in the result;
  exit when all have ended.
- ``hold PROGRAM``: run one job that prints ``claimed JOB_ID`` once it holds the program, then
  waits until it is cancelled (from anywhere) and ends; prints ``ended STATUS``.
"""

from __future__ import annotations

import sys
import time

from minetune.app.jobs import JobContext, JobRunner
from minetune.store import Store
from minetune.store.db import Database, open_engine


def main(url: str, mode: str, program: str, *args: str) -> None:
    store = Store(Database(open_engine(url)))
    runner = JobRunner(heartbeat_s=0.2, claim_poll_s=0.05)
    if mode == "serial":
        count, seconds = int(args[0]), float(args[1])

        def hold(ctx: JobContext) -> dict[str, float]:
            began = time.time()
            time.sleep(seconds)
            return {"began": began, "ended": time.time()}

        handles = [runner.submit(store, program, "train", hold) for _ in range(count)]
        for handle in handles:
            assert handle is not None and handle.wait(120)
    elif mode == "hold":

        def wait_for_cancel(ctx: JobContext) -> None:
            print(f"claimed {ctx.job_id}", flush=True)
            while not ctx.cancel.wait(0.05):
                pass
            ctx.check_cancelled()

        handle = runner.submit(store, program, "train", wait_for_cancel)
        assert handle is not None and handle.wait(120)
        print(f"ended {handle.record().status}", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    store.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
