"""The ``minetune`` command line. Each command parses, makes one library call, and renders."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from minetune.config import Settings, load_settings
from minetune.errors import MinetuneError

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error = one line, however narrow the terminal

MODEL_HELP = (
    "Model spec, e.g. ollama:llama3.2, openai:gpt-4o-mini, "
    "openai-compatible:NAME@http://127.0.0.1:8080/v1, hf:./my-model."
)
model_option = click.option("--model", "model", metavar="SPEC", help=MODEL_HELP)
program_option = click.option(
    "--program", "-p", "program", default="default", show_default=True, help="Program name."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    help="Data folder (default: $MINETUNE_HOME or ~/.minetune).",
)
@model_option
@click.version_option(package_name="minetune")
@click.pass_context
def app(ctx: click.Context, home: Path | None, model: str | None) -> None:
    """minetune: a personal AI program that learns on the job from your ratings, critiques and praise."""
    ctx.obj = {"home": home, "model": model}


@app.group("program")
def program_app() -> None:
    """Create, inspect, activate and roll back programs (personas or tasks)."""


def _settings(ctx: click.Context, model: str | None = None) -> Settings:
    obj = ctx.find_root().obj or {}
    return load_settings(obj.get("home"), model=model or obj.get("model"))


def _store(ctx: click.Context) -> Any:
    from minetune.store import Store

    return Store.open(_settings(ctx))


# -- chat -------------------------------------------------------------------------------

CHAT_HELP = """Commands:
  /rate N [critique]   rate the last answer 1-5, optionally with a critique
  /retry [critique]    answer again with your rating and critique folded in
  /new                 start a new conversation
  /help                show this help
  /quit                leave (Ctrl-D works too)
Anything else is sent as a message. Praise such as "perfect" or "good one" is noticed."""


@app.command()
@program_option
@model_option
@click.option(
    "--best-of",
    "best_of",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Sample N answers per message and let your personal judge pick one.",
)
@click.pass_context
def chat(ctx: click.Context, program: str, model: str | None, best_of: int) -> None:
    """Chat in the terminal; rate, critique and retry every answer.

    \b
    /rate N [critique]   rate the last answer 1-5, optionally with a critique
    /retry [critique]    answer again with your rating and critique folded in
    /new, /help, /quit

    When standard input is not a terminal, each line is one message or command, so a session
    can be scripted (the first error stops it with exit code 1):

    \b
      printf 'hi\\n/rate 2 too long\\n/retry\\n/rate 5\\n' | minetune chat
    """
    from minetune.loop import Session

    settings = _settings(ctx, model)
    interactive = sys.stdin.isatty()
    from minetune.store import Store

    with Session(Store.open(settings), settings, program, model or settings.model) as session:
        version = session.version
        out.print(
            f"[bold]minetune[/] · program [cyan]{session.program}[/] v{version.number} · "
            f"model [cyan]{session.model(version).spec}[/] · /help for commands"
        )
        lines = _input_lines(interactive)
        for line in lines:
            try:
                if not _chat_line(session, line.strip(), best_of):
                    break
            except MinetuneError as exc:
                err.print(f"[red]error:[/] {exc}", highlight=False)
                if not interactive:
                    raise SystemExit(1) from None


def _input_lines(interactive: bool) -> Any:
    if not interactive:
        yield from (line.rstrip("\n") for line in sys.stdin)
        return
    while True:
        try:
            yield out.input("[bold green]you>[/] ")
        except (EOFError, KeyboardInterrupt):
            out.print()
            return


def _chat_line(session: Any, line: str, best_of: int = 1) -> bool:
    """Handle one input line; False means quit."""
    if not line:
        return True
    if not line.startswith("/"):
        _respond(lambda on_delta: session.send(line, on_delta=on_delta, best_of=best_of))
        if session.last_praise:
            out.print(
                f"[green]★ praise noticed ({session.last_praise!r}): the previous answer was captured.[/]"
            )
        return True
    command, _, rest = line.partition(" ")
    rest = rest.strip()
    if command in ("/quit", "/exit", "/q"):
        return False
    if command == "/help":
        out.print(CHAT_HELP, highlight=False)
    elif command == "/rate":
        from minetune.feedback import parse_rating_command

        stars, critique = parse_rating_command(rest)
        session.rate(stars, critique)
        out.print(
            f"[yellow]{'★' * stars}{'☆' * (5 - stars)}[/] recorded" + (" with critique" if critique else "")
        )
        _print_learning(session.last_learning)
    elif command == "/retry":
        _respond(lambda on_delta: session.retry(rest or None, on_delta=on_delta))
    elif command == "/new":
        session.new_conversation()
        out.print("Started a new conversation.")
    else:
        raise MinetuneError(f"Unknown command {command}; type /help for the list.")
    return True


def _print_learning(report: Any) -> None:
    if report is None:
        return
    if report.rule:
        out.print(f"[magenta]learned:[/] {report.rule} (now v{report.version})", highlight=False)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _respond(call: Any) -> None:
    out.print("[bold blue]ai>[/] ", end="")
    response = call(lambda delta: out.print(delta, end="", markup=False, highlight=False, soft_wrap=True))
    out.print()
    out.print(
        f"[dim]attempt {response.number} · {response.model} · v{response.version} · "
        f"{response.latency_ms / 1000:.1f}s · /rate 1-5 [critique], /retry[/]"
    )
    if response.note:
        out.print(f"[dim]{response.note}[/]", highlight=False)


# -- rating outside chat --------------------------------------------------------------------


@app.command()
@click.argument("stars")
@click.argument("critique", required=False)
@click.option("--attempt", type=int, help="Attempt id (default: the newest attempt).")
@click.pass_context
def rate(ctx: click.Context, stars: str, critique: str | None, attempt: int | None) -> None:
    """Rate a stored answer (the newest by default) STARS 1-5, with an optional CRITIQUE."""
    from minetune.feedback import parse_stars

    value = parse_stars(stars)  # validate before touching the store
    store = _store(ctx)
    target = attempt if attempt is not None else store.latest_attempt_id()
    if target is None:
        raise MinetuneError("There is no stored answer to rate yet.")
    store.add_feedback(target, "explicit", stars=value, critique=critique)
    out.print(f"Rated attempt {target}: {value}★")


# -- stats and export ---------------------------------------------------------------------------


@app.command()
@click.option("--program", "-p", help="Only this program (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def stats(ctx: click.Context, program: str | None, as_json: bool) -> None:
    """Turns, attempts, the star histogram, attempts-to-5★ and captures."""
    data = _store(ctx).stats(program)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(title=f"minetune stats · {program or 'all programs'}", show_header=False)
    for key in (
        "turns",
        "attempts",
        "rated_attempts",
        "mean_stars",
        "turns_reaching_5",
        "mean_attempts_to_5",
        "mean_score",
        "captures",
    ):
        table.add_row(key.replace("_", " "), "—" if data[key] is None else str(data[key]))
    table.add_row("ratings", "  ".join(f"{k}★ {v}" for k, v in data["ratings"].items()))
    out.print(table)


EXPORT_FORMATS = (
    "openai-chat",
    "openai-dpo",
    "trl-sft",
    "trl-dpo",
    "trl-kto",
    "sharegpt",
    "alpaca",
    "capture-md",
)


@app.command()
@click.option("--format", "-f", "format", required=True, help="One of: " + ", ".join(EXPORT_FORMATS))
@click.option(
    "--out",
    "-o",
    "out_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="File to write.",
)
@click.option("--program", "-p", help="Only this program (default: all).")
@click.option(
    "--split",
    "split_files",
    is_flag=True,
    help="Write FILE.train.jsonl and FILE.valid.jsonl (90/10, by turn).",
)
@click.option(
    "--threshold",
    type=click.IntRange(1, 5),
    default=4,
    show_default=True,
    help="Stars that accept an answer.",
)
@click.pass_context
def export(
    ctx: click.Context, format: str, out_file: Path, program: str | None, split_files: bool, threshold: int
) -> None:
    """Export stored data as training data (JSONL) or captures.

    \b
    accepted answers (SFT):
      openai-chat   {"messages": [...]}  (OpenAI supervised fine-tuning)
      trl-sft       {"messages": [...]}  (TRL SFTTrainer)
      sharegpt      {"conversations": [{"from": "system|human|gpt", "value": ...}]}
      alpaca        {"instruction", "input", "output", "system", "history"}
    preference pairs from retry chains and differently rated attempts (DPO):
      openai-dpo    {"input": {"messages"}, "preferred_output", "non_preferred_output"}
      trl-dpo       {"prompt", "chosen", "rejected"}  (TRL DPOTrainer)
    rated answers, desirable or not, 3 stars left out (KTO):
      trl-kto       {"prompt", "completion", "label"}  (TRL KTOTrainer)
    praised exchanges:
      capture-md    the capture markdown layout

    Every prompt is the turn's original prompt (system prompt, history, message); an answer is
    accepted at --threshold stars or more, or when praised.
    """
    if format not in EXPORT_FORMATS:
        raise MinetuneError(f"Unknown export format {format!r}; choose one of: {', '.join(EXPORT_FORMATS)}.")
    if format == "capture-md":
        if split_files:
            raise MinetuneError("--split applies to the JSONL training formats, not capture-md.")
        from minetune.io.capture_md import write_captures

        count = write_captures(_store(ctx).captures(program), out_file)
        out.print(f"Wrote {count} capture(s) to {out_file}")
        return
    from minetune.train.datasets import export_dataset

    result = export_dataset(
        _store(ctx), format, out_file, program=program, split_files=split_files, threshold=threshold
    )
    written = ", ".join(f"{result.counts[k]} to {path}" for k, path in result.files.items())
    dataset = result.dataset
    extra = f" ({dataset.duplicates} duplicate(s) dropped)" if dataset.duplicates else ""
    out.print(f"Wrote {dataset.method.upper()} examples as {format}: {written}{extra}", highlight=False)
    if not dataset.eligibility.eligible:
        err.print(f"[yellow]note:[/] {dataset.eligibility.summary()}", highlight=False)


# -- programs --------------------------------------------------------------------------------


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
    out.print(
        f"rated data: {data['rated_attempts']} rated answers, {data['captures']} captures", highlight=False
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


@app.command()
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


@app.group("lessons")
def lessons_app() -> None:
    """List, add, edit and retire the rules learned from critiques. Every change is a new version."""


@lessons_app.command("list")
@program_option
@click.option("--all", "show_all", is_flag=True, help="Include retired and superseded rules.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def lessons_list(ctx: click.Context, program: str, show_all: bool, as_json: bool) -> None:
    """Show the rules of a program (active ones by default)."""
    rows = [
        {
            "id": lesson.id,
            "text": lesson.text,
            "status": lesson.status,
            "origin": lesson.origin,
            "feedback_id": lesson.feedback_id,
            "superseded_by": lesson.superseded_by_id,
            "created_at": lesson.created_at.isoformat(timespec="seconds"),
        }
        for lesson in _store(ctx).lessons(program, include_inactive=show_all)
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print("No rules yet. Rate an answer with a critique, or add one: minetune lessons add TEXT")
        return
    table = Table("id", "rule", "status", "origin", "from feedback")
    for row in rows:
        table.add_row(
            str(row["id"]), row["text"], row["status"], row["origin"], str(row["feedback_id"] or "—")
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


@app.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@program_option
@model_option
@click.option(
    "--assistant-name", help="The persona's name in the transcripts (default: whoever speaks second)."
)
@click.option("--no-llm", is_flag=True, help="Use only the plain 'Name: text' parser and a template prompt.")
@click.pass_context
def bootstrap(
    ctx: click.Context,
    files: tuple[Path, ...],
    program: str,
    model: str | None,
    assistant_name: str | None,
    no_llm: bool,
) -> None:
    """Bootstrap a persona from conversation samples FILES (text, markdown or PDF).

    User/assistant pairs are extracted (LLM-assisted, with a parser fallback for "Name: text"
    transcripts), categorised, stored as 5-star demo candidates, and an enhanced system prompt
    becomes a new version.
    """
    from minetune.learn.persona import bootstrap as run_bootstrap

    settings = _settings(ctx, model)
    store = _store(ctx)
    chat_model = None
    if not no_llm:
        from minetune.models import resolve_model

        chat_model = resolve_model(settings, model or store.active_version(program).model_spec)
    report = run_bootstrap(store, program, list(files), chat_model, assistant_name=assistant_name)
    categories = ", ".join(f"{k} {v}" for k, v in report.categories.items() if v)
    out.print(
        f"Bootstrapped {program} v{report.version} from {len(report.files)} file(s): {report.pairs} pairs "
        f"({categories}); extraction: {report.method}, prompt: {report.prompt_method}",
        highlight=False,
    )
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)


@app.command()
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
    """Re-optimize a program now: rebuild its demo index from all rated data (optionally run DSPy)."""
    from minetune.learn.reoptimize import Learner

    settings = _settings(ctx, model)
    store = _store(ctx)
    report = Learner(store, settings, program).rebuild()
    out.print(f"Demo index rebuilt: {report.demo_candidates} accepted answers ({report.elapsed_ms:.0f} ms).")
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


# -- portable bundles --------------------------------------------------------------------------


@app.group("bundle")
def bundle_app() -> None:
    """Move a program to another machine: versions, lessons, rated data and adapters in one zip."""


def _bundle_counts(counts: dict[str, int]) -> str:
    keys = (
        "versions", "lessons", "conversations", "turns", "attempts", "feedback", "embeddings",
        "adapter_records", "adapters",
    )
    names = {"adapter_records": "adapter records", "adapters": "adapter directories"}
    return ", ".join(f"{counts.get(k, 0)} {names.get(k, k)}" for k in keys)


@bundle_app.command("export")
@click.argument("program")
@click.option(
    "--out",
    "-o",
    "out_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Bundle file to write (a zip; replaced if it exists).",
)
@click.option("--with-adapters", is_flag=True, help="Include the adapter directories the versions use.")
@click.pass_context
def bundle_export(ctx: click.Context, program: str, out_file: Path, with_adapters: bool) -> None:
    """Export PROGRAM to a portable bundle (see docs/bundle-format.md)."""
    from minetune.io.bundle import export_bundle

    report = export_bundle(
        _store(ctx), program, out_file, with_adapters=with_adapters, settings=_settings(ctx)
    )
    out.print(
        f"Exported {report.program} (v{report.active_version} active) to {report.path}: "
        + _bundle_counts(report.counts),
        highlight=False,
    )


@bundle_app.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--as", "name", metavar="NAME", help="Import under this program name.")
@model_option
@click.pass_context
def bundle_import(ctx: click.Context, file: Path, name: str | None, model: str | None) -> None:
    """Import a bundle as a new program, all or nothing; --model sets the model spec on a new version."""
    from minetune.io.bundle import import_bundle

    settings = _settings(ctx)
    report = import_bundle(_store(ctx), file, settings=settings, name=name, model=model)
    out.print(
        f"Imported {report.program} (v{report.active_version} active) from {report.path}: "
        + _bundle_counts(report.counts),
        highlight=False,
    )
    for adapter, directory in report.adapter_dirs.items():
        out.print(f"  adapter {adapter} → {directory}", highlight=False)


# -- hosted fine-tuning ------------------------------------------------------------------------

FINETUNE_HELP = """Hosted fine-tuning through an OpenAI-compatible fine-tuning API.

OpenAI closes fine-tuning to new jobs on 6 January 2027. Local LoRA training on your own machine
(`minetune train`) is the default path; use these commands when you want a provider to train a
hosted model. The provider is MINETUNE_FINETUNE_BASE_URL (default https://api.openai.com/v1) and
the key is OPENAI_API_KEY, which is never stored or printed. Prices (USD per million training
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
threshold_option = click.option(
    "--threshold", type=click.IntRange(1, 5), default=4, show_default=True, help="Stars that accept answers."
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


@app.group("finetune", help=FINETUNE_HELP)
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


IMPORT_LISTED_SKIPS = 20


@app.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@program_option
@click.option(
    "--format",
    "-f",
    "format",
    help="chatgpt, openai-chat, openai-dpo, sharegpt, alpaca, capture-md or csv (default: detected).",
)
@model_option
@click.option("--no-learn", is_flag=True, help="Do not rebuild demos and lessons after importing.")
@click.option("--verbose", "-v", is_flag=True, help="List every skipped item as it is met.")
@click.pass_context
def import_cmd(
    ctx: click.Context,
    path: Path,
    program: str,
    format: str | None,
    model: str | None,
    no_learn: bool,
    verbose: bool,
) -> None:
    """Import history from PATH: a ChatGPT export (zip or folder), OpenAI chat or DPO JSONL,
    ShareGPT, Alpaca, capture markdown, or CSV with prompt/response[/rating/critique] columns.

    Each file is imported all or nothing, and only once; imported ratings then rebuild the
    program's demos (and become lessons when a model is configured).
    """
    from minetune.io.importers import import_file

    def show(item: Any) -> None:
        out.print(f"  skipped {item.where}: {item.reason}", markup=False, highlight=False)

    settings = _settings(ctx, model)
    report = import_file(
        _store(ctx),
        settings,
        path,
        program=program,
        format=format,
        learn=not no_learn,
        model=model or (ctx.find_root().obj or {}).get("model"),
        on_skip=show if verbose else None,
    )
    if report.already_imported:
        out.print(f"Already imported {path} into {program}; nothing added.", highlight=False)
        return
    out.print(
        f"Imported {path} ({report.format}) into {program}: {report.conversations} conversations, "
        f"{report.turns} turns, {report.attempts} answers, {report.ratings} ratings "
        f"({report.critiques} with critique), {report.skipped} skipped · {report.elapsed_s:.1f} s",
        highlight=False,
    )
    if report.skipped and not verbose:
        for item in report.skipped_items[:IMPORT_LISTED_SKIPS]:
            show(item)
        if report.skipped > IMPORT_LISTED_SKIPS:
            out.print(f"  … {report.skipped - IMPORT_LISTED_SKIPS} more (--verbose lists all)")
    if report.skipped:
        reasons = ", ".join(f"{reason} {n}" for reason, n in report.skipped_by_reason.most_common())
        out.print(f"skipped by reason: {reasons}", markup=False, highlight=False)
    if report.demo_candidates is not None:
        out.print(f"Demo index rebuilt: {report.demo_candidates} accepted answers.")
    for note in report.notes:
        out.print(note, markup=False, highlight=False)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)


# -- local LoRA training, adapters, forgetting ------------------------------------------------------

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
    from minetune.train.lora import TrainConfig

    fields = {
        "epochs": opts.get("epochs"),
        "max_steps": opts.get("steps"),
        "learning_rate": opts.get("lr"),
        "batch_size": opts.get("batch_size"),
        "rank": opts.get("rank"),
        "max_length": opts.get("max_length"),
        "threads": opts.get("threads"),
        "engine": opts.get("engine"),
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
        out.print(
            f"[green]Adapter {adapter.id}[/] ({job.method.upper()}, {len(job.example_attempt_ids or [])} "
            f"answers{loss}) → v{outcome.version} ({state}) · {adapter.path}",
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


def _run_training(call: Any, title: str) -> Any:
    """Run a training call with a progress bar; Ctrl-C twice interrupts at once."""
    with _TrainDisplay(title) as display:
        try:
            return call(display)
        except KeyboardInterrupt:
            display.progress.stop()
            err.print("Interrupted; the previous adapter stays active. `minetune train jobs` shows the job.")
            raise SystemExit(130) from None


@app.group("train", invoke_without_command=True, help=TRAIN_HELP)
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
@threshold_option
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
    threshold: int,
    **opts: Any,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    settings, store = _settings(ctx), _store(ctx)
    if retrain_tainted:
        from minetune.train.adapters import retrain_tainted as retrain

        given = any(v is not None for v in opts.values())
        explicit = ctx.get_parameter_source("program") is not click.core.ParameterSource.DEFAULT
        results = _run_training(
            lambda show: retrain(
                store,
                settings,
                program if explicit else None,
                config=_train_config(**opts) if given else None,
                on_progress=show,
            ),
            "retrain",
        )
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
        from minetune.train.lora import resume

        outcome = _run_training(lambda show: resume(store, settings, resume_job, on_progress=show), "resume")
    else:
        from minetune.train.lora import train

        outcome = _run_training(
            lambda show: train(
                store,
                settings,
                program,
                method=method,
                base=base,
                config=_train_config(**opts),
                domain=domain,
                continue_active=continue_active,
                activate=not no_activate,
                threshold=threshold,
                on_progress=show,
            ),
            f"{program} {method}",
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
        train=train_config,
    )
    settings, store = _settings(ctx), _store(ctx)
    report = _run_training(
        lambda show: update(store, settings, program, config, force=force, on_progress=show),
        f"{program} update",
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
    from minetune.train.continual import ContinualConfig, buffer

    out.print(buffer(_store(ctx), program, ContinualConfig(threshold=every)).summary(), highlight=False)


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


@app.group("adapter")
def adapter_app() -> None:
    """List, create, switch and retire LoRA adapters (one per domain if you like)."""


@adapter_app.command("list")
@click.option("--program", "-p", help="Only this program (default: all).")
@click.option("--all", "show_all", is_flag=True, help="Include retired adapters.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def adapter_list(ctx: click.Context, program: str | None, show_all: bool, as_json: bool) -> None:
    """List adapters: domain, method, base model, parent, lineage size, state."""
    from minetune.train.adapters import list_adapters

    views = list_adapters(_store(ctx), program, include_retired=show_all)
    if as_json:
        rows = [
            {
                "id": v.adapter.id,
                "program": v.program,
                "domain": v.adapter.domain,
                "method": v.adapter.method,
                "base_model": v.adapter.base_model,
                "parent": v.adapter.parent_id,
                "replaces": v.adapter.replaces_id,
                "status": v.adapter.status,
                "active": v.active,
                "tainted": v.tainted,
                "taint_reason": v.adapter.taint_reason,
                "examples": len(v.adapter.example_attempt_ids or []),
                "lineage": len(v.adapter.lineage_attempt_ids or []),
                "path": v.adapter.path,
                "created_at": v.adapter.created_at.isoformat(),
            }
            for v in views
        ]
        print(json.dumps(rows, indent=2))
        return
    if not views:
        out.print("No adapters yet. Train one with `minetune train` or `minetune adapter create DOMAIN`.")
        return
    table = Table("id", "program", "domain", "method", "base model", "parent", "answers", "state", "created")
    for v in views:
        a = v.adapter
        state = a.status + (" · active" if v.active else "") + (" · [red]tainted[/]" if v.tainted else "")
        table.add_row(
            str(a.id),
            v.program,
            a.domain,
            a.method,
            a.base_model,
            str(a.parent_id or "—"),
            str(len(a.lineage_attempt_ids or [])),
            state,
            f"{a.created_at:%Y-%m-%d %H:%M}",
        )
    out.print(table)


@adapter_app.command("create")
@click.argument("domain")
@program_option
@click.option("--method", type=click.Choice(["sft", "dpo", "kto", "auto"]), default="auto", show_default=True)
@click.option("--base", metavar="SPEC", help="Base model: hf:DIR (default: the program's model).")
@click.option("--since", metavar="DATE", help="Only examples from this date on.")
@click.option("--until", metavar="DATE", help="Only examples before this date.")
@click.option("--conversation", "conversations", type=int, multiple=True, help="Only these conversations.")
@click.option("--activate", is_flag=True, help="Switch to the new adapter when it is ready.")
@threshold_option
@_training_options
@click.pass_context
def adapter_create(
    ctx: click.Context,
    domain: str,
    program: str,
    method: str,
    base: str | None,
    since: str | None,
    until: str | None,
    conversations: tuple[int, ...],
    activate: bool,
    threshold: int,
    **opts: Any,
) -> None:
    """Train a new adapter for DOMAIN from a slice of the program's examples."""
    from minetune.train.adapters import create, parse_date
    from minetune.train.lora import Selection

    selection = Selection(
        parse_date(since) if since else None, parse_date(until) if until else None, tuple(conversations)
    )
    settings, store = _settings(ctx), _store(ctx)
    outcome = _run_training(
        lambda show: create(
            store,
            settings,
            program,
            domain,
            method=method,
            selection=selection,
            base=base,
            config=_train_config(**opts),
            activate=activate,
            threshold=threshold,
            on_progress=show,
        ),
        f"{program} {domain}",
    )
    _print_outcome(outcome)
    if outcome.status == "cancelled":
        raise SystemExit(130)


@adapter_app.command("switch")
@click.argument("target")
@program_option
@click.pass_context
def adapter_switch(ctx: click.Context, target: str, program: str) -> None:
    """Serve TARGET: an adapter id, a domain (its newest adapter), `route` (each message to its
    domain's adapter, or the base model) or `base` (no adapter)."""
    from minetune.train.adapters import switch

    version = switch(_store(ctx), _settings(ctx), program, target)
    out.print(
        f"{program} v{version.number} is active: {version.model_spec or '(default model)'}",
        highlight=False,
        soft_wrap=True,
    )


@adapter_app.command("retire")
@click.argument("adapter_id", type=int)
@program_option
@click.option("--force", is_flag=True, help="Retire the active adapter too (falls back to the base model).")
@click.pass_context
def adapter_retire(ctx: click.Context, adapter_id: int, program: str, force: bool) -> None:
    """Retire an adapter; versions that use it keep working, it is no longer offered."""
    from minetune.train.adapters import retire

    adapter = retire(_store(ctx), _settings(ctx), program, adapter_id, force=force)
    out.print(f"Adapter {adapter.id} retired.")


@adapter_app.command("route")
@click.argument("message")
@program_option
@click.option("--min-similarity", type=float, default=0.35, show_default=True)
@click.pass_context
def adapter_route(ctx: click.Context, message: str, program: str, min_similarity: float) -> None:
    """Show which domain adapter MESSAGE would be routed to (or the base model)."""
    from minetune.train.adapters import route

    decision = route(_store(ctx), _settings(ctx), program, message, min_similarity=min_similarity)
    for domain, sim in sorted(decision.scores.items(), key=lambda kv: -kv[1]):
        out.print(f"  {domain}: {sim:.3f}", highlight=False)
    if decision.adapter is None:
        out.print("→ the base model (no domain is similar enough)")
    else:
        out.print(f"→ adapter {decision.adapter.id} ({decision.adapter.domain})", highlight=False)


@app.command()
@click.argument("turns", type=int, nargs=-1)
@click.option("--conversation", "conversations", type=int, multiple=True, help="Forget a whole conversation.")
@click.option("--before", metavar="DATE", help="Forget every turn before DATE (YYYY-MM-DD or ISO time).")
@click.option("--all", "everything", is_flag=True, help="Forget every conversation (of --program, or all).")
@click.option("--program", "-p", help="Limit --before/--all to this program.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to confirm --before/--all.")
@click.pass_context
def forget(
    ctx: click.Context,
    turns: tuple[int, ...],
    conversations: tuple[int, ...],
    before: str | None,
    everything: bool,
    program: str | None,
    yes: bool,
) -> None:
    """Forget TURN ids (or a conversation, everything before a date, or all): the data, its demo
    links, lessons learned from it and judge ratings are deleted, and adapters trained on it are
    marked tainted — rebuild them with `minetune train --retrain-tainted`."""
    from minetune.train.adapters import forget as do_forget
    from minetune.train.adapters import parse_date

    cutoff = parse_date(before) if before else None
    if (everything or cutoff) and not yes:
        what = "EVERY conversation" if everything else f"every turn before {before}"
        scope = f"of {program}" if program else "of all programs"
        if not click.confirm(f"Forget {what} {scope}? This cannot be undone", default=False):
            out.print("Nothing forgotten.")
            return
    result = do_forget(
        _store(ctx),
        turns=turns,
        conversations=conversations,
        before=cutoff,
        everything=everything,
        program=program,
    )
    out.print(
        f"Forgot {result.turns} turn(s), {result.attempts} answer(s), {result.feedback} rating(s) in "
        f"{result.conversations} removed conversation(s)"
        + (f", {result.imports} import record(s)" if result.imports else "")
        + ".",
        highlight=False,
    )
    if result.demo_links_removed:
        out.print(f"Removed {result.demo_links_removed} demo link(s) to the forgotten answers.")
    if result.retired_lessons:
        versions = ", ".join(f"{p} v{n}" for p, n in result.new_versions.items())
        out.print(
            f"Retired {len(result.retired_lessons)} lesson(s) learned from them ({versions}).",
            highlight=False,
        )
    if result.judges_reset:
        out.print(f"Reset the personal judge of {', '.join(result.judges_reset)} (rebuilt on next use).")
    if result.tainted_adapters:
        ids = ", ".join(str(a) for a in result.tainted_adapters)
        out.print(
            f"[yellow]Tainted adapter(s) {ids}[/]: they learned from forgotten data. "
            "Rebuild them with `minetune train --retrain-tainted`.",
            highlight=False,
        )
    for name, adapter_id in result.active_tainted.items():
        err.print(
            f"[yellow]warning:[/] {name} still answers with tainted adapter {adapter_id}; retrain it, or "
            f"`minetune adapter switch base -p {name}`.",
            highlight=False,
        )


# -- serve and users -----------------------------------------------------------------------


@app.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind (non-loopback needs tokens)."
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to bind.")
@click.option("--auth/--no-auth", "auth", default=None,
              help="Require tokens (default: when any token exists or the host is not loopback).")
@model_option
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, auth: bool | None, model: str | None) -> None:
    """Serve the web app and the OpenAI-compatible learning proxy.

    \b
    Web UI:  http://127.0.0.1:8000/
    Proxy:   base_url=http://127.0.0.1:8000/v1, model="minetune/<program>"
    Rate:    POST /v1/feedback {"response_id": ..., "stars": 1-5, "critique": "..."}
    """
    import uvicorn

    from minetune.server.app import create_app

    settings = _settings(ctx, model)
    server_app = create_app(settings, host=host, require_auth=auth, warm_up=True)
    mode = "tokens required" if server_app.state.minetune.auth_required else "single local user, no login"
    err.print(f"minetune serving on http://{host}:{port}/ ({mode}); proxy at /v1", highlight=False)
    uvicorn.run(server_app, host=host, port=port, log_level="warning")


@app.group("user")
def user_app() -> None:
    """Users of a shared server and their tokens (stored hashed; shown once)."""


def _database(ctx: click.Context) -> Any:
    from minetune.store.db import Database, open_engine

    return Database(open_engine(_settings(ctx).resolved_database_url))


@user_app.command("add")
@click.argument("name")
@click.option("--label", default="", help="A note on what the token is for.")
@click.pass_context
def user_add(ctx: click.Context, name: str, label: str) -> None:
    """Create user NAME (if new) and print a new token for it. Once a token exists, serve asks for one."""
    from minetune.store.users import issue_token

    db = _database(ctx)
    try:
        token = issue_token(db, name, label)
    finally:
        db.close()
    err.print(f"New token for {name} (shown once; keep it secret):", highlight=False)
    click.echo(token)


@user_app.command("list")
@click.pass_context
def user_list(ctx: click.Context) -> None:
    """List users and how many tokens each has."""
    from minetune.store.users import list_users

    db = _database(ctx)
    try:
        users = list_users(db)
    finally:
        db.close()
    table = Table("user", "tokens", "created")
    for info in users:
        table.add_row(info.name, str(info.tokens), info.created_at.strftime("%Y-%m-%d %H:%M"))
    out.print(table)


@user_app.command("revoke")
@click.argument("name")
@click.pass_context
def user_revoke(ctx: click.Context, name: str) -> None:
    """Delete every token of NAME (its data stays)."""
    from minetune.store.users import revoke_tokens

    db = _database(ctx)
    try:
        count = revoke_tokens(db, name)
    finally:
        db.close()
    out.print(f"Revoked {count} token(s) of {name}.")


def main() -> None:
    """Console-script entry point: user-facing errors become one line and exit code 1."""
    try:
        app(standalone_mode=True)
    except MinetuneError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
