"""What every command module shares: the Rich consoles, common options, settings and the store."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from minetune.config import Settings, load_settings

PIPED_TABLE_WIDTH = 1000  # columns a table may take when stdout is not a terminal


class CommandOutput(Console):
    """Standard output. Long lines (paths) are not broken at the terminal width, and when stdout
    is not a terminal (a pipe, a file, a script) tables keep their natural width instead of being
    squeezed to 80 columns, so piped output is complete whatever COLUMNS says."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if not self.is_terminal and any(isinstance(o, Table) for o in objects):
            # Console.print never renders wider than the console: render on a wide twin instead.
            wide = Console(file=self.file, width=PIPED_TABLE_WIDTH, soft_wrap=True, no_color=self.no_color)
            wide.print(*objects, **kwargs)
            return
        super().print(*objects, **kwargs)


out = CommandOutput(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # one error = one line, however narrow the terminal

MODEL_HELP = (
    "Model spec, e.g. ollama:llama3.2, openai:gpt-4o-mini, "
    "openai-compatible:NAME@http://127.0.0.1:8080/v1, hf:./my-model."
)
model_option = click.option("--model", "model", metavar="SPEC", help=MODEL_HELP)
program_option = click.option(
    "--program", "-p", "program", default="default", show_default=True, help="Program name."
)


def _accepted_threshold(ctx: click.Context, _param: click.Parameter, value: int | None) -> int:
    from minetune.app.exchange import accepted_threshold

    return accepted_threshold(_settings(ctx), value)


threshold_option = click.option(
    "--threshold",
    type=click.IntRange(1, 5),
    callback=_accepted_threshold,
    help="Stars that accept an answer (default: [continual] stars in config.toml, 4).",
)


def _settings(ctx: click.Context, model: str | None = None) -> Settings:
    obj = ctx.find_root().obj or {}
    return load_settings(obj.get("home"), model=model or obj.get("model"))


def _store(ctx: click.Context) -> Any:
    from minetune.store import Store

    return Store.open(_settings(ctx))


def _stats(ctx: click.Context, program: str | None) -> dict[str, Any]:
    """``Store.stats`` of the local user through SQLAlchemy Core alone (no ORM, no schema import:
    about 0.15 s less start-up for ``minetune stats``)."""
    from minetune.store import DEFAULT_USER
    from minetune.store.stats import read_stats

    settings = _settings(ctx)
    return read_stats(settings.home, settings.resolved_database_url, DEFAULT_USER, program)
