"""``worker``: run queued training jobs from PostgreSQL; ``worker retry``: queue a job again."""

from __future__ import annotations

import click

from minetune.cli.common import _settings, out


@click.group(invoke_without_command=True)
@click.option(
    "--concurrency", default=1, show_default=True, type=click.IntRange(1, 64), help="Jobs run at once."
)
@click.option("--until-idle", is_flag=True, help="Exit once the queue is empty instead of waiting for more.")
@click.pass_context
def worker(ctx: click.Context, concurrency: int, until_idle: bool) -> None:
    """Run training jobs and continual updates queued by servers and the CLI.

    Needs queue = "procrastinate" and a PostgreSQL database_url in config.toml (or MINETUNE_QUEUE and
    MINETUNE_DATABASE_URL); run it on any machine that reaches the database and the base models, for
    example a GPU box. Progress and results show on every server's training page. Stop with Ctrl-C.
    `minetune worker retry JOB` queues a job again whose worker died.
    """
    if ctx.invoked_subcommand is not None:
        return
    from minetune.app import queue

    settings = _settings(ctx)
    out.print(
        f"minetune worker: running queued jobs ({concurrency} at a time); Ctrl-C stops.", highlight=False
    )
    queue.run_worker(settings, concurrency=concurrency, until_idle=until_idle)


@worker.command()
@click.argument("job_id", type=int)
@click.pass_context
def retry(ctx: click.Context, job_id: int) -> None:
    """Queue an interrupted or failed training job again (a new job with the same settings)."""
    from minetune.app import queue

    handle = queue.retry(_settings(ctx), job_id)
    out.print(f"Queued job {handle.id} (a retry of job {job_id}).", highlight=False)
