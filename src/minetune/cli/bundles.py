"""Portable bundles: ``bundle export`` and ``bundle import``."""

from __future__ import annotations

from pathlib import Path

import click

from minetune.cli.common import _settings, _store, model_option, out


@click.group("bundle")
def bundle_app() -> None:
    """Move a program to another machine: versions, lessons, rated data and adapters in one zip."""


def _bundle_counts(counts: dict[str, int]) -> str:
    keys = (
        "versions", "lessons", "conversations", "turns", "attempts", "feedback", "embeddings",
        "adapter_records", "adapters",
    )
    names = {"adapter_records": "adapter records", "adapters": "adapter directories"}
    return ", ".join(f"{counts.get(k, 0)} {names.get(k, k)}" for k in keys)


@bundle_app.command("export")
@click.argument("program")
@click.option(
    "--out",
    "-o",
    "out_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Bundle file to write (a zip; replaced if it exists).",
)
@click.option("--with-adapters", is_flag=True, help="Include the adapter directories the versions use.")
@click.pass_context
def bundle_export(ctx: click.Context, program: str, out_file: Path, with_adapters: bool) -> None:
    """Export PROGRAM to a portable bundle (see docs/bundle-format.md)."""
    from minetune.io.bundle import export_bundle

    report = export_bundle(
        _store(ctx), program, out_file, with_adapters=with_adapters, settings=_settings(ctx)
    )
    out.print(
        f"Exported {report.program} (v{report.active_version} active) to {report.path}: "
        + _bundle_counts(report.counts),
        highlight=False,
    )


@bundle_app.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--as", "name", metavar="NAME", help="Import under this program name.")
@model_option
@click.pass_context
def bundle_import(ctx: click.Context, file: Path, name: str | None, model: str | None) -> None:
    """Import a bundle as a new program, all or nothing; --model sets the model spec on a new version."""
    from minetune.io.bundle import import_bundle

    settings = _settings(ctx)
    report = import_bundle(_store(ctx), file, settings=settings, name=name, model=model)
    out.print(
        f"Imported {report.program} (v{report.active_version} active) from {report.path}: "
        + _bundle_counts(report.counts),
        highlight=False,
    )
    for adapter, directory in report.adapter_dirs.items():
        out.print(f"  adapter {adapter} → {directory}", highlight=False)
