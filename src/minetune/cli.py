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
err = Console(stderr=True)

MODEL_HELP = (
    "Model spec, e.g. ollama:llama3.2, openai:gpt-4o-mini, "
    "openai-compatible:NAME@http://127.0.0.1:8080/v1, hf:./my-model."
)
model_option = click.option("--model", "model", metavar="SPEC", help=MODEL_HELP)
program_option = click.option("--program", "-p", "program", default="default", show_default=True,
                              help="Program name.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(path_type=Path, file_okay=False),
              help="Data folder (default: $MINETUNE_HOME or ~/.minetune).")
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
@click.pass_context
def chat(ctx: click.Context, program: str, model: str | None) -> None:
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
                if not _chat_line(session, line.strip()):
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


def _chat_line(session: Any, line: str) -> bool:
    """Handle one input line; False means quit."""
    if not line:
        return True
    if not line.startswith("/"):
        _respond(lambda on_delta: session.send(line, on_delta=on_delta))
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
    elif command == "/retry":
        _respond(lambda on_delta: session.retry(rest or None, on_delta=on_delta))
    elif command == "/new":
        session.new_conversation()
        out.print("Started a new conversation.")
    else:
        raise MinetuneError(f"Unknown command {command}; type /help for the list.")
    return True


def _respond(call: Any) -> None:
    out.print("[bold blue]ai>[/] ", end="")
    response = call(lambda delta: out.print(delta, end="", markup=False, highlight=False, soft_wrap=True))
    out.print()
    out.print(
        f"[dim]attempt {response.number} · {response.model} · v{response.version} · "
        f"{response.latency_ms / 1000:.1f}s · /rate 1-5 [critique], /retry[/]"
    )


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


EXPORT_FORMATS = ("capture-md",)


@app.command()
@click.option("--format", "-f", "format", required=True, help="One of: " + ", ".join(EXPORT_FORMATS))
@click.option("--out", "-o", "out_file", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="File to write.")
@click.option("--program", "-p", help="Only this program (default: all).")
@click.pass_context
def export(ctx: click.Context, format: str, out_file: Path, program: str | None) -> None:
    """Export stored data; capture-md writes praised exchanges in the capture markdown layout."""
    if format not in EXPORT_FORMATS:
        raise MinetuneError(f"Unknown export format {format!r}; choose one of: {', '.join(EXPORT_FORMATS)}.")
    from minetune.io.capture_md import write_captures

    count = write_captures(_store(ctx).captures(program), out_file)
    out.print(f"Wrote {count} capture(s) to {out_file}")


# -- programs --------------------------------------------------------------------------------


@program_app.command("create")
@click.argument("name")
@click.option("--instructions", help="System instructions.")
@click.option("--instructions-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Read instructions from a file.")
@model_option
@click.option("--description", default="", help="A short description.")
@click.pass_context
def program_create(
    ctx: click.Context, name: str, instructions: str | None, instructions_file: Path | None,
    model: str | None, description: str,
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
    """Show a version: instructions, lessons, demo policy, model, and the rendered system prompt."""
    from minetune.program import render_system_prompt, version_fields

    store = _store(ctx)
    v = store.version(name, version) if version else store.active_version(name)
    fields = version_fields(v)
    active = store.program(name).active_version_id == v.id
    out.print(
        f"[bold]{name}[/] v{v.number}{' (active)' if active else ''} · created {v.created_at:%Y-%m-%d %H:%M}"
        + (f" · {v.note}" if v.note else "")
    )
    out.print(f"model: {fields['model_spec'] or '(default: MINETUNE_MODEL or auto-detect)'}")
    out.print(f"adapter: {fields['adapter'] or '(none)'}")
    out.print(f"lessons: {len(fields['lessons'])}  demo policy: {json.dumps(fields['demo_policy'])}")
    out.rule("system prompt")
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
