"""Programs and how they learn: ``program``, ``lessons``, ``judge``, ``bootstrap``, ``optimize``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from minetune.cli.common import _settings, _store, err, model_option, out, program_option
from minetune.errors import MinetuneError


@click.group("program")
def program_app() -> None:
    """Create, inspect, activate and roll back programs (personas or tasks)."""


@program_app.command("create")
@click.argument("name")
@click.option("--instructions", help="System instructions.")
@click.option(
    "--instructions-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Read instructions from a file.",
)
@model_option
@click.option("--description", default="", help="A short description.")
@click.pass_context
def program_create(
    ctx: click.Context,
    name: str,
    instructions: str | None,
    instructions_file: Path | None,
    model: str | None,
    description: str,
) -> None:
    """Create a program with version 1 (instructions, optional model spec)."""
    from minetune.store.repo import DEFAULT_INSTRUCTIONS

    text = instructions_file.read_text(encoding="utf-8") if instructions_file else instructions
    if model:
        from minetune.models import parse_spec

        parse_spec(model)
    program = _store(ctx).create_program(name, text or DEFAULT_INSTRUCTIONS, model, description)
    out.print(f"Created program [cyan]{program.name}[/] (v1).")


@program_app.command("list")
@click.pass_context
def program_list(ctx: click.Context) -> None:
    """List programs with their active version."""
    store = _store(ctx)
    table = Table("program", "active", "versions", "model", "description")
    for program in store.programs():
        versions = store.versions(program.name)
        active = next(v for v in versions if v.id == program.active_version_id)
        table.add_row(
            program.name,
            f"v{active.number}",
            str(len(versions)),
            active.model_spec or "(default)",
            program.description,
        )
    out.print(table)


@program_app.command("show")
@click.argument("name", default="default")
@click.option("--version", type=int, help="Version number (default: the active one).")
@click.pass_context
def program_show(ctx: click.Context, name: str, version: int | None) -> None:
    """Explain a version: rules, demo policy, where it came from, and the rendered system prompt."""
    from minetune.app.exchange import accepted_answers
    from minetune.learn.demos import policy_with_defaults
    from minetune.program import render_system_prompt

    store = _store(ctx)
    v = store.version(name, version) if version else store.active_version(name)
    active = store.program(name).active_version_id == v.id
    out.print(
        f"[bold]{name}[/] v{v.number}{' (active)' if active else ''} · created {v.created_at:%Y-%m-%d %H:%M}"
        + (f" · {v.note}" if v.note else ""),
        highlight=False,
    )
    out.print(f"model: {v.model_spec or '(default: MINETUNE_MODEL or auto-detect)'}", highlight=False)
    out.print(f"adapter: {v.adapter or '(none)'}", highlight=False)
    lessons = v.lessons or []
    out.print(f"rules ({len(lessons)}):" if lessons else "rules: none yet (critiques become rules)")
    for lesson in lessons:
        label = f"[{lesson['id']}] " if isinstance(lesson, dict) and "id" in lesson else ""
        text = lesson["text"] if isinstance(lesson, dict) else str(lesson)
        out.print(f"  {label}{text}", highlight=False, markup=False)
    policy = policy_with_defaults(v.demo_policy)
    pinned = policy.pop("pinned", [])
    data = store.stats(name)
    out.print(
        "demo policy: "
        + ", ".join(f"{k}={val}" for k, val in policy.items())
        + "; demos are chosen per message from this program's accepted answers"
        + (f"; {len(pinned)} pinned" if pinned else ""),
        highlight=False,
    )
    accepted = accepted_answers(store, _settings(ctx), name)
    out.print(
        f"rated data: {data['rated_attempts']} rated answers, {accepted}, {data['captures']} captures",
        highlight=False,
    )
    if v.sources:
        out.print("sources: " + json.dumps(v.sources, default=str), highlight=False, markup=False)
    out.rule("system prompt (per-message demos are added when a message arrives)")
    out.print(render_system_prompt(v), markup=False, highlight=False)


@program_app.command("activate")
@click.argument("name")
@click.argument("version", type=int)
@click.pass_context
def program_activate(ctx: click.Context, name: str, version: int) -> None:
    """Make VERSION the active version of NAME."""
    v = _store(ctx).activate(name, version)
    out.print(f"Activated {name} v{v.number}.")


@program_app.command("rollback")
@click.argument("name", default="default")
@click.pass_context
def program_rollback(ctx: click.Context, name: str) -> None:
    """Activate the version the active one was derived from."""
    v = _store(ctx).rollback(name)
    out.print(f"Rolled {name} back to v{v.number}.")


@program_app.command("diff")
@click.argument("name")
@click.argument("old", type=int)
@click.argument("new", type=int)
@click.pass_context
def program_diff(ctx: click.Context, name: str, old: int, new: int) -> None:
    """Show what changed between two versions."""
    from minetune.program import diff_versions

    store = _store(ctx)
    text = diff_versions(store.version(name, old), store.version(name, new))
    out.print(text or f"v{old} and v{new} are the same.", markup=False, highlight=False)


@click.command()
@program_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def judge(ctx: click.Context, program: str, as_json: bool) -> None:
    """Update the personal judge from new ratings and show its held-out agreement with you."""
    from minetune.learn.reoptimize import Learner

    metrics = Learner(_store(ctx), _settings(ctx), program).judge_report()
    if as_json:
        print(json.dumps(metrics.as_dict(), indent=2))
    else:
        out.print(metrics.summary(), highlight=False)


# -- lessons ---------------------------------------------------------------------------------


@click.group("lessons")
def lessons_app() -> None:
    """List, add, edit and retire the rules learned from critiques. Every change is a new version."""


@lessons_app.command("list")
@program_option
@click.option("--all", "show_all", is_flag=True, help="Include retired and superseded rules.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def lessons_list(ctx: click.Context, program: str, show_all: bool, as_json: bool) -> None:
    """Show the rules the program's active version uses (--all: every rule, with its status).

    A rule's status is ``active`` only while the active version carries it: after `program rollback`
    to a version without it, it reads ``not in vN``."""
    store = _store(ctx)
    version = store.active_version(program)
    in_use = {lesson["id"] for lesson in version.lessons or [] if isinstance(lesson, dict) and "id" in lesson}

    def status(lesson: Any) -> str:
        if lesson.status == "active" and lesson.id not in in_use:
            return f"not in v{version.number}"
        return str(lesson.status)

    rows = [
        {
            "id": lesson.id,
            "text": lesson.text,
            "status": status(lesson),
            "origin": lesson.origin,
            "feedback_id": lesson.feedback_id,
            "superseded_by": lesson.superseded_by_id,
            "created_at": lesson.created_at.isoformat(timespec="seconds"),
        }
        for lesson in store.lessons(program, include_inactive=True)
        if show_all or lesson.id in in_use
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print(
            f"No rules in {program} v{version.number}. Rate an answer with a critique, or add one: "
            "minetune lessons add TEXT",
            markup=False,
            highlight=False,
        )
        return
    table = Table("id", "rule", "status", "origin", "from feedback")
    for row in rows:
        table.add_row(
            str(row["id"]),
            escape(row["text"]),
            row["status"],
            escape(row["origin"]),
            str(row["feedback_id"] or "—"),
        )
    out.print(table)


def _lesson_change(ctx: click.Context, program: str, note: str, **change: Any) -> None:
    version, _ = _store(ctx).change_lessons(program, note=note, **change)
    out.print(f"{note} → {program} v{version.number}")


@lessons_app.command("add")
@click.argument("text")
@program_option
@click.pass_context
def lessons_add(ctx: click.Context, text: str, program: str) -> None:
    """Add a rule of your own."""
    _lesson_change(ctx, program, "added a rule", add=[{"text": text, "origin": "manual"}])


@lessons_app.command("edit")
@click.argument("lesson_id", type=int)
@click.argument("text")
@program_option
@click.pass_context
def lessons_edit(ctx: click.Context, lesson_id: int, text: str, program: str) -> None:
    """Rewrite rule LESSON_ID."""
    _lesson_change(ctx, program, f"edited rule {lesson_id}", edit={lesson_id: text})


@lessons_app.command("retire")
@click.argument("lesson_id", type=int)
@program_option
@click.pass_context
def lessons_retire(ctx: click.Context, lesson_id: int, program: str) -> None:
    """Stop using rule LESSON_ID (it stays in the history)."""
    _lesson_change(ctx, program, f"retired rule {lesson_id}", retire=[lesson_id])


# -- bootstrap and optimize ----------------------------------------------------------------------


@click.command()
@click.argument("sources", nargs=-1, required=True, metavar="SOURCES...")
@program_option
@model_option
@click.option(
    "--assistant-name", help="The persona's name in the transcripts (default: whoever speaks second)."
)
@click.option("--no-llm", is_flag=True, help="Use only the plain 'Name: text' parser and a template prompt.")
@click.option(
    "--vision-model",
    metavar="SPEC",
    help="Model that transcribes screenshots (OpenAI-compatible, with image input; default: the model).",
)
@click.option(
    "--max-pages", type=click.IntRange(min=1), default=10, show_default=True, help="Pages read per website."
)
@click.pass_context
def bootstrap(
    ctx: click.Context,
    sources: tuple[str, ...],
    program: str,
    model: str | None,
    assistant_name: str | None,
    no_llm: bool,
    vision_model: str | None,
    max_pages: int,
) -> None:
    """Bootstrap a persona from conversation samples SOURCES: text, markdown or PDF files,
    screenshots of chats (.png, .jpg, .jpeg, .webp; read by a vision model) or website URLs
    (same-site pages, main text only).

    User/assistant pairs are extracted (LLM-assisted, with a parser fallback for "Name: text"
    transcripts), categorised, stored as 5-star demo candidates, and an enhanced system prompt
    becomes a new version.
    """
    from minetune.app.persona_sources import bootstrap_from_sources

    report = bootstrap_from_sources(
        _store(ctx),
        _settings(ctx, model),
        program,
        sources,
        model=model,
        use_llm=not no_llm,
        vision_model=vision_model,
        assistant_name=assistant_name,
        max_pages=max_pages,
    )
    categories = ", ".join(f"{k} {v}" for k, v in report.categories.items() if v)
    out.print(
        f"Bootstrapped {program} v{report.version} from {len(report.files)} sample(s): {report.pairs} pairs "
        f"({categories}); extraction: {report.method}, prompt: {report.prompt_method}",
        highlight=False,
    )
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)


@click.command()
@program_option
@click.option(
    "--with",
    "optimizer",
    metavar="dspy:NAME",
    help="Also run a DSPy optimizer (e.g. dspy:BootstrapFewShot, dspy:MIPROv2, dspy:GEPA) "
    "and import its result as a new version.",
)
@model_option
@click.pass_context
def optimize(ctx: click.Context, program: str, optimizer: str | None, model: str | None) -> None:
    """Re-optimize a program now: rebuild its demo index from all rated data (optionally run DSPy).

    With `reoptimize = false` the prompt is frozen between versions; this publishes a new version
    so the demos include everything rated since."""
    from minetune.app.exchange import accepted_answers, refresh_demos

    settings = _settings(ctx, model)
    store = _store(ctx)
    report, version = refresh_demos(store, settings, program)
    out.print(
        f"Demo index rebuilt: {report.demo_candidates} demo candidates (each message's best accepted "
        f"answer; {accepted_answers(store, settings, program)}) ({report.elapsed_ms:.0f} ms).",
        highlight=False,
    )
    if version is not None:
        out.print(f"reoptimize is off, so the demos changed with a new version: {program} v{version.number}.")
    if optimizer is None:
        return
    if not optimizer.startswith("dspy:"):
        raise MinetuneError(f"Unknown optimizer {optimizer!r}; use dspy:NAME, e.g. dspy:BootstrapFewShot.")
    from minetune.learn.dspy_bridge import optimize as run_dspy
    from minetune.models.detect import detect_spec

    spec = model or store.active_version(program).model_spec or settings.model or detect_spec(settings)
    r = run_dspy(store, program, optimizer.split(":", 1)[1], spec, settings=settings)
    out.print(
        f"{r.optimizer} → {r.program} v{r.version} (from v{r.parent_version}): trainset score "
        f"{r.score_before:.3f} → {r.score_after:.3f} on {r.trainset_size} accepted answers · "
        f"{len(r.pinned)} pinned demos · instructions {'changed' if r.instructions_changed else 'kept'} · "
        f"{r.lm_calls} LM calls · {r.elapsed_s:.1f} s",
        highlight=False,
    )
    for note in r.notes:
        out.print(f"  note: {note}", highlight=False)
