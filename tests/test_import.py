"""Importers: every format from fixtures in tests/data/import, idempotency, malformed input, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from fakes import FakeOpenAI
from minetune.config import Settings, load_settings
from minetune.io.importers import ImportFormatError, ImportReport, detect_format, import_file
from minetune.store import Store
from minetune.store.schema import Attempt, Conversation, ImportRecord, Program, Turn

DATA = Path(__file__).parent / "data" / "import"
EXPORT = DATA / "chatgpt_export"


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def store(settings: Settings) -> Any:
    s = Store.open(settings)
    yield s
    s.close()


def run_import(store: Store, settings: Settings, path: Path, **kw: Any) -> ImportReport:
    kw.setdefault("learn", False)
    return import_file(store, settings, path, **kw)


def dump(store: Store, program: str = "default") -> list[dict[str, Any]]:
    """Every conversation of a program with its turns, attempts and feedback, in insertion order."""
    with store.db.transaction() as s:
        prog = s.scalar(select(Program).where(Program.name == program))
        assert prog is not None
        convs = s.scalars(
            select(Conversation)
            .where(Conversation.program_id == prog.id)
            .options(
                selectinload(Conversation.turns).selectinload(Turn.attempts).selectinload(Attempt.feedback)
            )
            .order_by(Conversation.id)
        ).all()
        return [
            {
                "title": c.title,
                "external_id": c.external_id,
                "source": c.source,
                "created_at": c.created_at,
                "turns": [
                    {
                        "user": t.user_message,
                        "attempts_to_5": t.attempts_to_5,
                        "attempts": [
                            {
                                "response": a.response,
                                "model": a.model_spec,
                                "messages": a.messages,
                                "feedback": [(f.kind, f.stars, f.critique, f.text) for f in a.feedback],
                            }
                            for a in t.attempts
                        ],
                    }
                    for t in c.turns
                ],
            }
            for c in convs
        ]


def pairs(conv: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["user"], t["attempts"][-1]["response"]) for t in conv["turns"]]


def reasons(report: ImportReport) -> dict[str, str]:
    return {item.where: item.reason for item in report.skipped_items}


# -- ChatGPT -----------------------------------------------------------------------------------


def check_chatgpt_import(store: Store, report: ImportReport) -> None:
    assert report.format == "chatgpt"
    assert (report.conversations, report.turns, report.attempts, report.ratings) == (2, 4, 4, 2)
    cat, trip = dump(store)
    assert (cat["title"], cat["external_id"], cat["source"]) == ("Cat names", "conv-cat", "chatgpt")
    assert cat["created_at"].replace(tzinfo=None) == datetime(2023, 11, 14, 22, 13, 20)  # create_time, UTC
    # Exactly the visible thread: the regenerated answer and the edited-away question are gone,
    # the image turn (its answer is an image) is skipped, and the hidden system node is not there.
    assert pairs(cat) == [
        ("What's a good name for a cat?", "Winston."),
        ("Something shorter?", "Tom."),
        ("Thanks! One more name?", "Felix."),
    ]
    text = json.dumps(cat, default=str)
    for abandoned in ("Mittens.", "Is it a regal name?", "Very regal.", "Draw Tom for me."):
        assert abandoned not in text
    first, second, third = (t["attempts"][0] for t in cat["turns"])
    assert (first["model"], second["model"], third["model"]) == (
        "chatgpt:gpt-4o",
        "chatgpt:gpt-4o",
        "chatgpt:gpt-4o-mini",
    )
    assert second["messages"] == [
        {"role": "user", "content": "What's a good name for a cat?"},
        {"role": "assistant", "content": "Winston."},
        {"role": "user", "content": "Something shorter?"},
    ]
    assert not any(m["role"] == "system" for t in cat["turns"] for m in t["attempts"][0]["messages"])
    # Thumbs: up on "Tom." → 5★, down on the trip answer → 1★ with its text and tags as critique.
    assert [a["feedback"] for a in (first, second, third)] == [[], [("imported", 5, None, None)], []]
    assert [t["attempts_to_5"] for t in cat["turns"]] == [None, 1, None]
    assert pairs(trip) == [("Plan a day in Paris.", "Louvre, then lunch.")]
    assert trip["turns"][0]["attempts"][0]["feedback"] == [
        ("imported", 1, "Too short, give times. (tags: not-helpful)", None)
    ]
    why = reasons(report)
    assert why["conversation 'Cat names' (conv-cat) message sys"] == "hidden system message"
    assert why["conversation 'Cat names' (conv-cat) message a3"] == "non-text content (multimodal_text)"
    assert why["conversation 'Cat names' (conv-cat) message a3-call"] == "tool call to 'dalle.text2im'"
    assert why["conversation 'Cat names' (conv-cat) message u3"] == "user message without a text answer"
    feedback_skips = [r for w, r in why.items() if "message_feedback.json" in w]
    assert any("abandoned branch" in r for r in feedback_skips)
    assert "the rated message is not in the export" in feedback_skips
    assert report.skipped == 7


def test_chatgpt_export_folder_imports_only_the_visible_thread_and_thumbs(
    store: Store, settings: Settings
) -> None:
    report = run_import(store, settings, EXPORT)
    check_chatgpt_import(store, report)


def test_chatgpt_export_as_zip(store: Store, settings: Settings, tmp_path: Path) -> None:
    archive = tmp_path / "chatgpt-export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in EXPORT.iterdir():
            zf.write(f, f"export-2025/{f.name}")
    assert detect_format(archive) == "chatgpt"
    check_chatgpt_import(store, run_import(store, settings, archive))


def test_conversations_json_alone_picks_up_the_feedback_beside_it(store: Store, settings: Settings) -> None:
    assert detect_format(EXPORT / "conversations.json") == "chatgpt"
    check_chatgpt_import(store, run_import(store, settings, EXPORT / "conversations.json"))


def test_sharded_export_reads_every_shard_in_order(store: Store, settings: Settings, tmp_path: Path) -> None:
    conversations = json.loads((EXPORT / "conversations.json").read_text())
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "conversations-001.json").write_text(json.dumps([conversations[1]]))
    (folder / "conversations-000.json").write_text(json.dumps([conversations[0]]))
    shutil.copy(EXPORT / "message_feedback.json", folder)
    check_chatgpt_import(store, run_import(store, settings, folder))


def test_reimport_is_a_no_op_and_a_bigger_export_adds_only_new_conversations(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    run_import(store, settings, EXPORT)
    before = store.row_counts()
    again = run_import(store, settings, EXPORT)
    assert again.already_imported and again.conversations == 0
    assert store.row_counts() == before

    conversations = json.loads((EXPORT / "conversations.json").read_text())
    newer = json.loads(json.dumps(conversations[1]))
    newer["id"] = newer["conversation_id"] = "conv-new"
    newer["title"] = "New one"
    bigger = tmp_path / "later-export"
    bigger.mkdir()
    (bigger / "conversations.json").write_text(json.dumps([*conversations, newer]))
    report = run_import(store, settings, bigger)
    assert (report.conversations, report.turns) == (1, 1)
    assert reasons(report)["conversation 'Cat names' (conv-cat)"] == "already imported"
    assert [c["title"] for c in dump(store)] == ["Cat names", "Trip plan", "New one"]


def test_duplicates_within_a_file_are_reported(store: Store, settings: Settings, tmp_path: Path) -> None:
    line = (DATA / "chat.jsonl").read_text().splitlines()[0]
    path = tmp_path / "dupes.jsonl"
    path.write_text(f"{line}\n{line}\n")
    report = run_import(store, settings, path)
    assert report.conversations == 1
    assert reasons(report)["dupes.jsonl line 2"] == "duplicate of an earlier item in this file"


def test_postgres_and_sqlite_imports_match(database_url: str) -> None:
    settings = load_settings()
    store = Store.open(settings)
    try:
        check_chatgpt_import(store, run_import(store, settings, EXPORT))
        before = store.row_counts()
        assert run_import(store, settings, EXPORT).already_imported
        assert store.row_counts() == before
        with store.db.transaction() as s:
            record = s.scalars(select(ImportRecord)).one()
        assert record.format == "chatgpt" and record.counts["conversations"] == 2
    finally:
        store.close()


# -- the other formats ---------------------------------------------------------------------------


def test_openai_chat_jsonl(store: Store, settings: Settings) -> None:
    report = run_import(store, settings, DATA / "chat.jsonl")
    assert report.format == "openai-chat"
    capital, maths = dump(store)
    assert pairs(capital) == [("Capital of France?", "Paris.")]
    assert capital["turns"][0]["attempts"][0]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert capital["turns"][0]["attempts"][0]["feedback"] == [("imported", 5, None, None)]
    assert pairs(maths) == [("2+2?", "5."), ("Check again.", "4.")]
    # weight 0 marks an answer not to learn from: kept as history, unrated.
    assert [t["attempts"][0]["feedback"] for t in maths["turns"]] == [[], [("imported", 5, None, None)]]
    assert maths["turns"][1]["attempts"][0]["messages"][-3:] == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "5."},
        {"role": "user", "content": "Check again."},
    ]
    assert reasons(report) == {"chat.jsonl line 3": "non-text content (images or audio)"}


def test_openai_dpo_jsonl_is_one_turn_with_two_rated_attempts(store: Store, settings: Settings) -> None:
    report = run_import(store, settings, DATA / "dpo.jsonl")
    assert report.format == "openai-dpo" and (report.turns, report.attempts, report.ratings) == (2, 4, 4)
    color, hello = dump(store)
    turn = color["turns"][0]
    assert turn["user"] == "Name a color." and turn["attempts_to_5"] == 1
    assert [(a["response"], a["feedback"][0][1]) for a in turn["attempts"]] == [
        ("Teal.", 5),
        ("I cannot help with that.", 1),
    ]
    assert hello["turns"][0]["attempts"][1]["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
    ]


def test_sharegpt(store: Store, settings: Settings) -> None:
    report = run_import(store, settings, DATA / "sharegpt.json")
    assert report.format == "sharegpt"
    pirate, weather = dump(store)
    assert pairs(pirate) == [("Hello", "Ahoy!"), ("Where is the treasure?", "Buried, matey.")]
    assert pirate["title"] == "sg-1"
    assert pirate["turns"][1]["attempts"][0]["messages"][0] == {
        "role": "system",
        "content": "You are a pirate.",
    }
    assert pairs(weather) == [("Call the weather tool", "Sunny.")]
    assert reasons(report) == {"sharegpt.json item 2 message 2": "message from 'function_call'"}


def test_alpaca(store: Store, settings: Settings) -> None:
    report = run_import(store, settings, DATA / "alpaca.json")
    assert report.format == "alpaca"
    assert [pairs(c)[0] for c in dump(store)] == [
        ("Translate to French.\n\nGood morning", "Bonjour"),
        ("Give a synonym for happy.", "Joyful"),
    ]
    assert reasons(report) == {"alpaca.json item 3": "empty instruction or output"}


def test_alpaca_and_sharegpt_as_json_lines(store: Store, settings: Settings, tmp_path: Path) -> None:
    for name in ("alpaca", "sharegpt"):
        records = json.loads((DATA / f"{name}.json").read_text())
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        assert run_import(store, settings, path).format == name
    assert len(dump(store)) == 4


def test_capture_markdown_from_the_original_capture_system(store: Store, settings: Settings) -> None:
    report = run_import(store, settings, DATA / "captures.md")
    assert report.format == "capture-md" and report.ratings == 2
    cat, bash = dump(store)
    attempt = cat["turns"][0]["attempts"][0]
    assert cat["turns"][0]["user"] == "What's my cat's name?"
    assert attempt["response"] == "Winston, of course - the feline overlord who demands treats."
    assert attempt["messages"][0]["role"] == "system"
    assert attempt["messages"][0]["content"].startswith("You are Little Timmy...\nMemories:")
    assert attempt["feedback"] == [("praise", 5, None, "Good one, Timmy!")]
    assert "```bash\nfor i in 1 2 3" in bash["turns"][0]["attempts"][0]["response"]
    assert store.stats()["captures"] == 2


def test_csv_with_aliased_headers(store: Store, settings: Settings) -> None:
    report = run_import(store, settings, DATA / "ratings.csv")
    assert report.format == "csv"
    joke, haiku, hi = dump(store)
    assert joke["turns"][0]["attempts"][0]["feedback"] == [("imported", 2, "old joke", None)]
    assert haiku["turns"][0]["attempts"][0]["response"].count("\n") == 2
    assert haiku["turns"][0]["attempts"][0]["feedback"] == [("imported", 5, None, None)]
    assert hi["turns"][0]["attempts"][0]["feedback"] == []
    assert reasons(report) == {"ratings.csv row 5": "empty prompt or response"}


def test_tsv_thumbs_and_semicolons(store: Store, settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "log.tsv"
    path.write_text("PROMPT\tResponse\tRating\nhi\thello\t👍\nbye\tok\tdown\n")
    run_import(store, settings, path)
    assert [c["turns"][0]["attempts"][0]["feedback"][0][1] for c in dump(store)] == [5, 1]
    semi = tmp_path / "semi.csv"
    semi.write_text("user;assistant;stars\nq;a;4/5\n")
    run_import(store, settings, semi)
    assert dump(store)[-1]["turns"][0]["attempts"][0]["feedback"][0][1] == 4


def test_import_into_a_named_program_and_format_override(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    store.create_program("timmy", "You are Timmy.")
    path = tmp_path / "data.txt"
    path.write_text((DATA / "chat.jsonl").read_text())
    assert detect_format(path) == "openai-chat"  # detection reads the content, not the extension
    with pytest.raises(ImportFormatError, match="'instruction' should be text"):
        run_import(store, settings, path, program="timmy", format="alpaca")
    report = run_import(store, settings, path, program="timmy", format="openai-chat")
    assert report.conversations == 2 and len(dump(store, "timmy")) == 2


# -- round trips through exporters -------------------------------------------------------------


def test_capture_markdown_round_trip(store: Store, settings: Settings, tmp_path: Path) -> None:
    from minetune.io.capture_md import write_captures

    conv = store.start_conversation()
    for message, system, response, praise in [
        ("What's my cat's name?", "You are Timmy.\nMemories: cat = Winston", "Winston!", "good one"),
        ("Code?", "", "Use ```` fences:\n```py\nprint(1)\n```", "perfect"),
    ]:
        turn = store.add_turn(conv.id, message)
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": message}
        ]
        attempt = store.add_attempt(
            turn.id, model_spec="ollama:llama3.2", messages=messages, response=response, latency_ms=5.0
        )
        store.add_feedback(attempt.id, "praise", stars=5, text=praise)
    out = tmp_path / "captures.md"
    write_captures(store.captures("default"), out)
    store.create_program("copy")
    report = run_import(store, settings, out, program="copy")
    assert report.conversations == 2

    def key(c: Any) -> tuple[Any, ...]:
        return (c.user_message, c.system_prompt, c.response, c.praise, c.metadata["model"])

    assert [key(c) for c in store.captures("copy")] == [key(c) for c in store.captures("default")]


def _rated_history(store: Store) -> None:
    """A program with a two-turn conversation (the second answer retried after a 2★ critique) and a
    single-turn one rated 4★, stored the way the chat loop stores them."""
    system = {"role": "system", "content": "You are Timmy."}
    conv = store.start_conversation()
    t1 = store.add_turn(conv.id, "What's my cat's name?")
    sent1 = [system, {"role": "user", "content": "What's my cat's name?"}]
    a1 = store.add_attempt(t1.id, model_spec="fake", messages=sent1, response="Winston.", latency_ms=1.0)
    store.add_feedback(a1.id, "explicit", stars=5)
    t2 = store.add_turn(conv.id, "And the dog?")
    sent2 = [
        *sent1,
        {"role": "assistant", "content": "Winston."},
        {"role": "user", "content": "And the dog?"},
    ]
    a2 = store.add_attempt(t2.id, model_spec="fake", messages=sent2, response="No idea.", latency_ms=1.0)
    store.add_feedback(a2.id, "explicit", stars=2, critique="You know it: Rex.")
    retry = [
        *sent2,
        {"role": "assistant", "content": "No idea."},
        {"role": "user", "content": "critique: Rex"},
    ]
    a3 = store.add_attempt(t2.id, model_spec="fake", messages=retry, response="Rex!", latency_ms=1.0)
    store.add_feedback(a3.id, "explicit", stars=5)
    other = store.start_conversation()
    t3 = store.add_turn(other.id, "Translate: good morning")
    sent3 = [{"role": "user", "content": "Translate: good morning"}]
    a4 = store.add_attempt(t3.id, model_spec="fake", messages=sent3, response="Bonjour", latency_ms=1.0)
    store.add_feedback(a4.id, "explicit", stars=4)


@pytest.mark.parametrize("fmt", ["openai-chat", "openai-dpo", "sharegpt", "alpaca"])
def test_dataset_exports_round_trip(fmt: str, store: Store, settings: Settings, tmp_path: Path) -> None:
    datasets = pytest.importorskip("minetune.train.datasets")
    _rated_history(store)
    first = tmp_path / f"first.{fmt}.jsonl"
    result = datasets.export_dataset(store, fmt, first, program="default")
    assert result.counts["all"] > 0
    store.create_program("copy")
    report = run_import(store, settings, first, program="copy")
    assert report.format == fmt and report.skipped == 0
    second = tmp_path / f"second.{fmt}.jsonl"
    datasets.export_dataset(store, fmt, second, program="copy")
    assert sorted(second.read_text().splitlines()) == sorted(first.read_text().splitlines())


# -- malformed input -------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def _truncated_export(tmp: Path) -> Path:
    text = (EXPORT / "conversations.json").read_text()
    path = tmp / "conversations.json"
    path.write_text(text[: len(text) * 2 // 3])
    return path


MALFORMED = {
    "truncated export": (_truncated_export, "truncated"),
    "truncated jsonl": (
        lambda tmp: _write(tmp / "t.jsonl", (DATA / "chat.jsonl").read_text()[:-40]),
        "truncated or invalid JSON",
    ),
    "truncated json array": (
        lambda tmp: _write(tmp / "a.json", (DATA / "alpaca.json").read_text()[:-30]),
        "truncated",
    ),
    "messages not a list": (
        lambda tmp: _write(
            tmp / "w.jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": "hi"}\n'
        ),
        "'messages' should be a list",
    ),
    "content a number": (
        lambda tmp: _write(tmp / "n.jsonl", '{"messages": [{"role": "user", "content": 5}]}\n'),
        "'content' should be text",
    ),
    "mapping a list": (
        lambda tmp: _write(tmp / "conversations.json", '[{"id": "x", "mapping": [], "current_node": "a"}]'),
        "'mapping' should be an object",
    ),
    "alpaca output a number": (
        lambda tmp: _write(tmp / "al.json", '[{"instruction": "a", "output": 3}]'),
        "'output' should be text",
    ),
    "csv rating out of range": (
        lambda tmp: _write(tmp / "r.csv", "prompt,response,rating\na,b,9\n"),
        "rating '9' is not 1-5",
    ),
    "zip slip": (
        lambda tmp: _zip(tmp / "evil.zip", {"conversations.json": "[]", "../../etc/cron.d/x": "boom"}),
        "refusing the whole archive",
    ),
    "absolute zip member": (
        lambda tmp: _zip(tmp / "abs.zip", {"/conversations.json": "[]"}),
        "refusing the whole archive",
    ),
    "zero-byte file": (lambda tmp: _write(tmp / "empty.jsonl", ""), "empty (0 bytes)"),
    "binary file": (
        lambda tmp: _write_bytes(
            tmp / "photo.json", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
        ),
        "binary file",
    ),
    "latin-1 text": (
        lambda tmp: _write_bytes(
            tmp / "l.jsonl", '{"messages": [{"role": "user", "content": "café"}]}'.encode("latin-1")
        ),
        "binary file",
    ),
    "unknown text": (
        lambda tmp: _write(tmp / "notes.txt", "hello world\nnothing to see\n"),
        "unknown format",
    ),
    "unknown json records": (lambda tmp: _write(tmp / "x.jsonl", '{"foo": 1}\n'), "unknown format"),
    "zip that is not an export": (
        lambda tmp: _zip(tmp / "other.zip", {"notes.txt": "hi"}),
        "not a ChatGPT export",
    ),
    "corrupt zip": (
        lambda tmp: _write_bytes(tmp / "bad.zip", _corrupt_zip(tmp)),
        "zip",
    ),
    "missing path": (lambda tmp: tmp / "nope.json", "No such file"),
    "capture without response": (
        lambda tmp: _write(
            tmp / "c.md", "## Example Captured: 2025-01-01T00:00:00\n### User Message (n-3):\n```\nhi\n```\n"
        ),
        "no '### Assistant Response' section",
    ),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _corrupt_zip(tmp: Path) -> bytes:
    data = bytearray(_zip(tmp / "ok.zip", {"conversations.json": "[]" * 200}).read_bytes())
    data[40:80] = b"\xff" * 40
    return bytes(data)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_is_a_clear_error_and_changes_nothing(
    case: str, store: Store, settings: Settings, tmp_path: Path
) -> None:
    make, expected = MALFORMED[case]
    path = make(tmp_path)
    before = store.row_counts()
    with pytest.raises(ImportFormatError) as info:
        run_import(store, settings, path)
    message = str(info.value)
    assert expected in message and "\n" not in message
    assert store.row_counts() == before


def test_an_error_late_in_a_big_file_rolls_back_every_batch(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    lines = [
        json.dumps(
            {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        )
        for i in range(1200)
    ]
    path = _write(tmp_path / "big.jsonl", "\n".join(lines) + '\n{"messages": [{"role": 7}]}\n')
    before = store.row_counts()
    with pytest.raises(ImportFormatError, match="line 1201"):
        run_import(store, settings, path)
    assert store.row_counts() == before


def test_unknown_format_name(store: Store, settings: Settings) -> None:
    with pytest.raises(ImportFormatError, match="Unknown import format 'xml'"):
        run_import(store, settings, DATA / "chat.jsonl", format="xml")


def test_json_array_reader_handles_elements_across_chunks(tmp_path: Path) -> None:
    from minetune.io.importers.jsonstream import iter_array

    items = [{"i": i, "text": "x" * (i * 37 % 300), "esc": '"\\u00e9\n'} for i in range(500)]
    path = _write(tmp_path / "a.json", json.dumps(items, indent=2))
    with path.open(encoding="utf-8") as fh:
        assert list(iter_array(fh, "a.json", chunk=64)) == items


# -- up to speed -----------------------------------------------------------------------------------


def test_import_rebuilds_demos_from_imported_ratings(store: Store, settings: Settings) -> None:
    from minetune.learn.reoptimize import Learner

    report = import_file(store, settings, EXPORT)
    assert report.demo_candidates == 1  # "Tom." is the only answer rated 5★
    assert any("no model is configured" in note for note in report.notes)
    demos, _ = Learner(store, settings, "default").demos_for("Any short cat names?")
    assert [d.response for d in demos] == ["Tom."]


def test_critiques_become_lessons_when_a_model_is_configured(
    store: Store, settings: Settings, fake_llm: FakeOpenAI
) -> None:
    fake_llm.reflection_replies.append('{"rule": "Do not tell old jokes.", "supersedes": []}')
    report = import_file(
        store, settings, DATA / "ratings.csv", model=f"openai-compatible:fake@{fake_llm.base_url}"
    )
    assert report.lessons_learned == 1 and report.demo_candidates == 1
    assert [lesson.text for lesson in store.lessons()] == ["Do not tell old jokes."]
    assert "old joke" in json.dumps(fake_llm.reflection_requests[0]["messages"])


# -- the command line --------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minetune.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )


def counts() -> dict[str, int]:
    store = Store.open(load_settings())
    try:
        return store.row_counts()
    finally:
        store.close()


def test_cli_import(tmp_path: Path) -> None:
    result = cli("import", str(EXPORT), "--no-learn")
    assert result.returncode == 0, result.stderr
    assert "2 conversations, 4 turns, 4 answers, 2 ratings (1 with critique), 7 skipped" in result.stdout
    assert "message sys: hidden system message" in result.stdout
    stats = json.loads(cli("stats", "--json").stdout)
    assert stats["turns"] == 4 and stats["feedback"]["imported"] == 2

    before = counts()
    again = cli("import", str(EXPORT))
    assert again.returncode == 0 and "Already imported" in again.stdout
    assert counts() == before

    bad = _truncated_export(tmp_path)
    failed = cli("import", str(bad))
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: ") and "truncated" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    assert counts() == before

    unknown = cli("import", str(DATA / "chat.jsonl"), "--format", "xml")
    assert unknown.returncode == 1 and "Unknown import format" in unknown.stderr


def test_cli_verbose_lists_every_skip() -> None:
    result = cli("import", str(DATA / "sharegpt.json"), "--verbose", "--no-learn")
    assert result.returncode == 0, result.stderr
    assert "skipped sharegpt.json item 2 message 2: message from 'function_call'" in result.stdout


def test_imported_rows_never_reuse_deleted_ids(store: Store, settings: Settings) -> None:
    run_import(store, settings, DATA / "alpaca.json")
    with store.db.transaction() as s:
        newest = s.scalar(select(Conversation.id).order_by(Conversation.id.desc()))
    assert newest is not None
    store.delete_conversation(newest)
    run_import(store, settings, DATA / "sharegpt.json")
    with store.db.transaction() as s:
        ids = list(s.scalars(select(Conversation.id).order_by(Conversation.id)))
    assert min(ids[1:]) > newest and len(ids) == 3
