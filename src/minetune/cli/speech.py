"""``transcribe``, ``correct``, ``vocab`` and ``speech``: speech-to-text that learns your words
(see :mod:`minetune.app.speech`)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from minetune.cli.common import _settings, _store, out

program_option = click.option(
    "--program", "-p", default="speech", show_default=True, help="The speech program (created on first use)."
)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@program_option
@click.option("--model", "-m", "model", help="Speech model spec (kept by a program that has none yet).")
@click.pass_context
def transcribe(ctx: click.Context, files: tuple[Path, ...], program: str, model: str | None) -> None:
    """Transcribe audio FILES (wav, flac, ogg); each transcript is stored with its audio and its id
    printed, for `minetune correct ID TEXT`."""
    from minetune.app import speech

    results = speech.transcribe(_store(ctx), _settings(ctx), list(files), program=program, model=model)
    for t in results:
        out.print(
            f"transcript {t.attempt_id}  {escape(t.file)}  {t.seconds:.1f} s audio, "
            f"{t.latency_ms / 1000:.2f} s, v{t.version}",
            highlight=False,
        )
        out.print(f"  {escape(t.text)}", highlight=False)


@click.command()
@click.argument("transcript_id", type=int)
@click.argument("text", nargs=-1, required=True)
@click.pass_context
def correct(ctx: click.Context, transcript_id: int, text: tuple[str, ...]) -> None:
    """Correct transcript TRANSCRIPT_ID to TEXT: the corrected text is kept as the preferred answer
    and the words that were wrong join the vocabulary."""
    from minetune.app import speech

    c = speech.correct(_store(ctx), transcript_id, " ".join(text))
    if not c.changes:
        out.print(f"Transcript {transcript_id} was right: rated 5 stars.")
        return
    out.print(
        f"Corrected transcript {transcript_id} (word error rate {c.wer:.0%}); "
        f"corrected answer {c.corrected_id}.",
        highlight=False,
    )
    for change in c.changes:
        out.print(
            f"  heard {escape(repr(change['heard']))} -> said {escape(repr(change['said']))}", highlight=False
        )
    if c.learned:
        out.print(f"Vocabulary learned (v{c.version}): {escape(', '.join(c.learned))}", highlight=False)


@click.group("vocab")
def vocab_app() -> None:
    """The learned vocabulary: the words your corrections taught, sent as Whisper's prompt."""


@vocab_app.command("list")
@program_option
@click.pass_context
def vocab_list(ctx: click.Context, program: str) -> None:
    """List the vocabulary (id, term, where it came from)."""
    from minetune.app import speech

    terms = speech.vocabulary(_store(ctx), program)
    if not terms:
        out.print("No vocabulary yet: correct a transcript, or `minetune vocab add TERM`.")
        return
    for lesson in terms:
        origin = f"correction (feedback {lesson.feedback_id})" if lesson.feedback_id else "added by hand"
        out.print(escape(f"{lesson.id}  {lesson.text}  [{origin}]"), highlight=False)


@vocab_app.command("add")
@click.argument("terms", nargs=-1, required=True)
@program_option
@click.pass_context
def vocab_add(ctx: click.Context, terms: tuple[str, ...], program: str) -> None:
    """Add TERMS to the vocabulary (a new program version)."""
    from minetune.app import speech

    version = speech.add_terms(_store(ctx), list(terms), program)
    out.print(f"Vocabulary updated: {program} v{version.number}.", highlight=False)


@vocab_app.command("remove")
@click.argument("terms", nargs=-1, required=True)
@program_option
@click.pass_context
def vocab_remove(ctx: click.Context, terms: tuple[str, ...], program: str) -> None:
    """Remove TERMS (by id or text) from the vocabulary (a new program version)."""
    from minetune.app import speech

    version = speech.remove_terms(_store(ctx), list(terms), program)
    out.print(f"Vocabulary updated: {program} v{version.number}.", highlight=False)


COMMANDS = (transcribe, correct, vocab_app)
