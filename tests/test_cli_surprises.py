"""The CLI without surprises (issue 14): text in [brackets] is printed, not eaten as Rich markup;
`lessons list` follows the active version (after a rollback a rule the version lacks is not
"active"). Every check runs at a narrow and a wide terminal, so none depends on the width."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fakes import FakeOpenAI

WIDTHS = ("40", "300")


def run(
    *args: str, columns: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minetune.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": columns, "MINETUNE_REOPTIMIZE": "false", **(env or {})},
        timeout=120,
    )


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("columns", WIDTHS)
def test_chat_help_and_hint_show_the_critique_argument(columns: str, fake_llm: FakeOpenAI) -> None:
    fake_llm.queue("Winston [the cat].")
    spec = f"openai-compatible:fake@{fake_llm.base_url}"
    result = run("chat", "--model", spec, columns=columns, stdin="/help\nwhat is my cat called?\n")
    assert result.returncode == 0, result.stderr
    shown = flat(result.stdout)
    assert "/rate N [critique] rate the last answer 1-5" in shown  # /help
    assert "/retry [critique] answer again" in shown
    assert "/rate 1-5 [critique], /retry" in shown  # the hint after the answer
    assert "Winston [the cat]." in shown  # the model's text, brackets and all


@pytest.mark.slow  # six CLI processes per width
@pytest.mark.parametrize("columns", WIDTHS)
def test_lessons_list_follows_the_active_version_after_rollback(columns: str) -> None:
    assert run("lessons", "add", "Use [square] brackets.", columns=columns).returncode == 0
    listed = run("lessons", "list", columns=columns)
    assert "Use [square] brackets." in flat(listed.stdout)
    assert run("program", "rollback", columns=columns).returncode == 0  # to v1: no rules
    rows = json.loads(run("lessons", "list", "--json", columns=columns).stdout)
    assert rows == []
    every = json.loads(run("lessons", "list", "--json", "--all", columns=columns).stdout)
    assert [(r["text"], r["status"]) for r in every] == [("Use [square] brackets.", "not in v1")]
    empty = run("lessons", "list", columns=columns)
    assert "No rules in default v1" in flat(empty.stdout)


def test_the_training_page_speaks_of_its_fields_not_cli_flags() -> None:
    from webchat import web_settings
    from webusers import served

    with served(web_settings(None)) as web:
        page = web.client.get("/training", headers={"Accept": "text/html"}).text
    assert "No base model to train on" in page and "Base model field" in page
    assert "--base" not in page and "pass --" not in page


def test_adapter_list_fits_80_columns_without_cutting_names(tmp_path: Path) -> None:
    from minetune.config import load_settings
    from minetune.store import Store
    from minetune.store import adapters as adapters_db
    from minetune.train.base import BaseModel
    from test_bundle_adapters import fake_adapter_dir

    base = "/models/a-rather-long-base-model-name-1.5b-instruct"
    store = Store.open(load_settings())
    try:
        store.create_program("customer-support", "You help.", f"hf:{base}")
        for domain in ("billing", "shipping-and-returns"):
            adapters_db.publish_adapter(
                store,
                "customer-support",
                method="sft",
                base_model=base,
                domain=domain,
                place=lambda i: str(fake_adapter_dir(tmp_path / str(i), rank=2)),
                serve_spec=BaseModel(base).spec,
            )
    finally:
        store.close()
    # a terminal 80 columns wide (TTY_COMPATIBLE makes Rich treat the pipe as one)
    shown = run("adapter", "list", columns="80", env={"TTY_COMPATIBLE": "1", "NO_COLOR": "1"})
    assert shown.returncode == 0, shown.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", shown.stdout)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    for name in ("customer-support", "billing", "shipping-and-returns", base):
        assert name in text, name


def test_stats_explains_the_mean_score() -> None:
    shown = run("stats", columns="40")
    assert shown.returncode == 0, shown.stderr
    assert "mean score: per turn 1 / the attempts it took to reach 5★" in flat(shown.stdout)


def test_quiet_loading_hides_progress_bars_warnings_and_logs_then_restores_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    from minetune.learn.quiet import quiet_loading

    hf_logging.enable_progress_bar()
    with quiet_loading():
        assert not hf_logging.is_progress_bar_enabled()
        warnings.warn("a tracer warning", UserWarning, stacklevel=1)
        logging.getLogger("onnxruntime").warning("consider pre-processing")
    assert hf_logging.is_progress_bar_enabled()
    assert logging.root.manager.disable == logging.NOTSET
    captured = capsys.readouterr()
    assert "tracer warning" not in captured.err and "pre-processing" not in captured.err


@pytest.mark.slow  # loads the sentence-transformers embedder in a fresh process
def test_import_that_loads_the_embedder_prints_no_progress_bar(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "ok"}]} for q in "ab"
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shown = run(
        "import",
        str(data),
        "-p",
        "p",
        columns="80",
        env={"MINETUNE_REOPTIMIZE": "true", "MINETUNE_EMBEDDER": "minilm"},
    )
    assert shown.returncode == 0, shown.stderr
    assert "Demo index rebuilt" in shown.stdout
    assert "Loading weights" not in shown.stderr and "Warning" not in shown.stderr, shown.stderr
