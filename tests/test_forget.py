"""Forget is erasure: the canary test (a unique string planted in a turn with later turns, a pinned
DSPy demo, a persona sample, a lesson, the judge, a job folder, a hosted upload and an adapter's
training data is found nowhere afterwards — files, database, every export and a bundle), the dry
run that changes nothing, and the redaction rules."""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from minetune.app.forget import MARKER, Redactor, forget
from minetune.config import Settings, load_settings
from minetune.io.bundle import export_bundle
from minetune.learn import reoptimize
from minetune.learn.demos import Candidate, DemoIndex
from minetune.learn.persona import PERSONA_HEADING, bootstrap
from minetune.program import render_messages
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store import training as jobs_db
from minetune.train.datasets import FORMATS, export_dataset

CANARY = "zq-canary-7f3a9c41"
SYSTEM = "You are terse."
QUESTIONS = [f"Question number {i}: what is {i} plus {i}?" for i in range(12)]
SAMPLE = f"""Sam: hello there
Rex: hey hey, good to see you!
Sam: I think the weather is nice today
Rex: it really is, lovely and sunny out
Sam: what do you keep in the shed? {CANARY} is the code
Rex: just old bikes
"""


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def store(database_url: str, settings: Settings) -> Iterator[Store]:
    s = Store.open(settings)
    yield s
    s.close()


@dataclass
class Planted:
    chat_turn: int
    canary_attempt: int
    later_turns: list[int]
    persona_turn: int
    lesson: int
    job_dir: Path
    demo_conversation: int


def _answer(store: Store, conv: int, message: str, response: str, demos: list[Any] | None = None) -> int:
    """Store a turn as the loop does: the prompt rendered from the active version and history."""
    version = store.active_version("p")
    history = store.history(conv)
    messages = render_messages(version, message, history, demos=demos or [])
    turn = store.add_turn(conv, message)
    attempt = store.add_attempt(
        turn.id,
        version_id=version.id,
        model_spec="hf:x",
        messages=messages,
        response=response,
        latency_ms=1.0,
        demo_attempt_ids=[d.attempt_id for d in demos or []],
    )
    store.add_feedback(attempt.id, "explicit", 5)
    return attempt.id


def plant(store: Store, settings: Settings, tmp_path: Path, spec: str) -> Planted:
    store.create_program("p", SYSTEM, spec)
    sample = tmp_path / "samples" / "rex.txt"
    sample.parent.mkdir()
    sample.write_text(SAMPLE)
    boot = bootstrap(store, "p", [sample], None, assistant_name="Rex")
    assert CANARY in store.active_version("p").instructions  # the persona prompt quotes the sample
    persona_turn = next(
        t
        for t in store.conversation_turn_ids(boot.conversation_ids[0])
        if CANARY in store.turn(t).user_message
    )

    said = f"My locker code is {CANARY}, remember it"
    conv = store.start_conversation("p", title=said[:80]).id  # titled after the first message, as chat does
    canary_attempt = _answer(store, conv, said, f"Noted: {CANARY}.")
    first = _answer(store, conv, QUESTIONS[0], "Zero.")
    chat_turn = store.attempt(canary_attempt).turn_id
    fid = store.add_feedback(canary_attempt, "explicit", 5, critique=f"Always repeat {CANARY} back").id
    _version, added = store.change_lessons(
        "p", add=[{"text": f"Repeat codes like {CANARY} back", "origin": "reflection", "feedback_id": fid}]
    )
    active = store.active_version("p")
    store.add_version(  # as minetune.learn.dspy_bridge writes a LabeledFewShot result
        "p",
        note="dspy:LabeledFewShot",
        demo_policy=dict(active.demo_policy or {})
        | {
            "pinned": [
                {
                    "user": f"My locker code is {CANARY}, remember it",
                    "response": f"Noted: {CANARY}.",
                    "attempt_id": canary_attempt,
                }
            ]
        },
        sources={"optimizer": "dspy:LabeledFewShot", "trainset_attempt_ids": [first, canary_attempt]},
    )
    later = [
        store.attempt(_answer(store, conv, q, f"Answer {i}.")).turn_id for i, q in enumerate(QUESTIONS[1:])
    ]
    other = store.start_conversation("p", title="another").id
    demo = reoptimize.Demo(
        canary_attempt, chat_turn, f"My locker code is {CANARY}, remember it", f"Noted: {CANARY}.", 5, 0.9
    )
    _answer(store, other, "What is my locker code?", "I do not know.", demos=[demo])
    store.save_judge("p", "fake", 2, b"\x00judge", {"added": {str(canary_attempt): 5, str(first): 5}})
    job = jobs_db.create_job(
        store,
        "p",
        kind="local",
        method="sft",
        base_model="x",
        status="cancelled",
        example_attempt_ids=[first, canary_attempt],
    )
    job_dir = settings.home / "adapters" / "p" / ".jobs" / str(job.id) / "checkpoints"
    job_dir.mkdir(parents=True)
    (job_dir / "train.jsonl").write_text(json.dumps({"text": CANARY}))
    # The in-memory demo index of this process holds the turn too.
    index = DemoIndex()
    index.upsert(Candidate(canary_attempt, chat_turn, conv, "m", "r", 5), [1.0, 0.0])
    reoptimize._INDEXES[("test", 0, 0, "fake")] = reoptimize._SyncedIndex(index, 4)
    return Planted(chat_turn, canary_attempt, later, persona_turn, added[0].id, job_dir.parent, other)


def fake_adapter_dir(path: Path) -> Path:
    """A folder that passes the adapter checks (config + a complete safetensors file); no torch."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (path / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    return path


def _db_files(database_url: str) -> list[Path]:
    if not database_url.startswith("sqlite"):
        return []
    db = Path(database_url.split("///", 1)[1])
    return [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-journal")) if p.exists()]


def _files_with(root: Path, extra: list[Path], needle: bytes) -> list[str]:
    files = [p for p in root.rglob("*") if p.is_file()] + extra
    return [str(p) for p in files if needle in p.read_bytes()]


def _sql_hits(database_url: str, needle: str) -> list[str]:
    """Every text, JSON or binary column of every table that holds ``needle``."""
    pg = database_url.startswith("postgresql")
    engine = sa.create_engine(
        "postgresql+psycopg://" + database_url.split("://", 1)[1] if pg else database_url
    )
    hits = []
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            for table in inspector.get_table_names():
                for col in inspector.get_columns(table):
                    kind = str(col["type"]).upper()
                    name = f'"{col["name"]}"'
                    if any(k in kind for k in ("CHAR", "TEXT", "JSON")):
                        where = f"CAST({name} AS TEXT) LIKE :pat"
                    elif "BYTEA" in kind or "BLOB" in kind or "BINARY" in kind:
                        where = (
                            f"position(convert_to(:raw, 'UTF8') in {name}) > 0"
                            if pg
                            else f"instr({name}, CAST(:raw AS BLOB)) > 0"
                        )
                    else:
                        continue
                    sql = sa.text(f'SELECT count(*) FROM "{table}" WHERE {where}')
                    if conn.execute(sql, {"pat": f"%{needle}%", "raw": needle}).scalar():
                        hits.append(f"{table}.{col['name']}")
    finally:
        engine.dispose()
    return hits


def _exports_with(
    store: Store, settings: Settings, out: Path, needle: bytes, with_adapters: bool
) -> list[str]:
    out.mkdir(exist_ok=True)
    found = []
    for name in FORMATS:
        path = out / f"{name}.jsonl"
        export_dataset(store, name, path, program="p")
        if needle in path.read_bytes():
            found.append(name)
    bundle = out / "p.minetune.zip"
    export_bundle(store, "p", bundle, with_adapters=with_adapters, settings=settings)
    with zipfile.ZipFile(bundle) as zf:
        found += [f"bundle:{n}" for n in zf.namelist() if needle in zf.read(n)]
    return found


def _check_gone(
    store: Store,
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    planted: Planted,
    *,
    with_adapters: bool,
) -> None:
    needle = CANARY.encode()
    assert _sql_hits(database_url, CANARY) == []
    assert _files_with(settings.home, _db_files(database_url), needle) == []
    assert _sql_hits(database_url, CANARY) == []
    assert _exports_with(store, settings, tmp_path / "after", needle, with_adapters) == []
    assert not planted.job_dir.exists()
    assert all(planted.chat_turn not in s.index._by_turn for s in reoptimize._INDEXES.values())
    # The rest of each record is kept: later turns, their prompts (minus the forgotten exchange).
    later = store.turn(planted.later_turns[-1])
    messages = later.attempts[0].messages
    assert [m["content"] for m in messages if m["role"] == "user"][:2] == [QUESTIONS[0], QUESTIONS[1]]
    assert messages[-1]["content"] == QUESTIONS[-1] and messages[0]["role"] == "system"
    assert PERSONA_HEADING in store.active_version("p").instructions  # rebuilt from the other samples


def _check_planted(store: Store, settings: Settings, database_url: str, tmp_path: Path) -> None:
    """The canary really is everywhere before forgetting (so the test can fail)."""
    needle = CANARY.encode()
    found = _exports_with(store, settings, tmp_path / "before", needle, with_adapters=False)
    assert {"openai-chat", "sharegpt", "alpaca", "bundle:conversations.jsonl"} <= set(found), found
    hits = set(_sql_hits(database_url, CANARY))
    assert {
        "attempts.messages",
        "program_versions.instructions",
        "program_versions.demo_policy",
        "lessons.text",
        "conversations.title",
        "turns.user_message",
    } <= hits, hits
    if not database_url.startswith("postgresql"):
        assert _files_with(settings.home, _db_files(database_url), needle)


def test_canary_is_gone_everywhere_after_forget(
    database_url: str, store: Store, settings: Settings, tmp_path: Path, ft: Any
) -> None:
    """Fast variant: a (fake-weight) adapter is tainted, a hosted upload is deleted."""
    planted = plant(store, settings, tmp_path, "hf:/models/base")
    root = settings.home / "adapters" / "p"
    adapter, _ = adapters_db.publish_adapter(
        store,
        "p",
        place=lambda i: str(fake_adapter_dir(root / str(i))),
        serve_spec=lambda p: None,
        method="sft",
        base_model="/models/base",
        example_attempt_ids=[planted.canary_attempt],
        activate=False,
    )
    from minetune.train import hosted

    job = hosted.start(
        store, "p", method="sft", model="gpt-4.1-mini-2025-04-14", config=hosted.load_config(settings)
    )
    assert job is not None and any(CANARY.encode() in u.raw for u in ft.uploads)
    uploaded = [u.id for u in ft.uploads]
    _check_planted(store, settings, database_url, tmp_path)

    report = forget(store, settings, turns=[planted.chat_turn, planted.persona_turn])

    assert report.turns == 2 and report.tainted_adapters == [adapter.id]
    assert report.retired_lessons == [planted.lesson] and report.judges_reset == ["p"]
    assert report.pinned_demos_removed >= 1 and report.persona_rebuilt["p"]
    assert sorted(ft.deleted_files) == sorted(uploaded) == sorted(report.hosted_files_deleted)
    assert any("untrained" in x for x in report.limits) is bool(report.hosted_models)
    assert any(f"Adapter(s) {adapter.id}" in x for x in report.limits)
    assert store.lessons("p", include_inactive=True)[0].text == MARKER
    assert report.scrub
    _check_gone(store, settings, database_url, tmp_path, planted, with_adapters=True)


def _tree_hashes(root: Path, extra: list[Path]) -> dict[str, str]:
    files = [p for p in root.rglob("*") if p.is_file()] + extra
    # SQLite's -shm file is the WAL's shared-memory index (read marks change on every read).
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if not str(p).endswith("-shm")}


def test_dry_run_lists_every_artifact_and_changes_nothing(
    database_url: str, store: Store, settings: Settings, tmp_path: Path, ft: Any
) -> None:
    planted = plant(store, settings, tmp_path, "hf:/models/base")
    from minetune.train import hosted

    hosted.start(
        store, "p", method="sft", model="gpt-4.1-mini-2025-04-14", config=hosted.load_config(settings)
    )
    counts = store.row_counts()
    hashes = _tree_hashes(settings.home, _db_files(database_url))
    requests = len(ft.requests)

    report = forget(store, settings, turns=[planted.chat_turn, planted.persona_turn], dry_run=True)

    assert report.dry_run and report.turn_ids == sorted([planted.chat_turn, planted.persona_turn])
    assert set(planted.later_turns[-1:]) <= {store.attempt(a).turn_id for a in report.attempts_redacted}
    assert report.versions_redacted["p"] and report.persona_rebuilt["p"]
    assert report.retired_lessons == [planted.lesson] and report.judges_reset == ["p"]
    assert report.job_folders == [str(planted.job_dir)]
    assert sorted(report.hosted_files) == sorted(u.id for u in ft.uploads)
    assert report.titles_changed  # the title quoted the forgotten message
    assert store.row_counts() == counts
    assert _tree_hashes(settings.home, _db_files(database_url)) == hashes
    assert len(ft.requests) == requests and ft.deleted_files == []
    assert CANARY in store.active_version("p").instructions


def test_redactor_drops_forgotten_history_and_demo_blocks() -> None:
    r = Redactor(
        ["secret message here", "the secret answer"],
        demos=[("secret message here", "the secret answer")],
        lessons=["Use the secret rule"],
    )
    system = (
        "Be kind.\n\nLessons learned from your user's feedback:\n- Keep it short\n- Use the secret rule\n\n"
        "Examples of answers your user rated highly:\n\nUser: hi\nAssistant: hello\n\n"
        "User: secret message here\nAssistant: the secret answer"
    )
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": "secret message here"},
        {"role": "assistant", "content": "the secret answer"},
        {"role": "user", "content": "next question"},
    ]
    out = r.messages(messages, {"secret message here"}, "next question")
    assert [m["role"] for m in out] == ["system", "user"]
    assert "secret" not in json.dumps(out) and "Keep it short" in out[0]["content"]
    assert "User: hi\nAssistant: hello" in out[0]["content"]
    # Elsewhere a long forgotten text is replaced; a short one is left alone.
    assert r.text("she said: secret message here!") == f"she said: {MARKER}!"
    assert Redactor(["ok"]).text("ok then") == "ok then"


def test_forget_command_dry_run_lists_then_forget_prints_limits(
    database_url: str, store: Store, settings: Settings, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from minetune.cli import app

    planted = plant(store, settings, tmp_path, "hf:/models/base")
    root = settings.home / "adapters" / "p"
    adapter, _ = adapters_db.publish_adapter(
        store,
        "p",
        place=lambda i: str(fake_adapter_dir(root / str(i))),
        serve_spec=lambda p: None,
        method="sft",
        base_model="/models/base",
        example_attempt_ids=[planted.canary_attempt],
        activate=False,
    )
    counts = store.row_counts()
    runner = CliRunner()
    dry = runner.invoke(app, ["forget", "--dry-run", str(planted.chat_turn)], catch_exceptions=False)
    text = " ".join(dry.output.split())
    assert dry.exit_code == 0, dry.output
    assert "Would forget 1 turn(s)" in text and "Dry run: nothing was changed." in text
    for artifact in (
        "later prompts redacted",
        "versions of p redacted in place",
        "lessons retired",
        f"adapters tainted: {adapter.id}",
        "job folder deleted",
        "personal judge reset",
    ):
        assert f"would be {artifact}" in text, artifact
    assert store.row_counts() == counts and planted.job_dir.exists()

    done = runner.invoke(app, ["forget", str(planted.chat_turn)], catch_exceptions=False)
    text = " ".join(done.output.split())
    assert done.exit_code == 0 and "Forgot 1 turn(s)" in text and "Database scrubbed" in text
    assert f"limit: Adapter(s) {adapter.id} learned from forgotten data" in text
    assert not planted.job_dir.exists()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The tiny model trains fastest on one thread (the test box has 2 shared CPUs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_canary_in_a_real_adapter_is_retrained_away(
    database_url: str,
    store: Store,
    settings: Settings,
    tmp_path: Path,
    tiny_model_dir: Path,
    one_thread: None,
) -> None:
    """A real tiny LoRA adapter trained on the canary turn: forget retrains it without the turn,
    deletes the tainted weights and its job folder; the canary is then nowhere."""
    from minetune.train.config import TrainConfig
    from minetune.train.runs import train

    planted = plant(store, settings, tmp_path, f"hf:{tiny_model_dir}")
    from minetune.train.examples import examples_for

    seed = next(  # a split that puts the canary turn in the training set, not the held-out one
        n
        for n in range(50)
        if any(
            planted.canary_attempt in ex.attempt_ids for ex in examples_for(store, "p", "sft", seed=n).train
        )
    )
    config = TrainConfig(
        max_steps=4, learning_rate=5e-3, batch_size=4, rank=8, max_length=96, threads=1, seed=seed
    )
    outcome = train(store, settings, "p", method="sft", config=config)
    old = outcome.adapter
    assert old is not None and planted.canary_attempt in old.example_attempt_ids
    old_dir = Path(old.path)
    assert old_dir.is_dir() and store.active_version("p").adapter == old.path
    _check_planted(store, settings, database_url, tmp_path)

    report = forget(
        store, settings, turns=[planted.chat_turn, planted.persona_turn], retrain=True, retrain_minimum=5
    )

    assert report.tainted_adapters == [old.id] and old.id in report.retrained
    assert report.adapters_deleted == [old.id] and not old_dir.exists()
    new = adapters_db.get_adapter(store, report.retrained[old.id])
    assert new.tainted_at is None and planted.canary_attempt not in new.lineage_attempt_ids
    assert store.active_version("p").adapter == new.path and Path(new.path).is_dir()
    _check_gone(store, settings, database_url, tmp_path, planted, with_adapters=False)


def test_forgetting_an_import_removes_what_it_brought_and_nothing_else(
    store: Store, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from minetune.cli import app

    store.create_program("p", "You are terse.")
    kept = _answer(store, store.start_conversation("p").id, "What is a stoat?", "A small mustelid.")
    source = tmp_path / "chat.jsonl"
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"{CANARY} question {i}?"},
                {"role": "assistant", "content": f"{CANARY} answer {i}."},
            ]
        }
        for i in range(3)
    ]
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    runner = CliRunner()
    result = runner.invoke(app, ["import", str(source), "--program", "p", "--format", "openai-chat"])
    assert result.exit_code == 0, result.output
    assert "import 1 (undo: minetune forget --import 1)" in " ".join(result.output.split())
    assert "conversations.title" in _sql_hits(database_url, CANARY)

    result = runner.invoke(app, ["forget", "--import", "1"])
    assert result.exit_code == 0, result.output
    assert "Forgot 3 turn(s)" in result.output and "1 import record(s)" in result.output
    assert _sql_hits(database_url, CANARY) == []
    assert _files_with(settings.home, _db_files(database_url), CANARY.encode()) == []
    assert store.attempt(kept).response == "A small mustelid."  # what the import did not bring stays
    result = runner.invoke(app, ["forget", "--import", "1"])
    assert result.exit_code == 1 and "No import with id 1" in str(result.exception), result.output
