"""``minetune eval``: replay held-out rated prompts through two versions (or with and without the
adapter) and show B's win rate against A with a 95% Wilson interval."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from minetune.cli.common import _settings, _store, err, out, program_option


@click.command("eval")
@program_option
@click.option("--a", "arm_a", metavar="VERSION", help="Baseline version, e.g. v3.")
@click.option("--b", "arm_b", metavar="VERSION", help="Version to test against it, e.g. v5.")
@click.option(
    "--adapter",
    is_flag=True,
    help="Compare the active version without (A) and with (B) its LoRA adapter instead.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    help="Newest held-out rated prompts to replay.",
)
@click.option("--items", "show_items", is_flag=True, help="Also list every prompt and its winner.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (with every item).")
@click.pass_context
def eval_cmd(
    ctx: click.Context,
    program: str,
    arm_a: str | None,
    arm_b: str | None,
    adapter: bool,
    limit: int,
    show_items: bool,
    as_json: bool,
) -> None:
    """Did learning help? Replay rated prompts through A and B and score both answers.

    Held-out prompts are rated turns neither side learned from (not a pinned demo, not the source
    of a lesson, not in the adapter's training data). Each answer is scored by your personal judge
    (predicted stars) and against your accepted answer where there is one (exact and fuzzy
    match). The result is B's win rate over A (ties count half) with a 95% Wilson interval; it is
    stored and shown on the web app's Metrics page.

    \b
      minetune eval --program timmy --a v3 --b v5
      minetune eval --program timmy --adapter --limit 20 --json
    """
    from minetune.app import evaluate

    settings = _settings(ctx)
    store = _store(ctx)
    live = err.is_terminal and not as_json
    try:
        pair = evaluate.arms(store, program, arm_a, arm_b, adapter)

        def progress(done: int, total: int) -> None:
            if live:
                err.print(f"\r{done}/{total} prompts answered", end="", highlight=False)

        outcome = evaluate.run(store, settings, program, pair, limit=limit, on_progress=progress)
    finally:
        store.close()
    if live:
        err.print()
    if as_json:
        items = [_item_json(i) for i in outcome.report.items]
        print(json.dumps(outcome.run.as_dict() | {"items": items}, indent=2))
        return
    render(outcome.run)
    if show_items:
        out.print(items_table(outcome.report.items))


def _item_json(item: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return dict(asdict(item))


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def summary_table(run: Any) -> Table:
    """Both sides of a run in three columns (long model specs wrap, so it fits 80 columns)."""
    means = run.summary.get("means", {})
    table = Table(title=f"eval run {run.id}", title_justify="left")
    table.add_column("")
    table.add_column("A", overflow="fold")
    table.add_column("B", overflow="fold")
    table.add_row("arm", escape(run.arm_a), escape(run.arm_b))
    table.add_row("model", escape(run.model_a), escape(run.model_b))
    table.add_row("judge stars", _stars(means.get("judge_a")), _stars(means.get("judge_b")))
    table.add_row("exact match", percent(means.get("exact_a")), percent(means.get("exact_b")))
    table.add_row("similarity", percent(means.get("fuzzy_a")), percent(means.get("fuzzy_b")))
    return table


def render(run: Any) -> None:
    """The run's summary table, then what was held out and B's win rate with its interval."""
    out.print(summary_table(run))
    low, high = run.interval
    excluded = run.summary.get("excluded") or {}
    held = f"{run.items} held-out prompt(s)"
    if excluded:
        held += f", {sum(excluded.values())} left out (learned from)"
    note = str(run.summary.get("judge_note", "")).removeprefix("judge: ")
    basis = "by your personal judge" if run.basis == "judge" else "against your accepted answers"
    out.print(f"{held}; scored {basis} ({escape(note)})", highlight=False)
    if run.n:
        out.print(
            f"[bold]B wins {percent(run.win_rate)}[/] (95% interval {percent(low)}–{percent(high)}) · "
            f"{run.wins} won, {run.losses} lost, {run.ties} tied · {escape(run.verdict)}",
            highlight=False,
        )
    else:
        out.print("Nothing could be scored: the judge is not ready and no prompt has an accepted answer.")


def _stars(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def items_table(items: list[Any]) -> Table:
    table = Table("turn", "prompt", "winner", "judge A/B", "similarity A/B")
    table.columns[1].overflow = "fold"
    for item in items:
        winner = item.judge_winner or item.reference_winner or "—"
        judge = "—" if item.judge_a is None else f"{item.judge_a:.2f}/{item.judge_b:.2f}"
        fuzzy = "—" if item.fuzzy_a is None else f"{percent(item.fuzzy_a)}/{percent(item.fuzzy_b)}"
        prompt = item.prompt.strip().splitlines()[0][:60] if item.prompt.strip() else ""
        table.add_row(str(item.turn_id), escape(prompt), winner.upper(), judge, fuzzy)
    return table
