"""Chatting in the terminal (``chat`` and its /commands) and rating outside chat (``rate``)."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.markup import escape

from minetune.cli.common import _settings, _store, err, model_option, out, program_option
from minetune.errors import MinetuneError

CHAT_HELP = """Commands:
  /rate N [critique]   rate the last answer 1-5, optionally with a critique
  /retry [critique]    answer again with your rating and critique folded in
  /new                 start a new conversation
  /help                show this help
  /quit                leave (Ctrl-D works too)
Anything else is sent as a message. Praise such as "perfect" or "good one" is noticed."""


@click.command()
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
            f"[bold]minetune[/] · program [cyan]{escape(session.program)}[/] v{version.number} · "
            f"model [cyan]{escape(session.model(version).spec)}[/] · /help for commands",
            highlight=False,
        )
        lines = _input_lines(interactive)
        for line in lines:
            try:
                if not _chat_line(session, line.strip(), best_of):
                    break
            except MinetuneError as exc:
                err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
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
                f"[green]★ praise noticed ({escape(repr(session.last_praise))}): "
                "the previous answer was captured.[/]",
                highlight=False,
            )
        return True
    command, _, rest = line.partition(" ")
    rest = rest.strip()
    if command in ("/quit", "/exit", "/q"):
        return False
    if command == "/help":
        out.print(CHAT_HELP, markup=False, highlight=False)
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
        out.print(f"[magenta]learned:[/] {escape(report.rule)} (now v{report.version})", highlight=False)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False)


def _respond(call: Any) -> None:
    out.print("[bold blue]ai>[/] ", end="")
    response = call(lambda delta: out.print(delta, end="", markup=False, highlight=False, soft_wrap=True))
    out.print()
    out.print(
        f"[dim]attempt {response.number} · {escape(str(response.model))} · v{response.version} · "
        f"{response.latency_ms / 1000:.1f}s · /rate 1-5 {escape('[critique]')}, /retry[/]",
        highlight=False,
    )
    if response.note:
        out.print(f"[dim]{escape(response.note)}[/]", highlight=False)


# -- rating outside chat --------------------------------------------------------------------


@click.command()
@click.argument("stars")
@click.argument("critique", required=False)
@click.option("--attempt", type=int, help="Attempt id (default: the newest attempt).")
@click.pass_context
def rate(ctx: click.Context, stars: str, critique: str | None, attempt: int | None) -> None:
    """Rate a stored answer (the newest by default) STARS 1-5, with an optional CRITIQUE.

    Learns from it exactly as `/rate` in chat does: the demos are updated, and a critique becomes
    a rule in a new version when the program's model (or `reflection_model`) can be reached."""
    from minetune.feedback import parse_stars
    from minetune.loop import Session
    from minetune.store.exchanges import attempt_program

    value = parse_stars(stars)  # validate before touching the store
    settings = _settings(ctx)
    store = _store(ctx)
    target = attempt if attempt is not None else store.latest_attempt_id()
    if target is None:
        raise MinetuneError("There is no stored answer to rate yet.")
    with Session(store, settings, attempt_program(store, target), settings.model) as session:
        session.rate(value, critique, attempt_id=target)
        out.print(f"Rated attempt {target}: {value}★")
        _print_learning(session.last_learning)
