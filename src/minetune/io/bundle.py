"""Portable program bundles: one program's versions, lessons, rated data, embeddings, adapter
records (with their lineage) and (optionally) adapter files in a zip of JSON and safetensors that
another machine can import.

The format is specified in ``docs/bundle-format.md``; :data:`FORMAT_VERSION` is its version.
Importing is all-or-nothing: the bundle is fully read and checked (member names, checksums,
every record) before the store is touched, and the rows are written in one transaction.

    from minetune.io.bundle import export_bundle, import_bundle
    export_bundle(store, "timmy", "timmy.mtb.zip", with_adapters=True)
    import_bundle(other_store, "timmy.mtb.zip", settings=other_settings, model="ollama:llama3.2")
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from minetune.config import Settings
from minetune.errors import MinetuneError
from minetune.files import private_dirs, private_tree, user_folder
from minetune.store import Store
from minetune.store.schema import ADAPTER_STATUSES, FEEDBACK_KINDS, LESSON_STATUSES
from minetune.store.transfer import (
    EmbeddingRecord,
    ProgramDump,
    dump_program,
    load_program,
    program_exists,
)

FORMAT_NAME = "minetune-bundle"
FORMAT_VERSION = 1

MANIFEST = "manifest.json"
VERSIONS = "versions.json"
LESSONS = "lessons.json"
CONVERSATIONS = "conversations.jsonl"
ADAPTER_RECORDS = "adapters.json"
EMBEDDINGS_SAFETENSORS = "embeddings.safetensors"
EMBEDDINGS_NPY_DIR = "embeddings"
ADAPTERS_DIR = "adapters"
ADAPTER_MARK = "?adapter="  # how a model spec names its adapter (minetune.models.spec)

_CHUNK = 1 << 20
_MAX_MANIFEST_BYTES = 64 << 20
# Bounds checked before anything is read, so a zip bomb is refused in milliseconds: every member's
# declared size and compression ratio, the JSON documents read whole, and each conversations line
# (a conversation with every attempt's full prompt, so it may legitimately be large).
_MAX_MEMBER_BYTES = 16 << 30
_MAX_JSON_BYTES = 64 << 20
_MAX_LINE_BYTES = 256 << 20
_MAX_RATIO = 200
_RATIO_FLOOR = 1 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
# Column widths of the schema's String columns, checked so PostgreSQL never truncates or refuses.
_MAX_LEN = {
    "name": 200,
    "title": 500,
    "source": 50,
    "external_id": 300,
    "model_spec": 500,
    "adapter": 1000,
    "domain": 200,
    "method": 20,
    "base_model": 1000,
    "path": 1000,
}


class BundleError(MinetuneError):
    """A bundle cannot be written, or a file is not a valid bundle; nothing was changed."""


@dataclass(frozen=True)
class BundleReport:
    """What an export wrote or an import created."""

    path: Path
    program: str
    counts: dict[str, int]
    active_version: int  # version number
    adapters: list[str] = field(default_factory=list)  # bundled adapter names
    adapter_dirs: dict[str, Path] = field(default_factory=dict)  # import: name -> extracted directory
    embeddings: str | None = None  # "safetensors", "npy" or None when there were none


# -- small helpers -------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def _slug(name: str) -> str:
    """A file-system-safe folder name for a program or adapter name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:100]
    return slug or "program"


def _have_safetensors() -> bool:
    try:
        import safetensors.numpy  # noqa: F401
    except ImportError:
        return False
    return True


# -- export --------------------------------------------------------------------------------------------


class _Writer:
    """Zip members written with their sha256 recorded for the manifest."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.checksums: dict[str, str] = {}

    def bytes(self, name: str, data: bytes, compress: bool = True) -> None:
        kind = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        self.zf.writestr(name, data, compress_type=kind)
        self.checksums[name] = hashlib.sha256(data).hexdigest()

    def stream(self, name: str) -> _HashingStream:
        return _HashingStream(self, name)

    def file(self, name: str, source: Path) -> None:
        with self.stream(name) as out, source.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                out.write(chunk)


class _HashingStream:
    def __init__(self, writer: _Writer, name: str) -> None:
        self.writer = writer
        self.name = name
        self.digest = hashlib.sha256()
        info = zipfile.ZipInfo(name, _zip_time())
        info.compress_type = zipfile.ZIP_DEFLATED
        self.fh: IO[bytes] = writer.zf.open(info, "w", force_zip64=True)

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.fh.write(data)

    def __enter__(self) -> _HashingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()
        self.writer.checksums[self.name] = self.digest.hexdigest()


def _remap_spec_adapter(spec: str | None, moved_from: dict[str, str]) -> str | None:
    """``spec`` with its ``?adapter=`` directory moved to where the bundle's copy was extracted
    (a spec naming an adapter that was not bundled is left as it is)."""
    if not spec:
        return spec
    head, mark, adapter = spec.partition(ADAPTER_MARK)
    if not mark or adapter.strip() not in moved_from:
        return spec
    return f"{head}{mark}{moved_from[adapter.strip()]}"


def _zip_time() -> tuple[int, int, int, int, int, int]:
    now = datetime.now()
    return (now.year, now.month, now.day, now.hour, now.minute, now.second)


def _adapter_dir(adapter: str, settings: Settings | None) -> Path | None:
    path = Path(adapter).expanduser()
    if not path.is_absolute() and not path.is_dir() and settings is not None:
        path = settings.home / path
    return path if path.is_dir() else None


def _collect_adapters(
    dump: ProgramDump, program: str, settings: Settings | None
) -> list[tuple[str, str, Path, list[str]]]:
    """(bundle name, original path, directory, relative files) per distinct adapter directory of any
    version or adapter record; sets each version's ``adapter_bundled`` and each record's ``bundled``.
    A version's missing directory is an error; a record's (say, a retired adapter's deleted files)
    leaves that record metadata only."""
    by_path: dict[str, str] = {}
    found: list[tuple[str, str, Path, list[str]]] = []
    used: set[str] = set()

    def collect(adapter: str, directory: Path) -> str:
        if adapter not in by_path:
            base = _slug(directory.resolve().name) if directory.resolve().name else "adapter"
            name, n = base, 1
            while name in used:
                n += 1
                name = f"{base}-{n}"
            used.add(name)
            files = []
            for root, dirs, names in os.walk(directory):
                dirs.sort()
                for fname in sorted(names):
                    full = Path(root) / fname
                    if full.is_file():
                        files.append(full.relative_to(directory).as_posix())
            by_path[adapter] = name
            found.append((name, adapter, directory, files))
        return by_path[adapter]

    for version in dump.versions:
        adapter = version.get("adapter")
        if not adapter:
            continue
        directory = _adapter_dir(adapter, settings)
        if directory is None:
            raise BundleError(
                f"Version {version['number']} of {program!r} uses the adapter {adapter!r}, which is "
                "not a directory here; restore it or export without --with-adapters."
            )
        version["adapter_bundled"] = collect(adapter, directory)
    for record in dump.adapters:
        directory = _adapter_dir(record["path"], settings) if record.get("path") else None
        record["bundled"] = collect(record["path"], directory) if directory is not None else None
    return found


def _embedding_groups(records: list[EmbeddingRecord]) -> list[tuple[str, str, int, np.ndarray, np.ndarray]]:
    """(group name, embedder, dim, turn ids, vectors) per (embedder, dim)."""
    grouped: dict[tuple[str, int], list[EmbeddingRecord]] = {}
    for record in records:
        grouped.setdefault((record.model, record.dim), []).append(record)
    groups = []
    for i, ((model, dim), rows) in enumerate(sorted(grouped.items())):
        turns = np.array([r.turn for r in rows], dtype=np.int64)
        vectors = np.stack([np.frombuffer(r.vector, dtype="<f4") for r in rows]).astype("<f4")
        if vectors.shape != (len(rows), dim):
            raise BundleError(f"Stored embeddings of {model!r} do not have {dim} values each.")
        groups.append((f"g{i}", model, dim, turns, vectors))
    return groups


def export_bundle(
    store: Store,
    program: str,
    out: str | Path,
    *,
    with_adapters: bool = False,
    settings: Settings | None = None,
) -> BundleReport:
    """Write ``program`` of ``store`` to the bundle file ``out`` (replaced if it exists).

    With ``with_adapters`` the adapter directory of every version that names one is copied in;
    a missing directory is an error. ``settings`` resolves relative adapter paths against the home.
    """
    from minetune import __version__

    out = Path(out).expanduser()
    if out.is_dir():
        raise BundleError(f"{out} is a directory; give a file name for the bundle, e.g. {program}.zip.")
    dump = dump_program(store, program)
    for version in dump.versions:
        version["adapter_bundled"] = None
    for record in dump.adapters:
        record["bundled"] = None
    adapters = _collect_adapters(dump, program, settings) if with_adapters else []
    groups = _embedding_groups(dump.embeddings)
    encoding = None
    if groups:
        encoding = "safetensors" if _have_safetensors() else "npy"
    counts = dump.counts() | {"adapters": len(adapters)}

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            writer = _Writer(zf)
            writer.bytes(
                VERSIONS, _json_bytes({"active_version": dump.active_version, "versions": dump.versions})
            )
            writer.bytes(LESSONS, _json_bytes({"lessons": dump.lessons}))
            writer.bytes(ADAPTER_RECORDS, _json_bytes({"adapters": dump.adapters}))
            with writer.stream(CONVERSATIONS) as stream:
                for conversation in dump.conversations:
                    stream.write(json.dumps(conversation, ensure_ascii=False).encode("utf-8") + b"\n")
            if encoding == "safetensors":
                from safetensors.numpy import save

                tensors: dict[str, np.ndarray] = {}
                for name, _, _, turns, vectors in groups:
                    tensors[f"{name}.turns"] = turns
                    tensors[f"{name}.vectors"] = vectors
                writer.bytes(EMBEDDINGS_SAFETENSORS, save(tensors), compress=False)
            elif encoding == "npy":
                for name, _, _, turns, vectors in groups:
                    for part, array in (("turns", turns), ("vectors", vectors)):
                        buf = io.BytesIO()
                        np.save(buf, array, allow_pickle=False)
                        writer.bytes(
                            f"{EMBEDDINGS_NPY_DIR}/{name}.{part}.npy", buf.getvalue(), compress=False
                        )
            for name, _, directory, files in adapters:
                for rel in files:
                    writer.file(f"{ADAPTERS_DIR}/{name}/{rel}", directory / rel)
            manifest = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "minetune_version": __version__,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "program": dump.program,
                "active_version": next(v["number"] for v in dump.versions if v["id"] == dump.active_version),
                "counts": counts,
                "embeddings": None
                if encoding is None
                else {
                    "encoding": encoding,
                    "groups": [
                        {"name": name, "embedder": model, "dim": dim, "dtype": "float32", "count": len(turns)}
                        for name, model, dim, turns, _ in groups
                    ],
                },
                "adapters": [
                    {"name": name, "source": source, "files": files} for name, source, _, files in adapters
                ],
                "files": dict(sorted(writer.checksums.items())),
            }
            zf.writestr(MANIFEST, _json_bytes(manifest))
        os.replace(tmp, out)
    except OSError as exc:
        raise BundleError(f"Could not write the bundle {out}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return BundleReport(
        path=out,
        program=program,
        counts=counts,
        active_version=manifest["active_version"],
        adapters=[a[0] for a in adapters],
        embeddings=encoding,
    )


# -- reading and checking a bundle ----------------------------------------------------------------------


def _check_member_name(name: str) -> None:
    bad = (
        not name
        or name.startswith(("/", "\\"))
        or "\\" in name
        or "\x00" in name
        or re.match(r"^[A-Za-z]:", name) is not None
        or any(part in ("..", ".") for part in name.rstrip("/").split("/"))
        or "//" in name
    )
    if bad:
        raise BundleError(
            f"The bundle has an unsafe member name {name!r} (absolute or with '..'); refusing to read it."
        )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def _check_member_size(info: zipfile.ZipInfo) -> None:
    """Refuse a member whose declared size, or expansion from its compressed size, is implausible."""
    size, packed = info.file_size, max(info.compress_size, 1)
    if size > _MAX_MEMBER_BYTES:
        raise BundleError(f"The bundle member {info.filename} declares {_mib(size)}; refusing it.")
    if size > _RATIO_FLOOR and size > _MAX_RATIO * packed:
        raise BundleError(
            f"The bundle member {info.filename} expands {size / packed:,.0f}× ({_mib(packed)} to "
            f"{_mib(size)}, over the {_MAX_RATIO}× limit); refusing a likely zip bomb."
        )
    if info.filename in (MANIFEST, VERSIONS, LESSONS, ADAPTER_RECORDS) and size > _MAX_JSON_BYTES:
        raise BundleError(f"{info.filename} in the bundle is implausibly large ({_mib(size)}).")


def _read_member(zf: zipfile.ZipFile, name: str) -> Iterator[bytes]:
    """A member's bytes in chunks; never more than it declares (zipfile stops there and checks the CRC)."""
    info = zf.getinfo(name)
    _check_member_size(info)
    seen = 0
    try:
        with zf.open(info) as fh:
            while chunk := fh.read(_CHUNK):
                seen += len(chunk)
                if seen > info.file_size:
                    raise BundleError(f"The bundle member {name} holds more than it declares; refusing it.")
                yield chunk
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise BundleError(f"The bundle member {name} is damaged: {exc}") from exc


def _member_bytes(zf: zipfile.ZipFile, name: str) -> bytes:
    return b"".join(_read_member(zf, name))


def _load_json(data: bytes, name: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: also huge numbers
        raise BundleError(f"{name} in the bundle is not valid JSON: {str(exc)[:200]}") from exc


_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "str": (str,),
    "num": (int, float),
    "list": (list,),
    "dict": (dict,),
}


_EXPECTED = {"int": "an integer", "str": "a string", "num": "a number", "list": "a list", "dict": "an object"}


def _field(obj: dict[str, Any], key: str, kind: str, where: str, *, null: bool = False) -> Any:
    if key not in obj:
        if null:
            return None
        raise BundleError(f"{where}: the field {key!r} is missing.")
    value: Any = obj[key]
    if value is None and null:
        return None
    if isinstance(value, bool) or not isinstance(value, _TYPES[kind]):
        expected = _EXPECTED[kind] + (" or null" if null else "")
        raise BundleError(f"{where}: {key!r} must be {expected}, got {value!r}.")
    if isinstance(value, str) and key in _MAX_LEN and len(value) > _MAX_LEN[key]:
        raise BundleError(f"{where}: {key!r} is longer than {_MAX_LEN[key]} characters.")
    return value


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(f"{where} must be a JSON object.")
    return value


def _check_version(v: Any, i: int) -> dict[str, Any]:
    where = f"{VERSIONS}: version #{i + 1}"
    v = _obj(v, where)
    _field(v, "id", "int", where)
    if _field(v, "number", "int", where) < 1:
        raise BundleError(f"{where}: 'number' must be at least 1.")
    _field(v, "parent", "int", where, null=True)
    _field(v, "instructions", "str", where)
    _field(v, "lessons", "list", where)
    _field(v, "demo_policy", "dict", where)
    _field(v, "model_spec", "str", where, null=True)
    _field(v, "adapter", "str", where, null=True)
    _field(v, "adapter_bundled", "str", where, null=True)
    _field(v, "note", "str", where)
    _field(v, "sources", "dict", where)
    _field(v, "created_at", "str", where, null=True)
    return v


def _check_adapter_record(r: Any, i: int) -> dict[str, Any]:
    where = f"{ADAPTER_RECORDS}: adapter #{i + 1}"
    r = _obj(r, where)
    _field(r, "id", "int", where)
    _field(r, "parent", "int", where, null=True)
    _field(r, "replaces", "int", where, null=True)
    if not _field(r, "domain", "str", where).strip():
        raise BundleError(f"{where}: 'domain' is empty.")
    _field(r, "method", "str", where)
    _field(r, "base_model", "str", where)
    _field(r, "path", "str", where)
    if _field(r, "status", "str", where) not in ADAPTER_STATUSES:
        raise BundleError(f"{where}: 'status' must be one of {', '.join(ADAPTER_STATUSES)}.")
    for key in ("examples", "lineage"):
        ids = _field(r, key, "list", where)
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in ids):
            raise BundleError(f"{where}: {key!r} must be a list of attempt ids.")
    _field(r, "metrics", "dict", where)
    _field(r, "tainted_at", "str", where, null=True)
    _field(r, "taint_reason", "str", where, null=True)
    _field(r, "created_at", "str", where, null=True)
    _field(r, "bundled", "str", where, null=True)
    return r


def _check_lesson(x: Any, i: int) -> dict[str, Any]:
    where = f"{LESSONS}: lesson #{i + 1}"
    x = _obj(x, where)
    _field(x, "id", "int", where)
    if not _field(x, "text", "str", where).strip():
        raise BundleError(f"{where}: 'text' is empty.")
    if _field(x, "status", "str", where) not in LESSON_STATUSES:
        raise BundleError(f"{where}: 'status' must be one of {', '.join(LESSON_STATUSES)}.")
    _field(x, "origin", "str", where)
    _field(x, "feedback", "int", where, null=True)
    _field(x, "superseded_by", "int", where, null=True)
    _field(x, "created_at", "str", where, null=True)
    _field(x, "updated_at", "str", where, null=True)
    return x


def _check_conversation(c: Any, line: int) -> dict[str, Any]:
    where = f"{CONVERSATIONS} line {line}"
    c = _obj(c, where)
    _field(c, "id", "int", where)
    _field(c, "title", "str", where)
    _field(c, "source", "str", where)
    _field(c, "external_id", "str", where, null=True)
    _field(c, "created_at", "str", where, null=True)
    for t in _field(c, "turns", "list", where):
        tw = f"{where}, turn"
        t = _obj(t, tw)
        tw = f"{where}, turn {t.get('id')!r}"
        _field(t, "id", "int", tw)
        if _field(t, "index", "int", tw) < 0:
            raise BundleError(f"{tw}: 'index' must not be negative.")
        _field(t, "user_message", "str", tw)
        _field(t, "attempts_to_5", "int", tw, null=True)
        _field(t, "created_at", "str", tw, null=True)
        for a in _field(t, "attempts", "list", tw):
            aw = f"{tw}, attempt {_obj(a, tw + ', attempt').get('id')!r}"
            _field(a, "id", "int", aw)
            if _field(a, "number", "int", aw) < 1:
                raise BundleError(f"{aw}: 'number' must be at least 1.")
            _field(a, "version", "int", aw, null=True)
            _field(a, "model_spec", "str", aw)
            if not all(isinstance(m, dict) for m in _field(a, "messages", "list", aw)):
                raise BundleError(f"{aw}: every item of 'messages' must be an object.")
            _field(a, "response", "str", aw)
            _field(a, "critique_used", "str", aw, null=True)
            _field(a, "latency_ms", "num", aw)
            _field(a, "prompt_tokens", "int", aw, null=True)
            _field(a, "completion_tokens", "int", aw, null=True)
            demos = _field(a, "demos", "list", aw)
            if not all(isinstance(d, int) and not isinstance(d, bool) for d in demos):
                raise BundleError(f"{aw}: 'demos' must be a list of attempt ids.")
            _field(a, "created_at", "str", aw, null=True)
            for f in _field(a, "feedback", "list", aw):
                fw = f"{aw}, feedback {_obj(f, aw + ', feedback').get('id')!r}"
                _field(f, "id", "int", fw)
                if _field(f, "kind", "str", fw) not in FEEDBACK_KINDS:
                    raise BundleError(f"{fw}: 'kind' must be one of {', '.join(FEEDBACK_KINDS)}.")
                stars = _field(f, "stars", "int", fw, null=True)
                if stars is not None and not 1 <= stars <= 5:
                    raise BundleError(f"{fw}: 'stars' must be from 1 to 5.")
                _field(f, "critique", "str", fw, null=True)
                _field(f, "text", "str", fw, null=True)
                _field(f, "created_at", "str", fw, null=True)
    return c


def _read_conversations(zf: zipfile.ZipFile) -> list[dict[str, Any]]:
    conversations = []
    for line, raw in enumerate(_lines(zf, CONVERSATIONS), start=1):
        if raw.strip():
            where = f"{CONVERSATIONS} line {line}"
            conversations.append(_check_conversation(_load_json(raw, where), line))
    return conversations


def _lines(zf: zipfile.ZipFile, name: str) -> Iterator[bytes]:
    """A member's lines (without the newline) in linear time; one over ``_MAX_LINE_BYTES`` is
    refused as soon as that much of it has been read."""
    pieces: list[bytes] = []
    size = line = 0
    for chunk in _read_member(zf, name):
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            pieces.append(chunk[start:end])
            yield b"".join(pieces)
            line += 1
            pieces, size, start = [], 0, end + 1
        size += len(chunk) - start
        if size > _MAX_LINE_BYTES:
            raise BundleError(
                f"{name} line {line + 1} in the bundle is longer than {_mib(_MAX_LINE_BYTES)}; refusing it."
            )
        pieces.append(chunk[start:])
    if pieces:
        yield b"".join(pieces)


def _read_embeddings(zf: zipfile.ZipFile, spec: Any) -> tuple[list[EmbeddingRecord], str | None]:
    if spec is None:
        return [], None
    spec = _obj(spec, "manifest 'embeddings'")
    encoding = _field(spec, "encoding", "str", "manifest 'embeddings'")
    groups = _field(spec, "groups", "list", "manifest 'embeddings'")
    if encoding == "safetensors":
        try:
            from safetensors.numpy import load
        except ImportError as exc:
            raise BundleError(
                "The bundle stores embeddings as safetensors; install it with pip install safetensors."
            ) from exc
        try:
            tensors = load(_member_bytes(zf, EMBEDDINGS_SAFETENSORS))
        except KeyError as exc:
            raise BundleError(f"The bundle lacks {EMBEDDINGS_SAFETENSORS}.") from exc
        except Exception as exc:  # safetensors raises its own error types for a bad header
            raise BundleError(f"{EMBEDDINGS_SAFETENSORS} is not valid safetensors: {exc}") from exc
    elif encoding == "npy":
        tensors = {}
    else:
        raise BundleError(f"Unknown embeddings encoding {encoding!r}; expected safetensors or npy.")
    records = []
    for i, group in enumerate(groups):
        where = f"manifest 'embeddings' group #{i + 1}"
        group = _obj(group, where)
        name = _field(group, "name", "str", where)
        embedder = _field(group, "embedder", "str", where)
        dim = _field(group, "dim", "int", where)
        if not _NAME_RE.match(name) or dim < 1:
            raise BundleError(f"{where}: invalid name or dim.")
        arrays = {}
        for part in ("turns", "vectors"):
            key = f"{name}.{part}"
            if encoding == "npy":
                member = f"{EMBEDDINGS_NPY_DIR}/{key}.npy"
                try:
                    arrays[part] = np.load(io.BytesIO(_member_bytes(zf, member)), allow_pickle=False)
                except KeyError as exc:
                    raise BundleError(f"The bundle lacks {member}.") from exc
                except ValueError as exc:
                    raise BundleError(f"{member} in the bundle is not a valid .npy array: {exc}") from exc
            elif key in tensors:
                arrays[part] = tensors[key]
            else:
                raise BundleError(f"{EMBEDDINGS_SAFETENSORS} lacks the tensor {key!r}.")
        turns, vectors = arrays["turns"], arrays["vectors"]
        if (
            turns.ndim != 1
            or turns.dtype.kind not in "iu"
            or vectors.dtype != np.float32
            or vectors.shape != (len(turns), dim)
        ):
            raise BundleError(f"{where}: the arrays are not float32 of shape ({len(turns)}, {dim}).")
        little = vectors.astype("<f4")
        records += [
            EmbeddingRecord(int(t), embedder, dim, little[j].tobytes()) for j, t in enumerate(turns.tolist())
        ]
    return records, encoding


@dataclass
class _Bundle:
    manifest: dict[str, Any]
    dump: ProgramDump
    adapters: list[dict[str, Any]]
    encoding: str | None


def _verify(zf: zipfile.ZipFile) -> dict[str, Any]:
    """Member names, manifest, format version and every checksum."""
    names = []
    for info in zf.infolist():
        _check_member_name(info.filename)
        if not info.is_dir():
            _check_member_size(info)
            names.append(info.filename)
    if len(set(names)) != len(names):
        raise BundleError("The bundle has two members with the same name; refusing to read it.")
    if MANIFEST not in names:
        raise BundleError(f"The file has no {MANIFEST}: it is not a minetune bundle.")
    if zf.getinfo(MANIFEST).file_size > _MAX_MANIFEST_BYTES:
        raise BundleError(f"{MANIFEST} is implausibly large.")
    manifest = _obj(_load_json(_member_bytes(zf, MANIFEST), MANIFEST), MANIFEST)
    if manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"The file is not a minetune bundle (its format is {manifest.get('format')!r}).")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
        raise BundleError(
            f"The bundle has format_version {version!r}; this minetune reads version {FORMAT_VERSION}"
            + (" (upgrade minetune to import it)." if newer else ".")
        )
    files = _field(manifest, "files", "dict", MANIFEST)
    present = set(names) - {MANIFEST}
    if set(files) != present:
        extra, missing = sorted(present - set(files)), sorted(set(files) - present)
        raise BundleError(
            "The bundle's members do not match its manifest"
            + (f"; not listed: {', '.join(extra[:5])}" if extra else "")
            + (f"; missing: {', '.join(missing[:5])}" if missing else "")
            + "."
        )
    for name in sorted(present):
        expected = files[name]
        if not isinstance(expected, str) or not _SHA_RE.match(expected):
            raise BundleError(f"{MANIFEST}: the checksum of {name} is not a sha256 hex digest.")
        digest = hashlib.sha256()
        for chunk in _read_member(zf, name):
            digest.update(chunk)
        if digest.hexdigest() != expected:
            raise BundleError(f"The checksum of {name} does not match the manifest: the bundle is corrupt.")
    for required in (VERSIONS, LESSONS, CONVERSATIONS):
        if required not in present:
            raise BundleError(f"The bundle lacks {required}.")
    return manifest


def _read(zf: zipfile.ZipFile) -> _Bundle:
    manifest = _verify(zf)
    program = _obj(manifest.get("program"), "manifest 'program'")
    _field(program, "name", "str", "manifest 'program'")
    _field(program, "description", "str", "manifest 'program'", null=True)
    _field(program, "created_at", "str", "manifest 'program'", null=True)

    versions_doc = _obj(_load_json(_member_bytes(zf, VERSIONS), VERSIONS), VERSIONS)
    active = _field(versions_doc, "active_version", "int", VERSIONS)
    raw_versions = _field(versions_doc, "versions", "list", VERSIONS)
    versions = [_check_version(v, i) for i, v in enumerate(raw_versions)]
    if not versions:
        raise BundleError(f"{VERSIONS} has no versions.")
    lessons_doc = _obj(_load_json(_member_bytes(zf, LESSONS), LESSONS), LESSONS)
    lessons = [_check_lesson(x, i) for i, x in enumerate(_field(lessons_doc, "lessons", "list", LESSONS))]
    conversations = _read_conversations(zf)
    embeddings, encoding = _read_embeddings(zf, manifest.get("embeddings"))
    records: list[dict[str, Any]] = []
    if ADAPTER_RECORDS in manifest["files"]:  # absent in bundles from before adapter records
        doc = _obj(_load_json(_member_bytes(zf, ADAPTER_RECORDS), ADAPTER_RECORDS), ADAPTER_RECORDS)
        raw_records = _field(doc, "adapters", "list", ADAPTER_RECORDS)
        records = [_check_adapter_record(r, i) for i, r in enumerate(raw_records)]

    adapters = []
    declared: set[str] = set()
    for i, spec in enumerate(_field(manifest, "adapters", "list", MANIFEST, null=True) or []):
        where = f"manifest 'adapters' #{i + 1}"
        spec = _obj(spec, where)
        name = _field(spec, "name", "str", where)
        if not _NAME_RE.match(name) or name in declared:
            raise BundleError(f"{where}: {name!r} is not a valid, unique adapter name.")
        files = _field(spec, "files", "list", where)
        if not all(isinstance(f, str) for f in files):
            raise BundleError(f"{where}: 'files' must be a list of paths.")
        for rel in files:
            _check_member_name(rel)
            member = f"{ADAPTERS_DIR}/{name}/{rel}"
            if member not in manifest["files"]:
                raise BundleError(f"{where}: the file {member} is not in the bundle.")
            declared.add(member)
        declared.add(name)
        adapters.append(spec)
    stray = [n for n in manifest["files"] if n.startswith(f"{ADAPTERS_DIR}/") and n not in declared]
    if stray:
        listed = ", ".join(sorted(stray)[:5])
        raise BundleError(f"The bundle has adapter files that no adapter declares: {listed}.")
    names = {a["name"] for a in adapters}
    for v in versions:
        if v.get("adapter_bundled") is not None and v["adapter_bundled"] not in names:
            raise BundleError(
                f"{VERSIONS}: version {v['number']} uses the adapter {v['adapter_bundled']!r}, "
                "which is not in the bundle."
            )
    for r in records:
        if r.get("bundled") is not None and r["bundled"] not in names:
            raise BundleError(
                f"{ADAPTER_RECORDS}: adapter {r['id']} names the bundled adapter {r['bundled']!r}, "
                "which is not in the bundle."
            )

    dump = ProgramDump(
        program=program,
        versions=versions,
        active_version=active,
        lessons=lessons,
        conversations=conversations,
        embeddings=embeddings,
        adapters=records,
    )
    counts = _obj(manifest.get("counts"), "manifest 'counts'")
    actual = dump.counts() | {"adapters": len(adapters)}
    wrong = [k for k, n in actual.items() if counts.get(k, n) != n]
    if wrong:
        raise BundleError(
            "The bundle's contents do not match the manifest's counts ("
            + ", ".join(f"{k}: {counts[k]} listed, {actual[k]} found" for k in wrong)
            + ")."
        )
    return _Bundle(manifest, dump, adapters, encoding)


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise BundleError(f"No bundle file at {path}.")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise BundleError(f"{path} is not a readable zip file (truncated or not a bundle): {exc}") from exc


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a bundle after checking member names, format version and checksums."""
    with _open_zip(Path(path).expanduser()) as zf:
        return _verify(zf)


# -- import --------------------------------------------------------------------------------------------


def import_bundle(
    store: Store,
    path: str | Path,
    *,
    settings: Settings,
    name: str | None = None,
    model: str | None = None,
) -> BundleReport:
    """Create a program from a bundle, all or nothing.

    ``name`` imports under another name (the bundle's program name by default; an existing name
    is an error). ``model`` adds a version on top of the imported active version with that model
    spec, so everything learned is kept. Bundled adapters are extracted under
    ``$MINETUNE_HOME/adapters/<program>/<adapter>`` and the versions point there.
    """
    from minetune.models import parse_spec

    path = Path(path).expanduser()
    if model is not None:
        parse_spec(model)
    with _open_zip(path) as zf:
        bundle = _read(zf)
        target = (name if name is not None else bundle.dump.program["name"]).strip()
        if not target:
            raise BundleError("The program needs a name; pass --as NAME.")
        if len(target) > _MAX_LEN["name"]:
            raise BundleError(f"Program names are at most {_MAX_LEN['name']} characters.")
        if program_exists(store, target):
            raise BundleError(
                f"A program named {target!r} already exists; import under another name with --as NEW_NAME."
            )

        root = settings.adapters_path / user_folder(store.user_name) / _slug(target)
        destinations = {a["name"]: root / a["name"] for a in bundle.adapters}
        for dest in destinations.values():
            if dest.exists():
                raise BundleError(f"{dest} already exists; move it away or import with --as NEW_NAME.")
        moved_from: dict[str, str] = {}  # the source machine's adapter path -> where it lands here
        for version in bundle.dump.versions:
            bundled = version.get("adapter_bundled")
            if bundled is not None:
                if version.get("adapter"):
                    moved_from[version["adapter"]] = str(destinations[bundled])
                version["adapter"] = str(destinations[bundled])
            if version.get("adapter") and len(version["adapter"]) > _MAX_LEN["adapter"]:
                raise BundleError(f"The adapter path of version {version['number']} is too long.")
        for record in bundle.dump.adapters:
            if record.get("bundled") is not None:
                moved_from.setdefault(record["path"], str(destinations[record["bundled"]]))
                record["path"] = str(destinations[record["bundled"]])
            if len(record["path"]) > _MAX_LEN["path"]:
                raise BundleError(f"The path of adapter {record['id']} is too long.")

        for version in bundle.dump.versions:  # the spec serves the adapter too (`hf:BASE?adapter=DIR`)
            version["model_spec"] = _remap_spec_adapter(version.get("model_spec"), moved_from)
            if version["model_spec"] and len(version["model_spec"]) > _MAX_LEN["model_spec"]:
                raise BundleError(f"The model spec of version {version['number']} is too long here.")

        staging = settings.adapters_path / f".incoming-{uuid.uuid4().hex}"
        moved: list[Path] = []
        try:
            if bundle.adapters:
                private_dirs(staging)
            for adapter in bundle.adapters:
                folder = staging / adapter["name"]
                folder.mkdir(parents=True)
                for rel in adapter["files"]:
                    target_file = folder / PurePosixPath(rel)
                    target_file.parent.mkdir(parents=True, exist_ok=True)
                    with target_file.open("wb") as fh:
                        for chunk in _read_member(zf, f"{ADAPTERS_DIR}/{adapter['name']}/{rel}"):
                            fh.write(chunk)

            def place_adapters() -> None:  # last step inside the import transaction
                for adapter_name, dest in destinations.items():
                    private_dirs(dest.parent)
                    (staging / adapter_name).rename(dest)
                    moved.append(dest)
                    private_tree(dest)

            result = load_program(
                store,
                bundle.dump,
                target,
                model_spec=model,
                import_record={"sha256": _sha256_file(path), "path": str(path), "format": FORMAT_NAME},
                before_commit=place_adapters if destinations else None,
            )
        except BaseException as exc:
            for dest in moved:  # the transaction did not commit: take the adapters back out
                shutil.rmtree(dest, ignore_errors=True)
            if isinstance(exc, OSError):
                raise BundleError(f"Could not extract the bundle's adapters: {exc}") from exc
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return BundleReport(
        path=path,
        program=result.program,
        counts=result.counts | {"adapters": len(bundle.adapters)},
        active_version=result.active_version,
        adapters=[a["name"] for a in bundle.adapters],
        adapter_dirs=destinations,
        embeddings=bundle.encoding,
    )
