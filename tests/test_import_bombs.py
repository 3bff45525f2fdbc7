"""Hostile imports: zip bombs, giant JSON elements, overlong titles and messages, empty files.

Each bomb is built on the fly; the CLI runs as a subprocess of a small measuring process, so its
peak RSS is measured exactly (``RUSAGE_CHILDREN`` of that process is the CLI's own).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from minetune.config import Settings, load_settings
from minetune.io.importers import ImportFormatError, ImportLimits, import_file
from minetune.store import Store
from minetune.store.schema import Conversation, ImportRecord

MiB = 1 << 20
RSS_LIMIT_MB = 300


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    seconds: float


# A small Python process runs the CLI and reports its child's peak RSS: a child forked straight
# from pytest would carry pytest's own high-water mark (torch loaded: ~900 MB) in ru_maxrss.
_MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call([sys.executable, "-m", "minetune.cli", *sys.argv[2:]], timeout=float(sys.argv[1]))
seconds = time.perf_counter() - start
sys.stderr.write(f"\\n@@ {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {seconds} {code}\\n")
"""


def run_cli(*args: str, timeout: float = 120) -> Run:
    """Run ``minetune ARGS`` and measure its own peak RSS and wall time."""
    env = {**os.environ, "COLUMNS": "200"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(timeout), *args],
            capture_output=True,
            env=env,
            timeout=timeout + 30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"minetune {' '.join(args)} ran past {timeout} s")
    err, _, report = done.stderr.decode("utf-8", "replace").rpartition("\n@@ ")
    assert report, f"the measuring process failed: {done.stderr[-2000:]!r}"
    maxrss_kib, seconds, code = report.split()
    return Run(int(code), done.stdout.decode("utf-8", "replace"), err, int(maxrss_kib) / 1024, float(seconds))


def write_zip_bomb(path: Path, size_mb: int, *, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A ChatGPT export whose conversations.json is one conversation with a ``size_mb`` MiB title."""
    block = b"A" * MiB
    with (
        zipfile.ZipFile(path, "w", compression) as zf,
        zf.open("conversations.json", "w", force_zip64=True) as fh,
    ):
        fh.write(b'[{"id": "bomb", "title": "')
        for _ in range(size_mb):
            fh.write(block)
        fh.write(b'", "mapping": {}}]')
    return path


def counts() -> dict[str, int]:
    store = Store.open(load_settings())
    try:
        return store.row_counts()
    finally:
        store.close()


def seeded_counts(tmp_path: Path) -> dict[str, int]:
    """Import one real conversation first, so 'unchanged' compares a non-empty store."""
    path = tmp_path / "seed.jsonl"
    line = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    assert run_cli("import", str(path), "--no-learn").returncode == 0
    before = counts()
    assert before["conversations"] == 1 and before["imports"] == 1
    return before


def check_refused(run: Run, before: dict[str, int], *expected: str) -> None:
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.startswith("error: ") and len(run.stderr.strip().splitlines()) == 1
    assert len(run.stderr) < 1200  # never the bomb's content
    for text in expected:
        assert text in run.stderr
    assert "Traceback" not in run.stderr
    assert run.peak_rss_mb < RSS_LIMIT_MB, f"peak RSS {run.peak_rss_mb:.0f} MB"
    assert counts() == before


# -- zip bombs through the CLI ------------------------------------------------------------------------


def test_200_mb_element_zip_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    before = seeded_counts(tmp_path)
    bomb = write_zip_bomb(tmp_path / "export.zip", 200)
    assert bomb.stat().st_size < MiB
    run = run_cli("import", str(bomb))
    check_refused(run, before, "export.zip", "'conversations.json'", "zip bomb")
    assert run.seconds < 10


@pytest.mark.slow
def test_1_gb_element_zip_bomb_is_refused_under_300_mb(tmp_path: Path) -> None:
    before = seeded_counts(tmp_path)
    bomb = write_zip_bomb(tmp_path / "export.zip", 1024)
    run = run_cli("import", str(bomb))
    check_refused(run, before, "zip bomb")
    assert run.seconds < 10


def test_a_huge_element_in_a_stored_zip_is_refused_while_streaming(tmp_path: Path) -> None:
    """No compression, so the ratio check passes: the JSON element cap must stop it."""
    before = seeded_counts(tmp_path)
    bomb = write_zip_bomb(tmp_path / "export.zip", 100, compression=zipfile.ZIP_STORED)
    run = run_cli("import", str(bomb))
    check_refused(
        run, before, "element 1 of the JSON array is larger than the 32 MiB limit", "--max-element-mb"
    )


def test_a_huge_jsonl_line_is_refused_while_streaming(tmp_path: Path) -> None:
    before = seeded_counts(tmp_path)
    path = tmp_path / "chat.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        fh.write('{"messages": [{"role": "user", "content": "')
        for _ in range(48):
            fh.write("B" * MiB)
        fh.write('"}]}\n')
    run = run_cli("import", str(path))
    check_refused(run, before, "chat.jsonl: line 1 is larger than the 32 MiB limit")


def test_max_element_mb_raises_the_cap(tmp_path: Path) -> None:
    """The cap is the user's to raise: a 2 MiB conversation refused at 1 MiB imports at 3."""
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([_conversation("big", "x" * (2 * MiB), "answer")]), encoding="utf-8")
    refused = run_cli("import", str(path), "--no-learn", "--max-element-mb", "1")
    assert refused.returncode == 1 and "larger than the 1 MiB limit" in refused.stderr
    # 2 MiB of message is over the 1 Mi-character message cap: skipped, reported, nothing recorded.
    skipped = run_cli("import", str(path), "--no-learn", "--max-element-mb", "3")
    assert skipped.returncode == 0, skipped.stderr
    assert "Nothing imported" in skipped.stdout and "over the 1,048,576-character limit" in skipped.stdout
    assert counts()["imports"] == 0


# -- declared sizes and ratios, in-process ---------------------------------------------------------


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store.open(settings)
    yield s
    s.close()


def _conversation(conv_id: str, question: str, answer: str, title: str = "T") -> dict[str, Any]:
    def node(nid: str, parent: str | None, role: str | None, text: str = "") -> dict[str, Any]:
        message = None
        if role is not None:
            message = {
                "author": {"role": role},
                "content": {"content_type": "text", "parts": [text]},
                "metadata": {},
            }
        return {"id": nid, "parent": parent, "children": [], "message": message}

    return {
        "id": conv_id,
        "title": title,
        "current_node": "a",
        "mapping": {
            "root": node("root", None, None),
            "u": node("u", "root", "user", question),
            "a": node("a", "u", "assistant", answer),
        },
    }


def test_a_member_that_declares_less_than_it_holds_is_refused(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    """The central directory says 10 bytes; the member really holds more: the archive is refused."""
    path = tmp_path / "liar.zip"
    content = json.dumps([_conversation("c1", "q", "a")]).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("conversations.json", content)
    data = bytearray(path.read_bytes())
    central = data.rindex(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")  # uncompressed size
    path.write_bytes(bytes(data))
    before = store.row_counts()
    with pytest.raises(ImportFormatError, match="liar.zip"):
        import_file(store, settings, path, learn=False)
    assert store.row_counts() == before


def test_declared_member_size_over_the_limit_is_refused_before_reading(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("conversations.json", json.dumps([_conversation("c1", "q", "a")]))
    limits = ImportLimits(member_bytes=100)
    with pytest.raises(ImportFormatError, match="declares .* over the 100 bytes limit"):
        import_file(store, settings, path, learn=False, limits=limits)
    assert store.row_counts()["imports"] == 0


def test_an_ordinary_export_passes_the_ratio_check(store: Store, settings: Settings, tmp_path: Path) -> None:
    """Even very repetitive JSON (this compresses about 70×) stays under the 200× limit."""
    path = tmp_path / "export.zip"
    items = [_conversation(f"c{i}", f"Question {i} about cats?", f"Answer {i}: Tom.") for i in range(2000)]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("conversations.json", json.dumps(items, indent=2))
    info = zipfile.ZipFile(path).getinfo("conversations.json")
    assert info.file_size > MiB  # past the floor, so the ratio is really checked
    report = import_file(store, settings, path, learn=False)
    assert report.conversations == 2000


# -- titles, messages, empty results -------------------------------------------------------------


def test_titles_and_messages_are_capped_with_a_note(store: Store, settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "conversations.json"
    items = [
        _conversation("long-title", "q1", "a1", title="T" * 100_000),
        _conversation("long-message", "q" * (2 * MiB), "a2", title="Huge paste"),
        _conversation("fine", "q3", "a3"),
    ]
    path.write_text(json.dumps(items), encoding="utf-8")
    report = import_file(store, settings, path, learn=False)
    assert report.conversations == 2
    with store.db.transaction() as s:
        titles = sorted(len(t) for t in s.scalars(select(Conversation.title)))
    assert titles == [1, 500]
    assert "1 title(s) longer than 500 characters were shortened" in report.notes
    (skip,) = [i for i in report.skipped_items if "Huge paste" in i.where]
    assert skip.reason == "a message of 2,097,152 characters is over the 1,048,576-character limit"


def test_an_unbounded_title_is_not_printed(tmp_path: Path) -> None:
    """A conversation that is skipped names itself by a clipped title, not by 10 MB of it."""
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([{"id": "x", "title": "T" * (10 * MiB), "mapping": {}}]), encoding="utf-8")
    run = run_cli("import", str(path), "--no-learn")
    assert run.returncode == 0, run.stderr
    assert len(run.stdout) < 2000 and "no current_node" in run.stdout
    assert "Nothing imported" in run.stdout and "no import was recorded" in run.stdout
    assert run.peak_rss_mb < RSS_LIMIT_MB


def test_a_file_with_no_conversation_records_no_import(database_url: str, tmp_path: Path) -> None:
    settings = load_settings()
    store = Store.open(settings)
    try:
        _check_no_import(store, settings, tmp_path)
    finally:
        store.close()


def _check_no_import(store: Store, settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([{"id": "x", "title": "t", "mapping": {}}]), encoding="utf-8")
    before = store.row_counts()
    report = import_file(store, settings, path, learn=False)
    assert report.import_id is None and report.conversations == 0 and report.skipped == 1
    assert any("no import was recorded" in note for note in report.notes)
    assert store.row_counts() == before
    with store.db.transaction() as s:
        assert s.scalars(select(ImportRecord)).all() == []
    again = import_file(store, settings, path, learn=False)  # not "already imported": nothing was
    assert not again.already_imported


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[" + "[" * 100_000 + "]" * 100_000 + "]", "cannot be read"),
        ('[{"n": ' + "9" * 5000 + "}]", "cannot be read"),
    ],
    ids=["deep nesting", "5000-digit number"],
)
def test_pathological_json_is_a_clear_error(
    text: str, expected: str, store: Store, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "alpaca.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ImportFormatError, match=expected):
        import_file(store, settings, path, learn=False, format="alpaca")


# -- program bundles ----------------------------------------------------------------------------------


def _bundle(store: Store, settings: Settings, path: Path) -> dict[str, bytes]:
    """The members of a real (small) exported bundle."""
    from minetune.io.bundle import export_bundle

    store.create_program("p", "Be brief.")
    export_bundle(store, "p", path, settings=settings)
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def _write_bundle(path: Path, members: dict[str, bytes], big: tuple[str, int] | None = None) -> Path:
    """``members`` as a bundle with correct checksums; ``big`` = (member, MiB) streams that member as
    one line of a repeated character, so the bomb is never held in memory here either."""
    files = {n: hashlib.sha256(b).hexdigest() for n, b in members.items() if n != "manifest.json"}
    block = b"A" * MiB
    if big is not None:
        digest = hashlib.sha256()
        for _ in range(big[1]):
            digest.update(block)
        files[big[0]] = digest.hexdigest()
    manifest = json.loads(members["manifest.json"]) | {"files": files}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for name, data in members.items():
            if name != "manifest.json" and (big is None or name != big[0]):
                zf.writestr(name, data)
        if big is not None:
            with zf.open(big[0], "w", force_zip64=True) as fh:
                for _ in range(big[1]):
                    fh.write(block)
    return path


def test_a_256_mb_bundle_bomb_is_refused_fast_in_bounded_memory(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    members = _bundle(store, settings, tmp_path / "p.zip")
    bomb = _write_bundle(tmp_path / "bomb.zip", members, big=("conversations.jsonl", 256))
    assert bomb.stat().st_size < MiB
    before = counts()
    run = run_cli("bundle", "import", str(bomb), "--as", "q")
    check_refused(run, before, "conversations.jsonl", "zip bomb")
    assert run.seconds < 5 and run.peak_rss_mb < 200


def test_an_overlong_bundle_line_is_refused_while_reading(
    store: Store, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the ratio limit (the line is real, if dull): the per-line limit refuses it."""
    from minetune.io import bundle as bundle_mod
    from minetune.io.bundle import BundleError, import_bundle

    members = _bundle(store, settings, tmp_path / "p.zip")
    members["conversations.jsonl"] = os.urandom(3 * MiB).hex().encode()  # 6 MiB, one line
    path = _write_bundle(tmp_path / "long.zip", members)
    monkeypatch.setattr(bundle_mod, "_MAX_LINE_BYTES", 4 * MiB)
    before = store.row_counts()
    with pytest.raises(BundleError, match="conversations.jsonl line 1 in the bundle is longer than 4.0 MiB"):
        import_bundle(store, path, settings=settings, name="q")
    assert store.row_counts() == before
