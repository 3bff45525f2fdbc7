"""Local LoRA training: the ``train`` group, and the training options and progress display it
shares with ``adapter create``."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from minetune.cli.common import _settings, _store, err, out, program_option

TRAIN_HELP = """Train a LoRA adapter on this program's rated answers, locally (CPU or GPU).

The adapter becomes a new program version (base model + adapter) and is activated unless
--no-activate. Ctrl-C stops after the current step and keeps a checkpoint (the previous adapter
stays active); `minetune train --resume JOB` continues it. Needs the training extras
(pip install 'minetune[train]') and a local base model (--base hf:DIR, or the program's hf: model).

\b
  minetune train --method auto --base hf:./models/qwen2.5-0.5b-instruct
  minetune train --method dpo --epochs 2 --lr 5e-5
  minetune train update                 incremental, gated update of the active adapter
  minetune train --retrain-tainted      rebuild adapters that learned from forgotten data
  minetune train jobs                   local training jobs
"""


def _train_config(**opts: Any) -> Any:
    from minetune.train.config import TrainConfig

    fields = {
        "epochs": opts.get("epochs"),
        "max_steps": opts.get("steps"),
        "learning_rate": opts.get("lr"),
        "batch_size": opts.get("batch_size"),
        "rank": opts.get("rank"),
        "max_length": opts.get("max_length"),
        "threads": opts.get("threads"),
        "engine": opts.get("engine"),
        "processes": opts.get("processes"),
    }
    return TrainConfig(**{k: v for k, v in fields.items() if v is not None})


def _training_options(fn: Any) -> Any:
    options = [
        click.option("--epochs", type=click.FloatRange(min=0.01), help="Epochs (default 3; updates 2)."),
        click.option("--steps", type=click.IntRange(min=1), help="Train exactly this many steps instead."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate."),
        click.option("--batch-size", type=click.IntRange(min=1), help="Examples per step (default 4)."),
        click.option("--rank", type=click.IntRange(min=1), help="LoRA rank (default 16)."),
        click.option("--max-length", type=click.IntRange(min=16), help="Tokens per example (default 1024)."),
        click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch."),
        click.option(
            "--processes",
            type=click.IntRange(min=1),
            help="Train with N DDP processes launched by torchrun (one per GPU, or gloo on CPU); "
            "the batch size is split across them.",
        ),
        click.option(
            "--engine",
            type=click.Choice(["auto", "trl", "resident"]),
            help="Trainer: TRL, or the resident plain-PyTorch loop (SFT; default auto = resident on a GPU).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


class _TrainDisplay:
    """A rich progress bar fed by the trainer's progress callback."""

    def __init__(self, title: str) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=out,
            transient=False,
        )
        self.title = title
        self.task = self.progress.add_task(f"{title}: loading", total=None, detail="")

    def __enter__(self) -> _TrainDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, p: Any) -> None:
        detail = ""
        if p.total:
            detail = f"step {p.step}/{p.total}"
            if p.loss is not None:
                detail += f" · loss {p.loss:.4g}"
        self.progress.update(
            self.task,
            description=f"{self.title}: {p.phase}",
            completed=p.step,
            total=p.total or None,
            detail=detail,
        )


def _print_outcome(outcome: Any) -> None:
    job = outcome.job
    metrics = dict(job.metrics or {})
    first, final = metrics.get("first_loss"), metrics.get("final_loss")
    loss = f" · loss {first:.4g} → {final:.4g}" if first is not None and final is not None else ""
    if outcome.status == "succeeded":
        adapter = outcome.adapter
        state = "active" if metrics.get("activated") else "not activated"
        examples = (adapter.metrics or {}).get("examples", 0)
        out.print(
            f"[green]Adapter {adapter.id}[/] ({job.method.upper()}, {examples} training examples{loss}) "
            f"→ v{outcome.version} ({state}) · {adapter.path}",
            highlight=False,
            soft_wrap=True,
        )
    elif outcome.status == "rejected":
        out.print(f"[yellow]Update refused[/] (job {job.id}{loss}): {job.error}", highlight=False)
    elif outcome.status == "cancelled":
        err.print(f"[yellow]Cancelled[/] job {job.id}: {job.error}", highlight=False)
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    for key, label in (
        ("margin", "held-out margin"),
        ("valid_loss", "held-out loss"),
        ("retain_loss", "older loss"),
    ):
        if before.get(key) is not None and after.get(key) is not None:
            out.print(f"  {label}: {before[key]:.4g} → {after[key]:.4g}", highlight=False)
    gate = metrics.get("gate")
    if gate and outcome.status != "rejected":
        out.print(f"  gate: {gate.get('reason')}", highlight=False)


def _run_training(
    ctx: click.Context, program: str, kind: str, call: Any, title: str, payload: dict[str, Any] | None = None
) -> Any:
    """Run ``call(on_progress, cancel)`` as a job in this process (its progress shows on the web
    training page too, and a cancel there stops it) with a progress bar; the first Ctrl-C stops
    after the current step, the second interrupts at once."""
    from minetune.app import jobs

    store, settings = _store(ctx), _settings(ctx)
    jobs.recover(store.db)  # jobs a crashed process left running no longer hold the program
    with _TrainDisplay(title) as display:
        try:
            handle = jobs.run_training(
                store, settings, program, kind, call, payload=payload, on_progress=display
            )
            return handle.value
        except KeyboardInterrupt:
            display.progress.stop()
            err.print("Interrupted; the previous adapter stays active. `minetune train jobs` shows the job.")
            raise SystemExit(130) from None


@click.group("train", invoke_without_command=True, help=TRAIN_HELP)
@program_option
@click.option(
    "--method",
    type=click.Choice(["sft", "dpo", "kto", "auto"]),
    default="auto",
    show_default=True,
    help="auto: DPO when there are 10+ preference pairs, else SFT, else KTO.",
)
@click.option("--base", metavar="SPEC", help="Base model: hf:DIR (default: the program's model).")
@click.option("--domain", default="general", show_default=True, help="Domain tag of the adapter.")
@click.option("--continue", "continue_active", is_flag=True, help="Train the active adapter further.")
@click.option("--no-activate", is_flag=True, help="Publish the adapter's version without activating it.")
@click.option("--resume", "resume_job", type=int, metavar="JOB", help="Continue a cancelled job.")
@click.option("--retrain-tainted", is_flag=True, help="Retrain adapters that learned from forgotten data.")
@click.option(
    "--threshold",
    type=click.IntRange(1, 5),
    default=None,
    help="Stars that accept answers (default: [continual] stars, 4).",
)
@_training_options
@click.pass_context
def train_app(
    ctx: click.Context,
    program: str,
    method: str,
    base: str | None,
    domain: str,
    continue_active: bool,
    no_activate: bool,
    resume_job: int | None,
    retrain_tainted: bool,
    threshold: int | None,
    **opts: Any,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from minetune.app.exchange import accepted_answers

    settings, store = _settings(ctx), _store(ctx)
    if retrain_tainted:
        from minetune.train.adapters import retrain_tainted as retrain

        given = any(v is not None for v in opts.values())
        explicit = ctx.get_parameter_source("program") is not click.core.ParameterSource.DEFAULT
        call = lambda show, cancel: retrain(  # noqa: E731
            store,
            settings,
            program if explicit else None,
            config=_train_config(**opts) if given else None,
            on_progress=show,
        )
        if explicit:
            results = _run_training(ctx, program, "retrain", call, "retrain")
        else:  # every program's tainted adapters: not one program's job
            with _TrainDisplay("retrain") as display:
                results = call(display, None)
        if not results:
            out.print("No tainted adapters; nothing to retrain.")
        for item in results:
            if item.outcome is not None:
                out.print(f"adapter {item.old.id} ({item.program}):", highlight=False)
                _print_outcome(item.outcome)
            else:
                out.print(f"adapter {item.old.id} ({item.program}): {item.skipped}", highlight=False)
        return
    if resume_job is not None:
        from minetune.store import training as training_db
        from minetune.train.runs import resume

        outcome = _run_training(
            ctx,
            training_db.job_program_name(store, resume_job),
            "train",
            lambda show, cancel: resume(store, settings, resume_job, on_progress=show, cancel=cancel),
            "resume",
            {"resume": resume_job},
        )
    else:
        from minetune.train.runs import train

        accepted = accepted_answers(store, settings, program, threshold)
        out.print(f"{program}: {accepted}", highlight=False)
        outcome = _run_training(
            ctx,
            program,
            "train",
            lambda show, cancel: train(
                store,
                settings,
                program,
                method=method,
                base=base,
                config=_train_config(**opts),
                domain=domain,
                continue_active=continue_active,
                activate=not no_activate,
                threshold=accepted.threshold,
                on_progress=show,
                cancel=cancel,
            ),
            f"{program} {method}",
            {"method": method},
        )
    _print_outcome(outcome)
    if outcome.status == "cancelled":
        raise SystemExit(130)


@train_app.command("update")
@program_option
@click.option("--force", is_flag=True, help="Update even if the buffer is below the threshold.")
@click.option(
    "--every", type=click.IntRange(min=1), default=8, show_default=True, help="New examples per update."
)
@click.option(
    "--replay-ratio",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Older examples replayed per new example.",
)
@click.option("--replay-max", type=click.IntRange(min=0), default=64, show_default=True)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=0.05,
    show_default=True,
    help="Allowed relative rise of the loss on older examples.",
)
@click.option(
    "--ewc", type=click.FloatRange(min=0), default=0.0, show_default=True, help="EWC penalty strength."
)
@_training_options
@click.pass_context
def train_update(
    ctx: click.Context,
    program: str,
    force: bool,
    every: int,
    replay_ratio: float,
    replay_max: int,
    tolerance: float,
    ewc: float,
    **opts: Any,
) -> None:
    """Incrementally update the active adapter on new examples plus replayed older ones; the
    update is kept only if the held-out preference margin improves and older answers are retained."""
    from minetune.app.exchange import accepted_threshold
    from minetune.train.continual import ContinualConfig, update

    train_config = _train_config(**opts)
    if opts.get("epochs") is None:
        train_config.epochs = 2.0
    config = ContinualConfig(
        threshold=every,
        replay_ratio=replay_ratio,
        replay_max=replay_max,
        retention_tolerance=tolerance,
        ewc_lambda=ewc,
        stars=accepted_threshold(_settings(ctx)),
        train=train_config,
    )
    settings, store = _settings(ctx), _store(ctx)
    report = _run_training(
        ctx,
        program,
        "continual",
        lambda show, cancel: update(
            store, settings, program, config, force=force, on_progress=show, cancel=cancel
        ),
        f"{program} update",
        {"force": force},
    )
    if report.outcome is None:
        out.print(report.reason, highlight=False)
        return
    _print_outcome(report.outcome)
    parts = []
    if report.improvement is not None:
        parts.append(f"improvement {report.improvement:+.4g}")
    if report.retention is not None:
        parts.append(f"retention {report.retention:+.1%} older-example loss")
    if report.regression is not None:
        parts.append(f"regression {report.regression:.0%} of held-out pairs")
    if parts:
        out.print("  " + " · ".join(parts), highlight=False)
    if report.status == "cancelled":
        raise SystemExit(130)


@train_app.command("buffer")
@program_option
@click.option(
    "--every", type=click.IntRange(min=1), default=8, show_default=True, help="New examples per update."
)
@click.pass_context
def train_buffer(ctx: click.Context, program: str, every: int) -> None:
    """Show how many new examples wait for the next incremental update."""
    from dataclasses import replace

    from minetune.app.exchange import accepted_answers
    from minetune.train.continual import ContinualConfig, buffer

    settings, store = _settings(ctx), _store(ctx)
    accepted = accepted_answers(store, settings, program)
    config = replace(
        ContinualConfig.from_settings(settings.continual), threshold=every, stars=accepted.threshold
    )
    out.print(f"{program}: {accepted}", highlight=False)
    out.print(buffer(store, program, config).summary(), highlight=False)


@train_app.command("jobs")
@click.option("--program", "-p", help="Only this program (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (with loss curves).")
@click.pass_context
def train_jobs(ctx: click.Context, program: str | None, as_json: bool) -> None:
    """List local training jobs, newest first."""
    from minetune.store.training import list_jobs

    jobs = list_jobs(_store(ctx), program, kind="local")
    if as_json:
        rows = [
            {
                "id": j.id,
                "program": name,
                "method": j.method,
                "status": j.status,
                "base_model": j.base_model,
                "examples": len(j.example_attempt_ids or []),
                "metrics": j.metrics,
                "hyperparameters": {
                    k: v for k, v in (j.hyperparameters or {}).items() if k not in ("examples", "eval")
                },
                "loss_curve": j.loss_curve,
                "error": j.error,
                "created_at": j.created_at.isoformat(),
            }
            for j, name in jobs
        ]
        print(json.dumps(rows, indent=2, default=str))
        return
    if not jobs:
        out.print("No local training jobs yet. Start one with `minetune train`.")
        return
    table = Table("id", "program", "method", "status", "examples", "loss", "adapter", "note")
    for job, name in jobs:
        metrics = dict(job.metrics or {})
        first, final = metrics.get("first_loss"), metrics.get("final_loss")
        loss = f"{first:.3g} → {final:.3g}" if first is not None and final is not None else "—"
        adapter = f"{metrics['adapter']} (v{metrics.get('version')})" if metrics.get("adapter") else "—"
        table.add_row(
            str(job.id),
            name,
            job.method,
            job.status,
            str(len(job.example_attempt_ids or [])),
            loss,
            adapter,
            (job.error or "")[:80],
        )
    out.print(table)
