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


@click.group("speech")
def speech_app() -> None:
    """The weight layer and datasets of speech: incremental Whisper adapters, export, import."""


@speech_app.command("update")
@program_option
@click.option("--steps", type=click.IntRange(1, 100_000), default=40, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=3e-3, show_default=True)
@click.option(
    "--max-wer-rise", type=float, default=0.0, show_default=True, help="Held-out WER rise the gate allows."
)
@click.pass_context
def speech_update(
    ctx: click.Context, program: str, steps: int, learning_rate: float, max_wer_rise: float
) -> None:
    """Train the local Whisper's LoRA adapter on the clips corrected since the last update (with
    replay of older ones); kept only if held-out WER and retention do not get worse."""
    from minetune.app import speech
    from minetune.train.whisper import WhisperGate, WhisperLoraConfig

    r = speech.update_adapter(
        _store(ctx),
        _settings(ctx),
        program,
        config=WhisperLoraConfig(steps=steps, learning_rate=learning_rate),
        gate=WhisperGate(max_wer_rise=max_wer_rise, max_retention_rise=max_wer_rise),
    )
    m = r.metrics
    out.print(
        f"{r.new_clips} new clip(s), {r.replayed} replayed, {r.held_out} held out; loss on the new clips "
        f"{m['new_loss_before']:.3f} -> {m['new_loss_after']:.3f} in {m['seconds']:.1f} s",
        highlight=False,
    )
    if r.accepted:
        out.print(
            f"Kept: adapter {r.adapter_id}, {program} v{r.version} ({escape(r.reason)}).", highlight=False
        )
    else:
        out.print(
            f"Refused by the gate: {escape(r.reason)}. The previous model keeps serving.", highlight=False
        )


@speech_app.command("export")
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@program_option
@click.pass_context
def speech_export(ctx: click.Context, out_dir: Path, program: str) -> None:
    """Write the corrected clips as a Hugging Face audiofolder dataset (metadata.jsonl + clips/)."""
    from minetune.app import speech

    count = speech.export_dataset(_store(ctx), _settings(ctx), out_dir, program)
    out.print(f"Exported {count} clip(s) to {escape(str(out_dir))}.", highlight=False)


@speech_app.command("import")
@click.argument("data_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@program_option
@click.pass_context
def speech_import(ctx: click.Context, data_dir: Path, program: str) -> None:
    """Import an audiofolder dataset (metadata.jsonl with file_name and transcription)."""
    from minetune.app import speech

    ids = speech.import_dataset(_store(ctx), _settings(ctx), data_dir, program)
    out.print(f"Imported {len(ids)} clip(s) as transcripts {', '.join(map(str, ids))}.", highlight=False)


COMMANDS = (transcribe, correct, vocab_app, speech_app)
