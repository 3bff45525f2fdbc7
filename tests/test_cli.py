"""The command line as a user runs it: real processes, scripted stdin, a loopback model server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakes import FakeOpenAI
from minetune.config import load_settings
from minetune.store import Store


def run(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minetune.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", **os.environ, **(env or {})},  # CI sets COLUMNS=40 and =300
        timeout=120,
    )


NO_LEARNING = {"MINETUNE_REOPTIMIZE": "false"}


def counts() -> dict[str, int]:
    store = Store.open(load_settings())
    try:
        return store.row_counts()
    finally:
        store.close()


def test_scripted_chat_rate_retry(fake_llm: FakeOpenAI) -> None:
    fake_llm.queue("A long answer that rambles on and on about your cat.", "Winston.")
    spec = f"openai-compatible:fake@{fake_llm.base_url}"
    result = run("chat", "--model", spec, stdin="What's my cat's name?\n/rate 2 too long\n/retry\n/rate 5\n")
    assert result.returncode == 0, result.stderr
    assert "Winston." in result.stdout
    assert len(fake_llm.requests) == 2
    assert "too long" in json.dumps(fake_llm.requests[1]["messages"])
    assert "too long" not in json.dumps(fake_llm.requests[0]["messages"])

    stats = json.loads(run("stats", "--json").stdout)
    assert stats["turns"] == 1 and stats["attempts"] == 2
    assert {k: v for k, v in stats["ratings"].items() if v} == {"2": 1, "5": 1}
    assert stats["mean_attempts_to_5"] == 2.0 and stats["captures"] == 0


def test_praise_capture_and_export(fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    fake_llm.queue("Winston, of course - the feline overlord who demands treats.", "Thanks!")
    spec = f"openai-compatible:fake@{fake_llm.base_url}"
    run("program", "create", "timmy", "--instructions", "You are Little Timmy.")
    result = run("chat", "-p", "timmy", "--model", spec, stdin="What's my cat's name?\nGood one, Timmy!\n")
    assert result.returncode == 0, result.stderr
    assert "praise noticed" in result.stdout
    out = tmp_path / "captures.md"
    assert run("export", "--format", "capture-md", "--out", str(out)).returncode == 0
    text = out.read_text()
    assert text.startswith("=" * 80 + "\n## Example Captured: ")
    assert "**Praise:** Good one, Timmy!" in text
    assert "### User Message (n-3):\n```\nWhat's my cat's name?\n```" in text
    assert "### System Prompt with Memories (n-2):\n```\nYou are Little Timmy.\n```" in text
    assert "### Assistant Response (n-1):\n```\nWinston, of course - the feline overlord" in text
    meta = json.loads(text.split("### Metadata:\n```json\n", 1)[1].split("\n```", 1)[0])
    assert meta["program"] == "timmy" and meta["attempt_number"] == 1
    assert json.loads(run("stats", "--json", "-p", "timmy").stdout)["captures"] == 1


def test_program_commands() -> None:
    assert (
        run(
            "program", "create", "poet", "--instructions", "Write haiku.", "--model", "ollama:llama3.2"
        ).returncode
        == 0
    )
    listing = run("program", "list").stdout
    assert "poet" in listing and "default" in listing and "ollama:llama3.2" in listing
    store = Store.open(load_settings())
    store.add_version("poet", instructions="Write haiku about tea.", note="tea")
    store.close()
    diff = run("program", "diff", "poet", "1", "2").stdout
    assert "-Write haiku." in diff and "+Write haiku about tea." in diff
    assert "v2 (active)" in run("program", "show", "poet").stdout
    assert run("program", "rollback", "poet").returncode == 0
    shown = run("program", "show", "poet").stdout
    assert "v1 (active)" in shown and "Write haiku." in shown
    assert run("program", "activate", "poet", "2").returncode == 0
    assert "v2 (active)" in run("program", "show", "poet").stdout


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("chat", "--model", "gpt4"), "hi\n", "model spec"),
        (("chat", "--model", "openai-compatible:m@http://127.0.0.1:9/v1"), "hi\n", "127.0.0.1:9"),
        (("chat", "--model", "openai:gpt-4o-mini"), "hi\n", "OPENAI_API_KEY"),
        (("chat",), "hi\n", "MINETUNE_MODEL"),
        (("rate", "6"), "", "1 to 5"),
        (("rate", "0", "bad"), "", "1 to 5"),
        (("program", "show", "nope"), "", "No program named 'nope'"),
        (("program", "activate", "default", "7"), "", "no version 7"),
        (("program", "rollback"), "", "no earlier version"),
        (("export", "--format", "pdf", "--out", "x.pdf"), "", "Unknown export format"),
    ],
)
def test_bad_input_is_one_clear_line(
    fake_llm: FakeOpenAI, args: tuple[str, ...], stdin: str, message: str
) -> None:
    # Store something first, so we can see that nothing is lost or added (no learning needed here:
    # re-optimizing would load the embedder in the subprocess for nothing).
    spec = f"openai-compatible:fake@{fake_llm.base_url}"
    assert run("chat", "--model", spec, stdin="hello\n/rate 4\n", env=NO_LEARNING).returncode == 0
    before = counts()
    result = run(*args, stdin=stdin, env=NO_LEARNING)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    after = counts()
    # Demo retrieval may have cached the stored turn's embedding before the model failed.
    after.pop("turn_embeddings"), before.pop("turn_embeddings")
    assert after == before


def test_bad_commands_inside_chat_stop_a_script(fake_llm: FakeOpenAI) -> None:
    spec = f"openai-compatible:fake@{fake_llm.base_url}"
    for script in (
        "hello\n/rate 9\n",
        "hello\n/rate\n",
        "/retry\n",
        "hello\n/bogus\n",
        "   \nhello\n/rate 5 \n",
    ):
        result = run("chat", "--model", spec, stdin=script, env=NO_LEARNING)
        if script.startswith("   "):
            assert result.returncode == 0, result.stderr  # blank lines are ignored
        else:
            assert result.returncode == 1 and "error:" in result.stderr, script


def test_not_a_database_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "minetune.db").write_bytes(b"\x00\x01garbage" * 100)
    result = run("--home", str(home), "stats")
    assert result.returncode == 1 and "not a database" in result.stderr
    assert "Traceback" not in result.stderr
    assert (home / "minetune.db").read_bytes() == b"\x00\x01garbage" * 100


def test_auto_detects_ollama(fake_llm: FakeOpenAI) -> None:
    result = run("chat", stdin="hi\n", env={"MINETUNE_OLLAMA_URL": fake_llm.url})
    assert result.returncode == 0, result.stderr
    assert "ollama:fake:latest" in result.stdout
    assert fake_llm.requests[0]["model"] == "fake:latest"


def test_help_explains_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("chat", "rate", "stats", "export", "program"):
        assert command in result.stdout
    assert "scripted" in run("chat", "--help").stdout


def test_lessons_commands_make_versions() -> None:
    assert run("lessons", "add", "Answer in British English.").returncode == 0
    assert run("lessons", "add", "Never use emoji.").returncode == 0
    rows = json.loads(run("lessons", "list", "--json").stdout)
    assert [r["text"] for r in rows] == ["Answer in British English.", "Never use emoji."]
    first, second = rows[0]["id"], rows[1]["id"]
    assert run("lessons", "edit", str(first), "Answer in Scots.").returncode == 0
    assert run("lessons", "retire", str(second)).returncode == 0
    assert [r["text"] for r in json.loads(run("lessons", "list", "--json").stdout)] == ["Answer in Scots."]
    every = json.loads(run("lessons", "list", "--json", "--all").stdout)
    assert {r["text"]: r["status"] for r in every} == {
        "Answer in Scots.": "active",
        "Never use emoji.": "retired",
    }
    shown = run("program", "show").stdout
    assert "v5 (active)" in shown and "Answer in Scots." in shown and "Never use emoji." not in shown
    # rolling back one version brings the retired rule back
    assert run("program", "rollback").returncode == 0
    assert "Never use emoji." in run("program", "show").stdout
    bad = run("lessons", "retire", "999")
    assert bad.returncode == 1 and "no lesson 999" in bad.stderr


def test_bootstrap_without_llm(tmp_path: Path) -> None:
    sample = Path(__file__).parent / "data" / "persona" / "timmy.txt"
    result = run("bootstrap", str(sample), "--no-llm")
    assert result.returncode == 0, result.stderr
    assert "Bootstrapped default v2" in result.stdout
    assert "Persona" in run("program", "show").stdout
    before = counts()
    fake_pdf = Path(__file__).parent / "data" / "persona" / "fake.pdf"
    bad = run("bootstrap", str(sample), str(fake_pdf), "--no-llm")
    assert bad.returncode == 1 and "fake.pdf" in bad.stderr and "Traceback" not in bad.stderr
    assert counts() == before


@pytest.mark.slow  # several subprocesses that each load the embedder: ~45 s
def test_optimize_rebuilds_the_demo_index(fake_llm: FakeOpenAI) -> None:
    spec = f"openai-compatible:fake@{fake_llm.base_url}"
    assert run("chat", "--model", spec, stdin="What's my cat's name?\n/rate 5\n").returncode == 0
    result = run("optimize")
    assert (
        result.returncode == 0
        and "1 demo candidates" in result.stdout
        and "1 accepted answer (rated ≥ 4★ or praised)" in result.stdout
    )
    bad = run("optimize", "--with", "sklearn:svm")
    assert bad.returncode == 1 and "Unknown optimizer" in bad.stderr
