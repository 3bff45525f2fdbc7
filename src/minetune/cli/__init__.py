"""The ``minetune`` command line. Each command parses, makes one library call, and renders.

This module holds the root ``app`` group and ``main()``; each command group lives in its own module
(``chat``, ``data``, ``programs``, ``bundles``, ``finetune``, ``training``, ``adapters``, ``forget``,
``serve``, ``keys``) and what they share (consoles, options, settings, the store) in ``common``. Heavy imports
stay inside the commands, so ``minetune --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from minetune.cli import (
    adapters,
    bundles,
    chat,
    data,
    evaluate,
    finetune,
    forget,
    keys,
    programs,
    serve,
    speech,
    training,
    worker,
)
from minetune.cli.common import err, model_option, out
from minetune.errors import MinetuneError
from minetune.files import PRIVATE_UMASK

__all__ = ["app", "err", "main", "out"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    help="Data folder (default: $MINETUNE_HOME or ~/.minetune).",
)
@model_option
@click.version_option(package_name="minetune")
@click.pass_context
def app(ctx: click.Context, home: Path | None, model: str | None) -> None:
    """minetune: a personal AI program that learns on the job from your ratings, critiques and praise."""
    ctx.obj = {"home": home, "model": model}


for _command in (
    chat.chat,
    chat.rate,
    data.stats,
    data.export,
    data.import_cmd,
    programs.program_app,
    programs.judge,
    programs.lessons_app,
    programs.bootstrap,
    programs.optimize,
    bundles.bundle_app,
    finetune.finetune_app,
    training.train_app,
    adapters.adapter_app,
    forget.forget,
    serve.serve,
    serve.user_app,
    keys.key_app,
    evaluate.eval_cmd,
    worker.worker,
):
    app.add_command(_command)
for _command in speech.COMMANDS:
    app.add_command(_command)


def main() -> None:
    """Console-script entry point: user-facing errors become one line and exit code 1. Every file
    the command creates is private (umask 077): the database, adapters, exports."""
    os.umask(PRIVATE_UMASK)
    try:
        app(standalone_mode=True)
    except MinetuneError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
