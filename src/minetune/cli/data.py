"""Your stored data in and out: ``stats``, ``export`` (training data, captures) and ``import``."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from minetune.cli.common import (
    _settings,
    _stats,
    _store,
    err,
    model_option,
    out,
    program_option,
    threshold_option,
)
from minetune.errors import MinetuneError


@click.command()
@click.option("--program", "-p", help="Only this program (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def stats(ctx: click.Context, program: str | None, as_json: bool) -> None:
    """Turns, attempts, the star histogram, attempts-to-5★ and captures."""
    data = _stats(ctx, program)
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
    out.print(
        "mean score: per turn 1 / the attempts it took to reach 5★ (1 = first try, 0.5 = second, "
        "0 = never), averaged over all turns.",
        markup=False,
        highlight=False,
    )


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


@click.command()
@click.option("--format", "-f", "format", required=True, help="One of: " + ", ".join(EXPORT_FORMATS))
@click.option(
    "--out",
    "-o",
    "out_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    help="File to write ('-': standard output).",
)
@click.option("--program", "-p", help="Only this program (default: all).")
@click.option(
    "--split",
    "split_files",
    is_flag=True,
    help="Write FILE.train.jsonl and FILE.valid.jsonl (90/10, by turn).",
)
@threshold_option
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
    accepted at --threshold stars or more, or when praised. Every format imports back with
    `minetune import`. With `--out -` the data goes to standard output and the summary to stderr.
    """
    if format not in EXPORT_FORMATS:
        raise MinetuneError(f"Unknown export format {format!r}; choose one of: {', '.join(EXPORT_FORMATS)}.")
    to_stdout = str(out_file) == "-"
    if to_stdout and split_files:
        raise MinetuneError("--split writes two files; it cannot write to standard output (--out -).")
    report = err if to_stdout else out
    with tempfile.TemporaryDirectory(prefix="minetune-export-") as scratch:
        target = Path(scratch) / "export" if to_stdout else out_file
        if format == "capture-md":
            if split_files:
                raise MinetuneError("--split applies to the JSONL training formats, not capture-md.")
            from minetune.io.capture_md import write_captures

            count = write_captures(_store(ctx).captures(program), target)
            if to_stdout:
                _copy_to_stdout(target)
            where = "standard output" if to_stdout else str(out_file)
            report.print(f"Wrote {count} capture(s) to {where}", markup=False, highlight=False)
            return
        from minetune.train.datasets import export_dataset

        result = export_dataset(
            _store(ctx), format, target, program=program, split_files=split_files, threshold=threshold
        )
        if to_stdout:
            _copy_to_stdout(target)
    written = ", ".join(
        f"{result.counts[k]} to {'standard output' if to_stdout else path}"
        for k, path in result.files.items()
    )
    dataset = result.dataset
    extra = f" ({dataset.duplicates} duplicate(s) dropped)" if dataset.duplicates else ""
    report.print(
        f"Wrote {dataset.method.upper()} examples as {format}: {written}{extra}",
        markup=False,
        highlight=False,
    )
    if not dataset.eligibility.eligible:
        err.print(f"[yellow]note:[/] {escape(dataset.eligibility.summary())}", highlight=False)


def _copy_to_stdout(path: Path) -> None:
    stream = sys.stdout.buffer
    with path.open("rb") as fh:
        shutil.copyfileobj(fh, stream)
    stream.flush()


IMPORT_LISTED_SKIPS = 20


@click.command("import")
@click.argument("path", type=click.Path(path_type=Path, allow_dash=True))
@program_option
@click.option(
    "--format",
    "-f",
    "format",
    help="chatgpt, openai-chat, openai-dpo, trl-dpo, trl-kto, sharegpt, alpaca, capture-md or csv "
    "(default: detected).",
)
@model_option
@click.option("--no-learn", is_flag=True, help="Do not rebuild demos and lessons after importing.")
@click.option("--verbose", "-v", is_flag=True, help="List every skipped item as it is met.")
@click.option(
    "--max-element-mb",
    type=click.IntRange(1, 4096),
    default=32,
    show_default=True,
    help="Largest single record to read (a whole ChatGPT conversation, a JSONL line), in MiB.",
)
@click.pass_context
def import_cmd(
    ctx: click.Context,
    path: Path,
    program: str,
    format: str | None,
    model: str | None,
    no_learn: bool,
    verbose: bool,
    max_element_mb: int,
) -> None:
    """Import history from PATH ('-': standard input): a ChatGPT export (zip or folder), OpenAI
    chat or DPO JSONL, TRL DPO or KTO JSONL, ShareGPT, Alpaca, capture markdown, or CSV with
    prompt/response[/rating/critique] columns (every `minetune export` format). A --program that
    does not exist yet is created.

    Each file is imported all or nothing, and only once; imported ratings then rebuild the
    program's demos (and become lessons when a model is configured). Reads are bounded: a zip
    member that expands more than 200x, or a record over --max-element-mb, refuses the file.
    """
    from minetune.io.importers import ImportLimits, import_file

    def show(item: Any) -> None:
        out.print(f"  skipped {item.where}: {item.reason}", markup=False, highlight=False)

    settings = _settings(ctx, model)
    with tempfile.TemporaryDirectory(prefix="minetune-import-") as scratch:
        source = path
        if str(path) == "-":
            source = Path(scratch) / "stdin"
            with source.open("wb") as fh:
                shutil.copyfileobj(sys.stdin.buffer, fh)
        report = import_file(
            _store(ctx),
            settings,
            source,
            program=program,
            format=format,
            learn=not no_learn,
            model=model or (ctx.find_root().obj or {}).get("model"),
            on_skip=show if verbose else None,
            limits=ImportLimits(element_chars=max_element_mb << 20),
            create_program=True,
        )
    name = "standard input" if str(path) == "-" else str(path)
    if report.created_program:
        out.print(f"Created program {program} (it did not exist).", markup=False, highlight=False)
    if report.already_imported:
        out.print(f"Already imported {name} into {program}; nothing added.", markup=False, highlight=False)
        return
    if report.import_id is None:
        out.print(
            f"Nothing imported from {name} ({report.format}) into {program}: 0 conversations, "
            f"{report.skipped} skipped.",
            markup=False,
            highlight=False,
        )
    else:
        out.print(
            f"Imported {name} ({report.format}) into {program}: {report.conversations} conversations, "
            f"{report.turns} turns, {report.attempts} answers, {report.ratings} ratings "
            f"({report.critiques} with critique), {report.skipped} skipped · {report.elapsed_s:.1f} s"
            f" · import {report.import_id} (undo: minetune forget --import {report.import_id})",
            markup=False,
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
        out.print(
            f"Demo index rebuilt: {report.demo_candidates} demo candidates "
            "(each message's best accepted answer).",
            highlight=False,
        )
    for note in report.notes:
        out.print(note, markup=False, highlight=False)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False)
