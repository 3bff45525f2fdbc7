"""Portable bundles: export a program, import it into an empty home with another model, and refuse
malformed bundles without touching the store."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeOpenAI
from minetune import Session
from minetune.config import Settings, load_settings
from minetune.errors import MinetuneError
from minetune.io import bundle as bundle_mod
from minetune.io.bundle import FORMAT_NAME, BundleError, export_bundle, import_bundle, read_manifest
from minetune.learn.demos import accepted_candidates
from minetune.learn.reoptimize import Learner
from minetune.program import render_messages
from minetune.store import Store

QUESTION = "What is the name of my cat?"
OTHER_SPEC = "openai-compatible:other-model@http://127.0.0.1:9/v1"


# -- building a program that has learned something ------------------------------------------------------


def _open(home: Path | None = None) -> tuple[Store, Settings]:
    settings = load_settings(home=home)
    return Store.open(settings), settings


def _teach(spec: str, fake_llm: FakeOpenAI) -> None:
    """Program ``timmy`` in the current home: two lessons (one superseded), rated and praised turns,
    a pinned demo, and stored embeddings."""
    store, settings = _open()
    store.create_program("timmy", "You are Little Timmy.", spec, description="knows my pets")
    fake_llm.queue(
        "Well, cats have many names, and yours, if I recall our long talks, is Winston.",
        "Winston.",
        "Your dog is Tom.",
        "Thanks!",
        "TCP is a protocol.",
    )
    fake_llm.reflection_replies.append('{"rule": "Be brief.", "supersedes": []}')
    with Session(store, settings, "timmy", model=spec) as chat:
        chat.send("What's my cat's name?")
        chat.rate(2, "too long")
        assert chat.last_learning is not None and chat.last_learning.rule == "Be brief."
        chat.retry()
        chat.rate(5)
        chat.new_conversation()
        dog = chat.send("What's my dog's name?")
        chat.send("Good one!")  # praise for the dog answer
        chat.new_conversation()
        chat.send("Explain TCP")
        first_rule = chat.store.lessons("timmy")[0].id
        fake_llm.reflection_replies.append(
            json.dumps({"rule": "Answer in one short sentence.", "supersedes": [first_rule]})
        )
        chat.rate(1, "still too long, one sentence please")
    store, _ = _open()
    pinned = [{"user": "What's my dog's name?", "response": dog.text, "attempt_id": dog.attempt_id}]
    store.add_version("timmy", note="pin the dog", demo_policy={"k": 2, "pinned": pinned})
    store.close()


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    """(a home with the taught program, an empty migrated home, the model spec), built once."""
    root = tmp_path_factory.mktemp("bundle-templates")
    with pytest.MonkeyPatch.context() as mp, FakeOpenAI() as fake_llm:
        mp.setenv("MINETUNE_HOME", str(root / "taught"))
        for var in (
            "MINETUNE_DATABASE_URL",
            "MINETUNE_MODEL",
            "MINETUNE_REFLECTION_MODEL",
            "MINETUNE_EMBEDDER",
        ):
            mp.delenv(var, raising=False)
        spec = f"openai-compatible:fake@{fake_llm.base_url}"
        _teach(spec, fake_llm)
        _open(root / "empty")[0].close()
    yield root / "taught", root / "empty", spec


@pytest.fixture
def taught(templates: tuple[Path, Path, str], isolated_env: Path) -> str:
    """A copy of the taught home as this test's MINETUNE_HOME; returns the program's model spec."""
    shutil.copytree(templates[0], isolated_env)
    return templates[2]


@pytest.fixture
def empty_home(templates: tuple[Path, Path, str], tmp_path: Path) -> Path:
    """A copy of an empty, migrated home (opening a new database runs every migration, ~1 s)."""
    home = tmp_path / "elsewhere"
    shutil.copytree(templates[1], home)
    return home


def _snapshot(store: Store, settings: Settings, program: str) -> dict[str, Any]:
    """What must survive a round trip, in terms that do not depend on row ids."""
    attempts = {}
    for row in store.feedback_rows(program):
        attempts[row[0]] = (row[3], row[4])
    lessons = store.lessons(program, include_inactive=True)
    by_id = {x.id: x for x in lessons}
    active = store.active_version(program)
    demos, _ = Learner(store, settings, program).demos_for(QUESTION)
    turn_vectors = store.turn_embeddings([r[1] for r in store.feedback_rows(program)], settings.embedder)
    return {
        "rules": [x.text for x in store.lessons(program)],
        "lessons": [
            (
                x.text,
                x.status,
                x.origin,
                store.feedback(x.feedback_id).critique if x.feedback_id else None,
                by_id[x.superseded_by_id].text if x.superseded_by_id else None,
            )
            for x in lessons
        ],
        "candidates": [
            (c.user, c.response, c.stars) for c in accepted_candidates(store.feedback_rows(program), 4)
        ],
        "ratings": [(r[3], r[4], r[5], r[6]) for r in store.feedback_rows(program)],
        "stats": {k: v for k, v in store.stats(program).items() if k != "program"},
        "versions": [
            (v.number, v.note, v.instructions, [x["text"] for x in v.lessons], v.created_at)
            for v in store.versions(program)
        ],
        "demos": [(d.user, d.response, d.stars) for d in demos],
        "messages": render_messages(active, QUESTION, demos=demos),
        "vectors": sorted(turn_vectors.values()),
        "pinned": [(p["user"], attempts[p["attempt_id"]][1]) for p in active.demo_policy.get("pinned", [])],
    }


def _export(tmp_path: Path, **kwargs: Any) -> Path:
    store, settings = _open()
    try:
        path = tmp_path / "timmy.zip"
        export_bundle(store, "timmy", path, settings=settings, **kwargs)
        return path
    finally:
        store.close()


# -- the round trip -----------------------------------------------------------------------------------------


def test_round_trip_into_an_empty_home_with_another_model(fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    _teach(f"openai-compatible:fake@{fake_llm.base_url}", fake_llm)
    store, settings = _open()
    before = _snapshot(store, settings, "timmy")
    before_versions = store.versions("timmy")
    store.close()
    assert before["rules"] == ["Answer in one short sentence."]
    assert len(before["candidates"]) == 2 and before["demos"], "the fixture should give demos"
    assert "Be brief." not in before["messages"][0]["content"]

    path = _export(tmp_path)
    manifest = read_manifest(path)
    assert manifest["format"] == FORMAT_NAME and manifest["format_version"] == 1
    assert manifest["program"]["name"] == "timmy" and manifest["program"]["description"] == "knows my pets"
    assert manifest["counts"]["lessons"] == 2 and manifest["counts"]["conversations"] == 3
    assert manifest["embeddings"]["encoding"] == "safetensors"
    with zipfile.ZipFile(path) as zf:
        for name, digest in manifest["files"].items():
            assert hashlib.sha256(zf.read(name)).hexdigest() == digest
        assert "openai-compatible:fake@" in zf.read("conversations.jsonl").decode()

    other_home = tmp_path / "elsewhere"
    store2, settings2 = _open(other_home)
    assert [p.name for p in store2.programs()] == ["default"]
    report = import_bundle(store2, path, settings=settings2, model=OTHER_SPEC)
    assert report.program == "timmy" and report.counts["attempts"] == 5
    after = _snapshot(store2, settings2, "timmy")

    for key in (
        "rules",
        "lessons",
        "candidates",
        "ratings",
        "stats",
        "demos",
        "messages",
        "vectors",
        "pinned",
    ):
        assert after[key] == before[key], key
    # Every version came along with its lineage, plus one that switches the model.
    assert after["versions"][:-1] == before["versions"]
    versions = store2.versions("timmy")
    new = store2.active_version("timmy")
    assert new.number == len(before_versions) + 1 == versions[-1].number
    assert new.model_spec == OTHER_SPEC and new.note == f"imported with model {OTHER_SPEC}"
    parents = {v.id: v.number for v in versions}
    assert parents[new.parent_id] == before_versions[-1].number
    assert [parents.get(v.parent_id) for v in versions[:-1]] == [
        {v.id: v.number for v in before_versions}.get(v.parent_id) for v in before_versions
    ]
    assert versions[0].model_spec == before_versions[0].model_spec  # history is not rewritten
    # Ids inside JSON point at the imported rows.
    lessons = {x.id: x.text for x in store2.lessons("timmy", include_inactive=True)}
    for v in versions:
        assert all(lessons[x["id"]] == x["text"] for x in v.lessons)
        assert all(i in lessons for i in v.sources.get("lessons", []))
    attempts = [a for t in _turns(store2, "timmy") for a in t.attempts]
    responses = {a.id: a.response for a in attempts}
    assert any(a.demo_attempt_ids for a in attempts)
    for a in attempts:
        assert all(d in responses for d in a.demo_attempt_ids)
        assert a.version_id in parents
    store2.close()


def _turns(store: Store, program: str) -> list[Any]:
    rows = store.feedback_rows(program)
    return [store.turn(t) for t in sorted({r[1] for r in rows})]


def test_importing_twice_needs_a_new_name(taught: str, tmp_path: Path) -> None:
    path = _export(tmp_path)
    store, settings = _open()
    before = store.row_counts()
    with pytest.raises(MinetuneError, match="already exists.*--as"):
        import_bundle(store, path, settings=settings)
    assert store.row_counts() == before
    report = import_bundle(store, path, settings=settings, name="timmy-copy")
    assert report.program == "timmy-copy"
    assert [x.text for x in store.lessons("timmy-copy")] == [x.text for x in store.lessons("timmy")]
    assert store.active_version("timmy-copy").model_spec == taught  # no --model: nothing added on top
    assert len(store.versions("timmy-copy")) == len(store.versions("timmy"))
    store.close()


def test_numpy_embeddings_when_safetensors_is_missing(
    taught: str, empty_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundle_mod, "_have_safetensors", lambda: False)
    path = _export(tmp_path)
    manifest = read_manifest(path)
    assert manifest["embeddings"]["encoding"] == "npy"
    assert any(n.startswith("embeddings/") and n.endswith(".npy") for n in manifest["files"])
    store, settings = _open()
    before = _snapshot(store, settings, "timmy")["vectors"]
    store.close()
    store2, settings2 = _open(empty_home)
    import_bundle(store2, path, settings=settings2)
    assert _snapshot(store2, settings2, "timmy")["vectors"] == before
    store2.close()


def test_round_trip_between_users_on_each_backend(
    database_url: str, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    """Export and import through one database (SQLite or PostgreSQL), into another user's store;
    a bundle that fails inside the transaction leaves that database unchanged."""
    _teach(f"openai-compatible:fake@{fake_llm.base_url}", fake_llm)
    store, settings = _open()
    before = _snapshot(store, settings, "timmy")
    store.close()
    path = _export(tmp_path)
    friend = Store.open(settings, user="friend")
    counts = friend.row_counts()
    broken = _rewrite(path, tmp_path / "broken.zip", edit=_dangling_version_ref)
    with pytest.raises(MinetuneError, match="not in the bundle"):
        import_bundle(friend, broken, settings=settings)
    assert friend.row_counts() == counts
    import_bundle(friend, path, settings=settings, model=OTHER_SPEC)
    after = _snapshot(friend, settings, "timmy")
    for key in (
        "rules",
        "lessons",
        "candidates",
        "ratings",
        "stats",
        "demos",
        "messages",
        "vectors",
        "pinned",
    ):
        assert after[key] == before[key], key
    friend.close()


# -- adapters ------------------------------------------------------------------------------------------------


def _adapter(tmp_path: Path) -> Path:
    adapter = tmp_path / "runs" / "lora v1"
    (adapter / "nested").mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    (adapter / "nested" / "notes.txt").write_text("trained on 12 accepted answers")
    return adapter


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_adapters_round_trip(taught: str, tmp_path: Path) -> None:
    adapter = _adapter(tmp_path)
    store, _ = _open()
    store.add_version("timmy", note="lora", adapter=str(adapter))
    store.close()

    plain = _export(tmp_path)  # without --with-adapters the path is kept verbatim and no files travel
    assert not any(n.startswith("adapters/") for n in read_manifest(plain)["files"])

    path = tmp_path / "with-adapters.zip"
    store, settings = _open()
    report = export_bundle(store, "timmy", path, with_adapters=True, settings=settings)
    store.close()
    assert report.adapters == ["lora-v1"] and report.counts["adapters"] == 1
    assert read_manifest(path)["adapters"][0]["source"] == str(adapter)

    other_home = tmp_path / "elsewhere"
    store2, settings2 = _open(other_home)
    imported = import_bundle(store2, path, settings=settings2, model=OTHER_SPEC)
    target = other_home / "adapters" / "local" / "timmy" / "lora-v1"  # adapters/<user>/<program>/
    assert imported.adapter_dirs == {"lora-v1": target}
    assert _tree(target) == _tree(adapter)
    versions = store2.versions("timmy")
    assert versions[-2].adapter == str(target) and versions[-1].adapter == str(target)
    assert [v.adapter for v in versions[:-2]] == [None] * (len(versions) - 2)
    assert not [p for p in (other_home / "adapters").iterdir() if p.name.startswith(".incoming")]
    store2.close()

    # A bundle that fails inside the transaction leaves no adapter files behind.
    broken = _rewrite(path, tmp_path / "broken.zip", edit=_dangling_version_ref)
    store3, settings3 = _open(tmp_path / "third")
    before = store3.row_counts()
    with pytest.raises(MinetuneError, match="not in the bundle"):
        import_bundle(store3, broken, settings=settings3)
    assert store3.row_counts() == before
    assert not (tmp_path / "third" / "adapters" / "local" / "timmy").exists()
    assert not list((tmp_path / "third" / "adapters").glob(".incoming-*"))
    store3.close()


def test_missing_adapter_dir_is_a_clear_error(taught: str, tmp_path: Path) -> None:
    store, settings = _open()
    store.add_version("timmy", note="lora", adapter=str(tmp_path / "gone"))
    out = tmp_path / "x.zip"
    with pytest.raises(BundleError, match="adapter .*gone.*not a directory"):
        export_bundle(store, "timmy", out, with_adapters=True, settings=settings)
    assert not out.exists() and not list(tmp_path.glob(".x.zip.*"))
    export_bundle(store, "timmy", out, settings=settings)  # fine without the files
    store.close()


# -- malformed bundles --------------------------------------------------------------------------------------


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def _rewrite(
    source: Path,
    dest: Path,
    edit: Callable[[dict[str, bytes]], None],
    fix_checksums: bool = True,
) -> Path:
    members = _members(source)
    edit(members)
    if fix_checksums and "manifest.json" in members:
        manifest = json.loads(members["manifest.json"])
        if isinstance(manifest.get("files"), dict):
            manifest["files"] = {
                n: hashlib.sha256(b).hexdigest() for n, b in members.items() if n != "manifest.json"
            }
        members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(dest, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return dest


def _edit_json(name: str, change: Callable[[Any], None]) -> Callable[[dict[str, bytes]], None]:
    def edit(members: dict[str, bytes]) -> None:
        doc = json.loads(members[name])
        change(doc)
        members[name] = json.dumps(doc).encode()

    return edit


def _edit_conversations(change: Callable[[list[dict[str, Any]]], None]) -> Callable[[dict[str, bytes]], None]:
    def edit(members: dict[str, bytes]) -> None:
        rows = [json.loads(line) for line in members["conversations.jsonl"].splitlines()]
        change(rows)
        members["conversations.jsonl"] = b"".join(json.dumps(r).encode() + b"\n" for r in rows)

    return edit


def _dangling_version_ref(members: dict[str, bytes]) -> None:
    _edit_conversations(lambda rows: rows[-1]["turns"][0]["attempts"][0].update(version=999))(members)


def _tamper(members: dict[str, bytes]) -> None:
    members["lessons.json"] = members["lessons.json"].replace(b"Be brief.", b"Be rude.")


def _set_stars(rows: list[dict[str, Any]]) -> None:
    rows[0]["turns"][0]["attempts"][0]["feedback"][0]["stars"] = 7


def _set_manifest(key: str, value: Any) -> Callable[[dict[str, bytes]], None]:
    return _edit_json("manifest.json", lambda m: m.__setitem__(key, value))


MALFORMED: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "bad checksum": (
        lambda src, dst: _rewrite(src, dst, _tamper, fix_checksums=False),
        "checksum of lessons.json does not match",
    ),
    "dot-dot member": (
        lambda src, dst: _rewrite(src, dst, lambda m: m.__setitem__("../evil.txt", b"x")),
        "unsafe member name '../evil.txt'",
    ),
    "absolute member": (
        lambda src, dst: _rewrite(src, dst, lambda m: m.__setitem__("/etc/evil", b"x")),
        "unsafe member name",
    ),
    "adapter escaping its folder": (
        lambda src, dst: _rewrite(src, dst, lambda m: m.__setitem__("adapters/x/../../evil", b"x")),
        "unsafe member name",
    ),
    "newer format_version": (
        lambda src, dst: _rewrite(src, dst, _set_manifest("format_version", 2)),
        "format_version 2.*upgrade minetune",
    ),
    "not a bundle format": (
        lambda src, dst: _rewrite(src, dst, _set_manifest("format", "something-else")),
        "not a minetune bundle",
    ),
    "truncated zip": (
        lambda src, dst: (dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2]), dst)[1],
        "not a readable zip",
    ),
    "zero-byte file": (lambda src, dst: (dst.write_bytes(b""), dst)[1], "not a readable zip"),
    "text file": (lambda src, dst: (dst.write_text("hello\n"), dst)[1], "not a readable zip"),
    "missing manifest": (
        lambda src, dst: _rewrite(src, dst, lambda m: m.pop("manifest.json")),
        "no manifest.json",
    ),
    "unlisted member": (
        lambda src, dst: _rewrite(src, dst, lambda m: m.__setitem__("extra.txt", b"x"), fix_checksums=False),
        "not listed: extra.txt",
    ),
    "missing conversations": (
        lambda src, dst: _rewrite(src, dst, lambda m: m.pop("conversations.jsonl")),
        "lacks conversations.jsonl",
    ),
    "truncated json": (
        lambda src, dst: _rewrite(
            src, dst, lambda m: m.__setitem__("versions.json", m["versions.json"][:40])
        ),
        "versions.json in the bundle is not valid JSON",
    ),
    "wrong field type": (
        lambda src, dst: _rewrite(
            src, dst, _edit_json("lessons.json", lambda d: d["lessons"][0].update(text=5))
        ),
        "lesson #1: 'text' must be a string",
    ),
    "stars out of range": (
        lambda src, dst: _rewrite(src, dst, _edit_conversations(_set_stars)),
        "'stars' must be from 1 to 5",
    ),
    "dangling reference": (
        lambda src, dst: _rewrite(src, dst, _dangling_version_ref),
        "refers to version 999, which is not in the bundle",
    ),
    "counts disagree": (
        lambda src, dst: _rewrite(src, dst, _set_manifest("counts", {"lessons": 9})),
        "lessons: 9 listed, 2 found",
    ),
    "bad timestamp": (
        lambda src, dst: _rewrite(
            src, dst, _edit_json("lessons.json", lambda d: d["lessons"][1].update(created_at="yesterday"))
        ),
        "'yesterday' is not an ISO 8601 timestamp",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_bundles_change_nothing(taught: str, empty_home: Path, tmp_path: Path, case: str) -> None:
    make, message = MALFORMED[case]
    bad = make(_export(tmp_path), tmp_path / "bad.zip")
    store, settings = _open(empty_home)
    before = store.row_counts()
    with pytest.raises(MinetuneError, match=message):
        import_bundle(store, bad, settings=settings, name="timmy")
    assert store.row_counts() == before
    assert not (empty_home / "adapters").exists()
    store.close()


def test_a_valid_rewrite_still_imports(taught: str, empty_home: Path, tmp_path: Path) -> None:
    """The malformed cases above are built by rewriting the zip; unchanged, the rewrite imports."""
    good = _rewrite(_export(tmp_path), tmp_path / "same.zip", lambda m: None)
    store, settings = _open(empty_home)
    assert import_bundle(store, good, settings=settings).counts["feedback"] == 4
    store.close()


# -- the command line ----------------------------------------------------------------------------------------


def _cli(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    if home is not None:
        env["MINETUNE_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "minetune.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_export_import(taught: str, tmp_path: Path) -> None:
    out = tmp_path / "timmy.zip"
    result = _cli("bundle", "export", "timmy", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "Exported timmy" in result.stdout and "2 lessons" in result.stdout

    other = tmp_path / "elsewhere"
    result = _cli("bundle", "import", str(out), "--model", OTHER_SPEC, home=other)
    assert result.returncode == 0, result.stderr
    assert "Imported timmy" in result.stdout and "4 feedback" in result.stdout
    store, _ = _open(other)
    assert store.active_version("timmy").model_spec == OTHER_SPEC
    before = store.row_counts()
    store.close()

    again = _cli("bundle", "import", str(out), home=other)
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr
    bad_model = _cli("bundle", "import", str(out), "--as", "t2", "--model", "gpt4", home=other)
    assert bad_model.returncode == 1 and "Traceback" not in bad_model.stderr
    missing = _cli("bundle", "import", str(tmp_path / "nope.zip"), home=other)
    assert missing.returncode == 1 and "No bundle file" in missing.stderr
    store, _ = _open(other)
    assert store.row_counts() == before
    store.close()

    assert _cli("bundle", "import", str(out), "--as", "timmy2", home=other).returncode == 0
    unknown = _cli("bundle", "export", "nobody", "--out", str(tmp_path / "n.zip"))
    assert unknown.returncode == 1 and "No program named 'nobody'" in unknown.stderr
