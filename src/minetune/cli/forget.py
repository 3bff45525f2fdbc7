"""``forget``: erase turns, conversations or everything before a date (see :mod:`minetune.app.forget`)."""

from __future__ import annotations

import click
from rich.markup import escape

from minetune.cli.common import _settings, _store, err, out


def _ids(values: list[int]) -> str:
    return ", ".join(str(v) for v in values)


@click.command()
@click.argument("turns", type=int, nargs=-1)
@click.option("--conversation", "conversations", type=int, multiple=True, help="Forget a whole conversation.")
@click.option(
    "--import",
    "imports",
    type=int,
    multiple=True,
    metavar="ID",
    help="Forget everything one `minetune import` brought (its id is printed by the import).",
)
@click.option("--before", metavar="DATE", help="Forget every turn before DATE (YYYY-MM-DD or ISO time).")
@click.option("--all", "everything", is_flag=True, help="Forget every conversation (of --program, or all).")
@click.option("--program", "-p", help="Limit --before/--all to this program.")
@click.option("--dry-run", is_flag=True, help="List every artifact that would be touched; change nothing.")
@click.option("--retrain", is_flag=True, help="Retrain tainted adapters now and delete their old weights.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to confirm --before/--all.")
@click.pass_context
def forget(
    ctx: click.Context,
    turns: tuple[int, ...],
    conversations: tuple[int, ...],
    imports: tuple[int, ...],
    before: str | None,
    everything: bool,
    program: str | None,
    dry_run: bool,
    retrain: bool,
    yes: bool,
) -> None:
    """Forget TURN ids (or a conversation, an import, everything before a date, or all), and remove their
    text from every place it was copied to: later prompts, titles, pinned demos, persona prompts,
    lessons, the judge, job folders and hosted uploads. Adapters trained on it are tainted
    (--retrain rebuilds them now; else `minetune train --retrain-tainted`). What cannot be
    erased is printed."""
    from minetune.app.forget import forget as do_forget
    from minetune.train.adapters import parse_date

    cutoff = parse_date(before) if before else None
    if (everything or cutoff) and not yes and not dry_run:
        what = "EVERY conversation" if everything else f"every turn before {before}"
        scope = f"of {program}" if program else "of all programs"
        if not click.confirm(f"Forget {what} {scope}? This cannot be undone", default=False):
            out.print("Nothing forgotten.")
            return
    r = do_forget(
        _store(ctx),
        _settings(ctx),
        turns=turns,
        conversations=conversations,
        imports=imports,
        before=cutoff,
        everything=everything,
        program=program,
        dry_run=dry_run,
        retrain=retrain,
    )
    verb = "Would forget" if dry_run else "Forgot"
    out.print(
        f"{verb} {r.turns} turn(s), {r.attempts} answer(s), {r.feedback} rating(s) in "
        f"{r.conversations} removed conversation(s)"
        + (f", {r.imports} import record(s)" if r.imports else "")
        + ".",
        highlight=False,
    )
    would = "would be " if dry_run else ""
    lines: list[str] = []
    if r.turn_ids:
        lines.append(f"turns deleted: {_ids(r.turn_ids)}")
    if r.conversation_ids:
        lines.append(f"conversations deleted: {_ids(r.conversation_ids)}")
    if r.attempts_redacted:
        lines.append(f"later prompts redacted: {len(r.attempts_redacted)} ({_ids(r.attempts_redacted)})")
    if r.comparisons_redacted:
        lines.append(f"comparisons redacted: {_ids(r.comparisons_redacted)}")
    if r.titles_changed:
        lines.append(f"conversations re-titled: {_ids(r.titles_changed)}")
    for name, numbers in r.versions_redacted.items():
        lines.append(f"versions of {name} redacted in place: {_ids(numbers)}")
    for name, numbers in r.persona_rebuilt.items():
        lines.append(f"persona prompt of {name} rebuilt without the samples: versions {_ids(numbers)}")
    if r.pinned_demos_removed:
        lines.append(f"pinned demo copies removed: {r.pinned_demos_removed}")
    if r.demo_links_removed:
        lines.append(f"demo links removed: {r.demo_links_removed}")
    if r.redacted_lessons:
        lines.append(f"lessons retired and their text erased: {_ids(r.redacted_lessons)}")
    for name, number in r.new_versions.items():
        lines.append(f"{name}: a new version without those lessons" + ("" if dry_run else f" (v{number})"))
    if r.judges_reset:
        lines.append(f"personal judge reset: {', '.join(r.judges_reset)}")
    if r.tainted_adapters:
        lines.append(f"adapters tainted: {_ids(r.tainted_adapters)}")
    for old, new in r.retrained.items():
        lines.append(f"adapter {old} retrained as adapter {new}; its weights deleted")
    for folder in r.job_folders:
        lines.append(f"job folder deleted: {folder}")
    if r.audio_files:
        lines.append(f"audio files deleted: {len(r.audio_files)}")
    if r.hosted_files:
        done = r.hosted_files_deleted if not dry_run else r.hosted_files
        lines.append(f"hosted files deleted at the provider: {', '.join(done) or 'none'}")
    for line in lines:
        prefix = "" if line.startswith("adapter ") else would
        out.print(f"  {prefix}{escape(line)}", highlight=False)
    if r.tainted_adapters and not r.retrained and not dry_run:
        out.print(
            f"[yellow]Tainted adapter(s) {_ids(r.tainted_adapters)}[/]: they learned from forgotten data. "
            "Rebuild them with `minetune train --retrain-tainted`.",
            highlight=False,
        )
    for name, adapter_id in r.active_tainted.items():
        if adapter_id in r.retrained:
            continue
        err.print(
            f"[yellow]warning:[/] {name} still answers with tainted adapter {adapter_id}; retrain it, or "
            f"`minetune adapter switch base -p {name}`.",
            highlight=False,
        )
    for limit in r.limits:
        out.print(f"[yellow]limit:[/] {escape(limit)}", highlight=False)
    if dry_run:
        out.print("Dry run: nothing was changed.")
    elif r.scrub:
        out.print(f"Database scrubbed ({escape(r.scrub)}).", highlight=False)
