"""``forget``: delete turns, conversations or everything before a date."""

from __future__ import annotations

import click

from minetune.cli.common import _store, err, out


@click.command()
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
