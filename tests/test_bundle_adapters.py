"""Bundles carry a program's adapter records: domain, method, base model, status, taint, metrics,
parent/replaces links and lineage, with every id remapped on import; a bad record leaves the
store (and the adapters folder) exactly as it was."""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from minetune.app.forget import forget
from minetune.config import Settings, load_settings
from minetune.errors import MinetuneError
from minetune.io.bundle import ADAPTER_RECORDS, export_bundle, import_bundle, read_manifest
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store.schema import Adapter
from minetune.train.base import BaseModel

SYSTEM = "You are terse."
BASE = "/models/base"
QUESTIONS = ("first question", "second question", "third question", "fourth question")


def fake_adapter_dir(path: Path, rank: int) -> Path:
    """A directory with an adapter config and a small, valid safetensors file (no torch needed)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (path / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    return path


def publish(
    store: Store,
    settings: Settings,
    attempts: list[int],
    *,
    parent: int | None = None,
    replaces: int | None = None,
    domain: str = "general",
    activate: bool = True,
) -> Adapter:
    root = settings.home / "adapters" / "p"

    def place(adapter_id: int) -> str:
        return str(fake_adapter_dir(root / str(adapter_id), rank=adapter_id))

    adapter, _ = adapters_db.publish_adapter(
        store,
        "p",
        place=place,
        serve_spec=BaseModel(BASE).spec,
        method="sft",
        base_model=BASE,
        parent_id=parent,
        replaces_id=replaces,
        domain=domain,
        example_attempt_ids=attempts,
        metrics={"steps": 4, "final_loss": 1.25},
        activate=activate,
    )
    return adapter


def build(store: Store, settings: Settings) -> dict[str, Any]:
    """A program whose adapters have a history: A, its continuation B, a ``home`` adapter C,
    a forgotten turn that taints A and B, and D retrained to replace B (which retires B)."""
    store.create_program("p", SYSTEM, f"hf:{BASE}")
    conv = store.start_conversation("p").id
    ids = []
    for question in QUESTIONS:
        turn = store.add_turn(conv, question)
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        attempt = store.add_attempt(
            turn.id, model_spec="hf:x", messages=messages, response=f"answer to {question}", latency_ms=1.0
        )
        store.add_feedback(attempt.id, "explicit", 5)
        ids.append(attempt.id)
    a = publish(store, settings, ids[:2])
    b = publish(store, settings, [ids[2]], parent=a.id)
    c = publish(store, settings, [ids[3]], domain="home", activate=False)
    forgotten = forget(store, settings, turns=[store.attempt(ids[1]).turn_id])
    assert sorted(forgotten.tainted_adapters) == [a.id, b.id]
    d = publish(store, settings, [ids[0], ids[2]], replaces=b.id)
    return {"a": a, "b": b, "c": c, "d": d}


def described(store: Store) -> list[dict[str, Any]]:
    """The program's adapters in terms that do not depend on row ids or paths."""
    rows = [a for a, _ in adapters_db.list_adapters(store, "p", include_retired=True)]
    position = {a.id: i for i, a in enumerate(rows)}

    def questions(attempt_ids: list[Any]) -> list[str]:
        turns = adapters_db.attempt_turns(store, attempt_ids)
        return sorted(adapters_db.turn_messages(store, turns.values()).values())

    return [
        {
            "domain": a.domain,
            "method": a.method,
            "base_model": a.base_model,
            "status": a.status,
            "tainted": a.tainted_at is not None,
            "taint_reason": a.taint_reason,
            "metrics": a.metrics,
            "parent": position.get(a.parent_id) if a.parent_id else None,
            "replaces": position.get(a.replaces_id) if a.replaces_id else None,
            "examples": questions(a.example_attempt_ids),
            "lineage": questions(a.lineage_attempt_ids),
            "job": a.job_id,
            "created_at": a.created_at.replace(tzinfo=None),
        }
        for a in rows
    ]


def test_adapter_records_round_trip_with_lineage_and_files(tmp_path: Path) -> None:
    settings = load_settings()
    store = Store.open(settings)
    made = build(store, settings)
    original = described(store)
    assert [(x["status"], x["tainted"], x["parent"], x["replaces"]) for x in original] == [
        ("ready", True, None, None),
        ("retired", True, 0, None),
        ("ready", False, None, None),
        ("ready", False, None, 1),
    ]
    path = tmp_path / "p.zip"
    report = export_bundle(store, "p", path, with_adapters=True, settings=settings)
    store.close()
    assert report.counts["adapter_records"] == 4 and report.counts["adapters"] == 4
    manifest = read_manifest(path)
    assert manifest["counts"]["adapter_records"] == 4 and ADAPTER_RECORDS in manifest["files"]
    with zipfile.ZipFile(path) as zf:
        records = json.loads(zf.read(ADAPTER_RECORDS))["adapters"]
    assert [r["id"] for r in records] == [1, 2, 3, 4]  # bundle-local ids, not the store's
    assert records[0]["lineage"] == [1] and records[1]["lineage"] == [1, 2]  # the forgotten one is gone
    assert all(r["bundled"] for r in records)

    other_home = tmp_path / "elsewhere"
    other = load_settings(home=other_home)
    store2 = Store.open(other)
    store2.create_program("filler", "x")  # so the new rows get different ids than the old ones
    for _ in range(len(made)):
        adapters_db.publish_adapter(
            store2,
            "filler",
            place=lambda i: str(fake_adapter_dir(tmp_path / "filler" / str(i), rank=1)),
            serve_spec=BaseModel(BASE).spec,
            method="sft",
            base_model=BASE,
        )
    imported = import_bundle(store2, path, settings=other)
    assert imported.counts["adapter_records"] == 4
    assert described(store2) == original
    new = [a for a, _ in adapters_db.list_adapters(store2, "p", include_retired=True)]
    assert {a.id for a in new}.isdisjoint({m.id for m in made.values()})
    # Each record points at its own extracted files (the fake configs carry the original id as rank).
    assert all(Path(a.path).parent == other_home / "adapters" / "local" / "p" for a in new)
    ranks = [json.loads((Path(a.path) / "adapter_config.json").read_text())["r"] for a in new]
    assert ranks == [m.id for m in made.values()]
    d = new[3]
    active = store2.active_version("p")
    serving = adapters_db.active_adapter(store2, "p")
    assert active.adapter == d.path and serving is not None and serving.id == d.id
    assert active.sources["adapter"] == d.id  # ids inside a version's sources are remapped too
    assert active.sources["parent_adapter"] is None
    # The lineage holds real attempt ids of the new store: forgetting a turn taints D there.
    d_turns = adapters_db.attempt_turns(store2, d.example_attempt_ids)
    result = forget(store2, load_settings(), turns=[min(d_turns.values())])
    assert d.id in result.tainted_adapters
    store2.close()


def test_without_files_records_keep_their_paths(tmp_path: Path) -> None:
    settings = load_settings()
    store = Store.open(settings)
    made = build(store, settings)
    path = tmp_path / "p.zip"
    export_bundle(store, "p", path, settings=settings)
    original = described(store)
    store.close()
    assert not any(n.startswith("adapters/") for n in read_manifest(path)["files"])
    store2 = Store.open(load_settings(home=tmp_path / "elsewhere"))
    import_bundle(store2, path, settings=load_settings(home=tmp_path / "elsewhere"))
    assert described(store2) == original
    paths = [a.path for a, _ in adapters_db.list_adapters(store2, "p", include_retired=True)]
    assert paths == [m.path for m in made.values()]  # valid only where they were trained
    store2.close()


def test_a_bundle_from_before_adapter_records_still_imports(tmp_path: Path) -> None:
    settings = load_settings()
    store = Store.open(settings)
    build(store, settings)
    path = export_bundle(store, "p", tmp_path / "p.zip", settings=settings).path
    store.close()

    def older(members: dict[str, bytes]) -> None:
        del members[ADAPTER_RECORDS]
        manifest = json.loads(members["manifest.json"])
        del manifest["counts"]["adapter_records"]
        members["manifest.json"] = json.dumps(manifest).encode()

    old = rewrite(path, tmp_path / "old.zip", older)
    store2 = Store.open(load_settings(home=tmp_path / "elsewhere"))
    report = import_bundle(store2, old, settings=load_settings(home=tmp_path / "elsewhere"))
    assert report.counts["adapter_records"] == 0 and report.counts["versions"] == 5
    assert adapters_db.list_adapters(store2, "p", include_retired=True) == []
    assert store2.active_version("p").sources["adapter"] is None  # no record to point at
    store2.close()


# -- bad bundles change nothing ----------------------------------------------------------------------------


def rewrite(source: Path, dest: Path, edit: Callable[[dict[str, bytes]], None], fix: bool = True) -> Path:
    with zipfile.ZipFile(source) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    edit(members)
    if fix:
        manifest = json.loads(members["manifest.json"])
        manifest["files"] = {
            n: hashlib.sha256(b).hexdigest() for n, b in members.items() if n != "manifest.json"
        }
        members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(dest, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return dest


def records(change: Callable[[list[dict[str, Any]]], None]) -> Callable[[dict[str, bytes]], None]:
    def edit(members: dict[str, bytes]) -> None:
        doc = json.loads(members[ADAPTER_RECORDS])
        change(doc["adapters"])
        members[ADAPTER_RECORDS] = json.dumps(doc).encode()

    return edit


def counts(members: dict[str, bytes]) -> None:
    manifest = json.loads(members["manifest.json"])
    manifest["counts"]["adapter_records"] = 9
    members["manifest.json"] = json.dumps(manifest).encode()


BAD: dict[str, tuple[Callable[[dict[str, bytes]], None], bool, str]] = {
    "tampered records": (
        lambda m: m.__setitem__(ADAPTER_RECORDS, m[ADAPTER_RECORDS].replace(b'"home"', b'"work"')),
        False,
        "checksum of adapters.json does not match",
    ),
    "lineage outside the bundle": (
        records(lambda rs: rs[3]["lineage"].append(999)),
        True,
        "Adapter 4's lineage refers to attempt 999, which is not in the bundle",
    ),
    "parent outside the bundle": (
        records(lambda rs: rs[1].update(parent=77)),
        True,
        "refers to adapter 77, which is not in the bundle",
    ),
    "two records with one id": (records(lambda rs: rs[2].update(id=1)), True, "Two adapter records share"),
    "unknown status": (records(lambda rs: rs[0].update(status="lost")), True, "'status' must be one of"),
    "examples not ids": (records(lambda rs: rs[0].update(examples=["x"])), True, "list of attempt ids"),
    "bundled files missing": (
        records(lambda rs: rs[0].update(bundled="nope")),
        True,
        "names the bundled adapter 'nope', which is not in the bundle",
    ),
    "method too long": (records(lambda rs: rs[0].update(method="x" * 30)), True, "longer than 20"),
    "counts disagree": (counts, True, "adapter_records: 9 listed, 4 found"),
    "not json": (
        lambda m: m.__setitem__(ADAPTER_RECORDS, b"{"),
        True,
        "adapters.json in the bundle is not valid",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_adapter_record_changes_nothing(tmp_path: Path, case: str) -> None:
    settings = load_settings()
    store = Store.open(settings)
    build(store, settings)
    good = export_bundle(store, "p", tmp_path / "p.zip", with_adapters=True, settings=settings).path
    store.close()
    edit, fix, message = BAD[case]
    bad = rewrite(good, tmp_path / "bad.zip", edit, fix)
    home = tmp_path / "elsewhere"
    store2 = Store.open(load_settings(home=home))
    before = store2.row_counts()
    with pytest.raises(MinetuneError, match=message):
        import_bundle(store2, bad, settings=load_settings(home=home))
    assert store2.row_counts() == before
    assert not (home / "adapters").exists() or not any((home / "adapters").iterdir())
    # The untouched bundle still imports, so the case above failed for its own reason.
    assert import_bundle(store2, good, settings=load_settings(home=home)).counts["adapter_records"] == 4
    store2.close()
