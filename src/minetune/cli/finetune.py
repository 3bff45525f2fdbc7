"""Hosted fine-tuning through an OpenAI-compatible API: the ``finetune`` group."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from minetune.cli.common import _settings, _store, err, out, program_option, threshold_option

FINETUNE_HELP = """Hosted fine-tuning through an OpenAI-compatible fine-tuning API.

OpenAI closes fine-tuning to new jobs on 6 January 2027. Local LoRA training on your own machine
(`minetune train`) is the default path; use these commands when you want a provider to train a
hosted model. The provider is MINETUNE_FINETUNE_BASE_URL (default https://api.openai.com/v1); the
key is the one scoped to it (OPENAI_API_KEY for OpenAI, MINETUNE_API_KEY for a URL you set, or
[keys] / `minetune key set URL`), never stored or printed. Prices (USD per million training
tokens) come from MINETUNE_FINETUNE_PRICES or [finetune.prices] in config.toml; estimates count
about four characters per token.

\b
  minetune finetune estimate --method sft --model gpt-4.1-mini-2025-04-14
  minetune finetune start --method dpo --model gpt-4.1-mini-2025-04-14 --wait --activate
  minetune finetune status 3
"""

method_choice = click.option(
    "--method", type=click.Choice(["sft", "dpo"]), default="sft", show_default=True, help="Training method."
)


def _hosted_config(ctx: click.Context) -> Any:
    from minetune.train.hosted import load_config

    return load_config(_settings(ctx))


def _job_table(jobs: list[Any]) -> Table:
    table = Table("id", "program", "method")
    table.add_column("status", no_wrap=True)
    for name in ("base model", "provider job", "result", "created"):
        table.add_column(name, overflow="fold")
    for job in jobs:
        result = job.model_spec or job.result_model or (job.error or "")[:60]
        if job.version is not None:
            result += f" (v{job.version}{', active' if job.activated else ''})"
        table.add_row(
            str(job.id),
            job.program,
            job.method,
            job.status,
            job.base_model,
            job.provider_job_id or "—",
            result or "—",
            f"{job.created_at:%Y-%m-%d %H:%M}",
        )
    return table


def _print_job(job: Any) -> None:
    out.print(
        f"job {job.id} · {job.program} · {job.method.upper()} on {job.base_model} · [bold]{job.status}[/]"
        + (f" · {job.provider_job_id}" if job.provider_job_id else ""),
        highlight=False,
    )
    if job.error:
        err.print(f"[red]error:[/] {job.error}", highlight=False)
    if job.model_spec:
        state = (
            "active"
            if job.activated
            else f"activate with `minetune program activate {job.program} {job.version}`"
        )
        out.print(
            f"fine-tuned model: {job.model_spec} → {job.program} v{job.version} ({state})", highlight=False
        )


def _follow(ctx: click.Context, job_id: int, activate: bool | None) -> Any:
    """Follow a job with a progress bar until it finishes; Ctrl-C stops watching, not the job."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from minetune.train.hosted import follow

    store, config = _store(ctx), _hosted_config(ctx)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[steps]}"),
        TimeElapsedColumn(),
        console=out,
        transient=False,
    ) as progress:
        task = progress.add_task(f"job {job_id}: starting", total=None, steps="")

        def on_update(job: Any, events: list[dict[str, Any]]) -> None:
            for event in events:
                raw = event.get("data")
                data: dict[str, Any] = raw if isinstance(raw, dict) else {}
                if event.get("type") == "metrics" and "step" in data:
                    total, loss = data.get("total_steps"), data.get("train_loss")
                    steps = f"step {data['step']}/{total or '?'}"
                    if isinstance(loss, int | float):
                        steps += f" · loss {loss:.4g}"
                    progress.update(task, completed=data["step"], total=total, steps=steps)
                else:
                    progress.console.print(f"  {event.get('message', '')}", markup=False, highlight=False)
            progress.update(task, description=f"job {job.id}: {job.status}")

        try:
            return follow(store, job_id, config, on_update, activate=activate)
        except KeyboardInterrupt:
            err.print(
                f"Stopped watching; the job keeps running. Check it with `minetune finetune status {job_id}`."
            )
            raise SystemExit(130) from None


@click.group("finetune", help=FINETUNE_HELP)
def finetune_app() -> None:
    pass


@finetune_app.command("estimate")
@program_option
@method_choice
@click.option("--model", "base_model", metavar="BASE", help="Base model to price, e.g. gpt-4.1-mini.")
@click.option("--epochs", type=click.IntRange(1, 50), help="Epochs (default: auto, estimated as 3).")
@threshold_option
@click.pass_context
def finetune_estimate(
    ctx: click.Context, program: str, method: str, base_model: str | None, epochs: int | None, threshold: int
) -> None:
    """Check eligibility and estimate tokens and cost; uploads nothing."""
    from minetune.train.hosted import CLOSURE_NOTE, estimate

    config = _hosted_config(ctx)
    dataset, cost = estimate(
        _store(ctx), program, method, base_model, config, n_epochs=epochs, threshold=threshold
    )
    out.print(dataset.eligibility.summary(), highlight=False)
    out.print(cost.summary(), highlight=False)
    if config.is_openai:
        out.print(f"[dim]{CLOSURE_NOTE}[/]", highlight=False)


@finetune_app.command("start")
@program_option
@method_choice
@click.option("--model", "base_model", metavar="BASE", required=True, help="Base model to fine-tune.")
@click.option("--epochs", type=click.IntRange(1, 50), help="Epochs (default: the provider's auto).")
@click.option("--beta", type=float, help="DPO beta (default: the provider's auto).")
@click.option("--suffix", help="Suffix for the fine-tuned model's name (default: the program name).")
@threshold_option
@click.option("--yes", "-y", is_flag=True, help="Start without asking to confirm the cost estimate.")
@click.option("--wait", is_flag=True, help="Follow the job with a progress display until it finishes.")
@click.option("--activate", is_flag=True, help="Activate the new program version when the job succeeds.")
@click.pass_context
def finetune_start(
    ctx: click.Context,
    program: str,
    method: str,
    base_model: str,
    epochs: int | None,
    beta: float | None,
    suffix: str | None,
    threshold: int,
    yes: bool,
    wait: bool,
    activate: bool,
) -> None:
    """Upload this program's examples and start a hosted fine-tuning job.

    On success the fine-tuned model becomes a new program version (activated only with --activate).
    """
    from minetune.train.hosted import CLOSURE_NOTE, start

    config = _hosted_config(ctx)

    def confirm(cost: Any) -> bool:
        out.print(cost.summary(), highlight=False)
        if config.is_openai:
            out.print(f"[dim]{CLOSURE_NOTE}[/]", highlight=False)
        return yes or click.confirm("Start the job?", default=False)

    job = start(
        _store(ctx),
        program,
        method=method,
        model=base_model,
        config=config,
        confirm=confirm,
        activate=activate,
        n_epochs=epochs,
        beta=beta,
        suffix=suffix,
        threshold=threshold,
    )
    if job is None:
        out.print("Not started; nothing was uploaded.")
        return
    out.print(f"Started hosted job {job.id} ({job.provider_job_id}) for {program}.", highlight=False)
    if wait:
        job = _follow(ctx, job.id, None)
        _print_job(job)
        if job.status != "succeeded":
            raise SystemExit(1)
    else:
        out.print(f"Follow it with `minetune finetune status {job.id} --wait`.", highlight=False)


@finetune_app.command("status")
@click.argument("job")
@click.option("--wait", is_flag=True, help="Follow the job until it finishes.")
@click.option("--activate", is_flag=True, help="Activate the fine-tuned version (now or when it succeeds).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def finetune_status(ctx: click.Context, job: str, wait: bool, activate: bool, as_json: bool) -> None:
    """Refresh and show a hosted job (local id or provider job id)."""
    from dataclasses import asdict

    from minetune.train.hosted import get, refresh

    store = _store(ctx)
    job_id = get(store, job).id
    result = _follow(ctx, job_id, activate or None) if wait else refresh(
        store, job_id, _hosted_config(ctx), activate=activate or None
    )
    if as_json:
        print(json.dumps(asdict(result), default=str, indent=2))
    else:
        _print_job(result)


@finetune_app.command("events")
@click.argument("job")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.pass_context
def finetune_events(ctx: click.Context, job: str, limit: int) -> None:
    """Show a hosted job's latest events, oldest first."""
    from datetime import UTC, datetime

    from minetune.train.hosted import events

    for event in events(_store(ctx), job, _hosted_config(ctx), limit=limit):
        stamp = event.get("created_at")
        when = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S") if stamp else "—"
        line = f"{when}  {event.get('level', 'info'):5}  {event.get('message', '')}"
        out.print(line, highlight=False, markup=False)


@finetune_app.command("cancel")
@click.argument("job")
@click.pass_context
def finetune_cancel(ctx: click.Context, job: str) -> None:
    """Cancel a hosted job (local id or provider job id)."""
    from minetune.train.hosted import cancel

    result = cancel(_store(ctx), job, _hosted_config(ctx))
    out.print(f"Job {result.id}: {result.status}.")


@finetune_app.command("list")
@click.option("--program", "-p", help="Only this program (default: all).")
@click.option("--remote", is_flag=True, help="List the provider's jobs for this key instead.")
@click.pass_context
def finetune_list(ctx: click.Context, program: str | None, remote: bool) -> None:
    """List hosted fine-tuning jobs recorded here (or, with --remote, at the provider)."""
    if remote:
        from minetune.train.hosted import remote_jobs

        table = Table("provider job", "model", "status", "fine-tuned model", "created")
        for job in remote_jobs(_hosted_config(ctx)):
            created = job.get("created_at")
            table.add_row(
                str(job.get("id")),
                str(job.get("model")),
                str(job.get("status")),
                str(job.get("fine_tuned_model") or "—"),
                f"{datetime_from(created):%Y-%m-%d %H:%M}" if created else "—",
            )
        out.print(table)
        return
    from minetune.train.hosted import list_jobs

    jobs = list_jobs(_store(ctx), program)
    if not jobs:
        out.print("No hosted fine-tuning jobs yet. Start one with `minetune finetune start`.")
        return
    out.print(_job_table(jobs))


def datetime_from(stamp: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(stamp, UTC)
