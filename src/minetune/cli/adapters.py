"""LoRA adapters: the ``adapter`` group (list, create, switch, retire, route)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from minetune.cli.common import _settings, _store, out, program_option, threshold_option
from minetune.cli.training import _print_outcome, _run_training, _train_config, _training_options


@click.group("adapter")
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
    # Fits 80 columns: the program and the base model get a column only when they differ between rows
    # (otherwise they are said once above the table); the base by its folder name (--json has the
    # path); names fold onto a second line rather than being cut off with "…".
    programs = sorted({v.program for v in views})
    bases = sorted({_short_base(v.adapter.base_model) for v in views})
    if len(programs) == 1:
        out.print(f"program: {programs[0]}", markup=False, highlight=False)
    if len(bases) == 1:
        out.print(f"base model: {views[0].adapter.base_model}", markup=False, highlight=False)
    headers = ["id"] + ["program"] * (len(programs) > 1) + ["domain"] + ["base"] * (len(bases) > 1)
    headers += ["method", "parent", "answers", "state", "created"]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    longest = {
        "program": max(len(v.program) for v in views),
        "domain": max(len(v.adapter.domain) for v in views),
        "base": max(len(_short_base(v.adapter.base_model)) for v in views),
    }
    for header in headers:
        named = header in ("program", "domain", "base", "state")
        width = min(longest[header], max(4, out.width - 58)) if header in longest else None  # 22 at 80
        short = not named and out.width >= 80  # narrower than 80: everything may wrap
        table.add_column(header, overflow="fold", no_wrap=short, min_width=width)
    for v in views:
        a = v.adapter
        state = a.status + (" · active" if v.active else "") + (" · [red]tainted[/]" if v.tainted else "")
        cells = {
            "id": str(a.id),
            "program": escape(v.program),
            "domain": escape(a.domain),
            "base": escape(_short_base(a.base_model)),
            "method": a.method,
            "parent": str(a.parent_id or "—"),
            "answers": str(len(a.lineage_attempt_ids or [])),
            "state": state,
            "created": f"{a.created_at:%Y-%m-%d}",
        }
        table.add_row(*(cells[h] for h in headers))
    out.print(table)


def _short_base(base_model: str) -> str:
    """A base model path by its last folder name (``/models/qwen2.5-0.5b`` -> ``qwen2.5-0.5b``)."""
    return base_model.rstrip("/").rsplit("/", 1)[-1] or base_model


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
    from minetune.train.examples import Selection

    selection = Selection(
        parse_date(since) if since else None, parse_date(until) if until else None, tuple(conversations)
    )
    settings, store = _settings(ctx), _store(ctx)
    outcome = _run_training(
        ctx,
        program,
        "train",
        lambda show, cancel: create(
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
            cancel=cancel,
        ),
        f"{program} {domain}",
        {"domain": domain},
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
