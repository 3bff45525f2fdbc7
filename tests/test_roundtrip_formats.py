"""Every `minetune export` format imports back with `minetune import` (format detected, the
target program created and said so), and `-` means standard output for export and standard input
for import. What comes back is the exported data: the same prompts, with the exported answers
accepted (and, for preference formats, the rejected ones rated low)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from minetune.cli import app
from minetune.cli.data import EXPORT_FORMATS
from minetune.config import load_settings
from minetune.store import Store, browse
from test_datasets import add_turn, chain_turns

DETECTED_AS = {"trl-sft": "openai-chat"}  # trl-sft rows are OpenAI chat rows ({"messages": [...]})


def seed(store: Store) -> None:
    """Retry chains (SFT rows, DPO pairs, KTO rows) and praised answers (captures)."""
    chain_turns(store, "default", 4)
    conv = store.start_conversation("default").id
    add_turn(store, conv, "what is tcp?", [("A transport protocol.", None, None, "perfect")])


def imported(program: str) -> dict[str, list[tuple[str, int | None]]]:
    """Per user message of ``program`` (over all its turns): (answer, best stars) of each attempt."""
    store = Store.open(load_settings())
    try:
        found: dict[str, list[tuple[str, int | None]]] = {}
        for turn in browse.program_turns(store, program):
            found.setdefault(turn.user_message, []).extend(
                (a.response, max((f.stars for f in a.feedback if f.stars is not None), default=None))
                for a in turn.attempts
            )
        return found
    finally:
        store.close()


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_every_export_format_imports_back(fmt: str, tmp_path: Path) -> None:
    store = Store.open(load_settings(reoptimize=False))
    try:
        seed(store)
    finally:
        store.close()
    runner = CliRunner()
    exported = tmp_path / f"data.{'md' if fmt == 'capture-md' else 'jsonl'}"
    result = runner.invoke(app, ["export", "-f", fmt, "-o", str(exported), "-p", "default"])
    assert result.exit_code == 0, result.output
    assert exported.stat().st_size > 0

    target = f"copy-{fmt}"
    result = runner.invoke(
        app, ["import", str(exported), "--program", target, "--no-learn"]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"Created program {target}" in text
    assert f"({DETECTED_AS.get(fmt, fmt)}) into {target}" in text

    back = imported(target)
    if fmt == "capture-md":
        assert [answer for answer, _ in back["what is tcp?"]] == ["A transport protocol."]
        return
    for i in range(4):
        answers = dict(back[f"question {i}?"])
        if fmt in ("openai-dpo", "trl-dpo", "trl-kto"):  # the preferred answer high, the other low
            assert answers == {f"answer {i}": 5, f"a rambling answer {i}": 1}
        else:  # SFT formats carry the accepted answer (imported as accepted)
            assert list(answers) == [f"answer {i}"]


def test_dash_is_stdout_for_export_and_stdin_for_import(tmp_path: Path) -> None:
    store = Store.open(load_settings(reoptimize=False))
    try:
        seed(store)
    finally:
        store.close()
    runner = CliRunner()
    result = runner.invoke(app, ["export", "-f", "trl-dpo", "-o", "-", "-p", "default"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 4 and set(rows[0]) == {"prompt", "chosen", "rejected"}
    assert not (Path.cwd() / "-").exists()
    assert "to standard output" in " ".join(result.stderr.split())

    jsonl = "".join(json.dumps(row) + "\n" for row in rows)
    result = runner.invoke(app, ["import", "-", "-p", "piped", "--no-learn"], input=jsonl)
    assert result.exit_code == 0, result.output
    assert "Imported standard input (trl-dpo) into piped" in " ".join(result.output.split())
    assert sorted(imported("piped")) == [f"question {i}?" for i in range(4)]
    result = runner.invoke(app, ["export", "-f", "trl-dpo", "-o", "-", "--split"])
    assert result.exit_code != 0 and "standard output" in str(result.exception)
