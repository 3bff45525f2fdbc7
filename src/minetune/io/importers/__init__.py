"""Importing conversation history from other tools: format detection and :func:`import_file`.

Formats (``FORMATS``): a ChatGPT data export (zip, folder or ``conversations.json``), OpenAI chat
JSONL, OpenAI preference (DPO) JSONL, ShareGPT, Alpaca (JSON array or JSON Lines), minetune's
capture markdown, and CSV/TSV with prompt and response columns. Each module turns its format into
:class:`~minetune.store.imports.NewConversation` records, streamed one at a time;
:func:`minetune.store.imports.write_import` stores them in one transaction per file.

Every read is bounded (:class:`ImportLimits`): zip members by declared and actual size and
compression ratio, JSON elements and lines by length, so a zip bomb or a runaway file is refused
with one clear line and the store is left untouched. A conversation with an overlong message is
skipped and overlong titles are shortened, each reported. A file that yields no conversation
records no import.

After a successful import the program's demo index is rebuilt from the imported ratings, and
critiques are distilled into lessons when a model is configured (the "up to speed" step).
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zipfile import BadZipFile

from minetune.config import Settings
from minetune.errors import MinetuneError
from minetune.io.importers import (
    alpaca,
    capture_md,
    chatgpt,
    csv_table,
    openai_chat,
    openai_dpo,
    sharegpt,
    trl_preference,
)
from minetune.io.importers.base import (
    DEFAULT_LIMITS,
    MAX_LABEL_CHARS,
    ImportFormatError,
    ImportLimits,
    clip,
    records,
)
from minetune.io.importers.jsonstream import iter_array, iter_lines
from minetune.io.importers.sources import Source, looks_binary
from minetune.store import DEFAULT_PROGRAM, Store
from minetune.store.imports import ImportCounts, NewConversation, already_imported, write_import
from minetune.store.transfer import program_exists

__all__ = [
    "FORMATS",
    "ImportFormatError",
    "ImportLimits",
    "ImportReport",
    "SkippedItem",
    "detect_format",
    "import_file",
]

FORMATS = (
    "chatgpt", "openai-chat", "openai-dpo", "trl-dpo", "trl-kto", "sharegpt", "alpaca", "capture-md", "csv"
)
class _RecordFormat:
    """A JSON/JSONL format as a (matches, parse) pair."""

    def __init__(
        self, matches: Callable[[dict[str, Any]], bool], parse: Callable[..., Iterator[Any]]
    ) -> None:
        self.matches, self.parse = matches, parse


RECORD_FORMATS: dict[str, Any] = {  # JSON/JSONL formats, in the order a record is tried against them
    "openai-dpo": openai_dpo,
    "trl-dpo": _RecordFormat(trl_preference.matches_dpo, trl_preference.parse_dpo),
    "trl-kto": _RecordFormat(trl_preference.matches_kto, trl_preference.parse_kto),
    "openai-chat": openai_chat,
    "sharegpt": sharegpt,
    "alpaca": alpaca,
}
MAX_LISTED_SKIPS = 200
MAX_LESSONS = 20


@dataclass(frozen=True)
class SkippedItem:
    where: str
    reason: str


@dataclass
class ImportReport:
    """What one import did. ``skipped_items`` lists the first skips; ``skipped_by_reason`` counts all."""

    path: str
    format: str
    program: str
    sha256: str = ""
    already_imported: bool = False
    import_id: int | None = None  # the stored import (``minetune forget --import ID`` removes it)
    conversations: int = 0
    turns: int = 0
    attempts: int = 0
    ratings: int = 0
    critiques: int = 0
    skipped: int = 0
    skipped_items: list[SkippedItem] = field(default_factory=list)
    skipped_by_reason: Counter[str] = field(default_factory=Counter)
    demo_candidates: int | None = None
    created_program: bool = False  # the program did not exist and was created for this import
    lessons_learned: int = 0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def skip(self, where: str, reason: str) -> None:
        self.skipped += 1
        self.skipped_by_reason[_reason_kind(reason)] += 1
        if len(self.skipped_items) < MAX_LISTED_SKIPS:
            self.skipped_items.append(SkippedItem(where, reason))


def _reason_kind(reason: str) -> str:
    """Group reasons that differ only in details ("...; in conversation 'x'")."""
    return reason.split(";", 1)[0]


@dataclass
class _Plan:
    format: str
    source: Source
    members: list[str]
    sha256: str
    limits: ImportLimits = DEFAULT_LIMITS
    feedback: str | None = None
    sidecar: Source | None = None

    def close(self) -> None:
        self.source.close()
        if self.sidecar is not None:
            self.sidecar.close()


def detect_format(path: Path, limits: ImportLimits = DEFAULT_LIMITS) -> str:
    """The format of ``path`` (one of ``FORMATS``), or :class:`ImportFormatError`."""
    plan = _plan(Path(path), None, limits)
    plan.close()
    return plan.format


def import_file(
    store: Store,
    settings: Settings,
    path: Path | str,
    *,
    program: str = DEFAULT_PROGRAM,
    format: str | None = None,
    learn: bool = True,
    model: str | None = None,
    on_skip: Callable[[SkippedItem], None] | None = None,
    max_lessons: int = MAX_LESSONS,
    limits: ImportLimits = DEFAULT_LIMITS,
    create_program: bool = False,
) -> ImportReport:
    """Import one file, zip or ChatGPT export folder into ``program``, all or nothing.

    With ``create_program`` a missing ``program`` is created first (``report.created_program``);
    the format is checked before, so a file that cannot be read creates nothing.

    A file (by content hash) already imported into the program is not imported again; conversations
    the program already has (same source id) are skipped. Unless ``learn`` is False, the demo index
    is then rebuilt and critiques become lessons when a model is configured (``model``, the
    program's model spec, or ``MINETUNE_MODEL``). Malformed input, or input over ``limits``, raises
    :class:`ImportFormatError` and leaves the store unchanged; so does nothing: a file that yields
    no conversation records no import (``report.import_id`` is None and a note says so).
    """
    start = time.perf_counter()
    path = Path(path).expanduser()
    if format is not None and format not in FORMATS:
        raise ImportFormatError(f"Unknown import format {format!r}; choose one of: {', '.join(FORMATS)}.")
    plan = _plan(path, format, limits)
    report = ImportReport(path=str(path), format=plan.format, program=program, sha256=plan.sha256)
    if create_program and not program_exists(store, program):
        try:
            store.create_program(program)
        except BaseException:
            plan.close()
            raise
        report.created_program = True

    def skip(where: str, reason: str) -> None:
        where, reason = clip(where, MAX_LABEL_CHARS), clip(reason, MAX_LABEL_CHARS)
        report.skip(where, reason)
        if on_skip is not None:
            on_skip(SkippedItem(where, reason))

    counts: ImportCounts | None = None
    try:
        if already_imported(store, program, plan.sha256):
            report.already_imported = True
        else:
            counts = write_import(
                store,
                program,
                _bounded(_conversations(plan, skip), limits, skip, report),
                sha256=plan.sha256,
                path=str(path.resolve()),
                format=plan.format,
                on_skip=skip,
            )
            if counts is None:
                report.already_imported = True
            else:
                _fill(report, counts)
                if counts.import_id is None:
                    report.notes.append(
                        "nothing imported: no conversation in the file could be imported "
                        "(see the skipped items), so no import was recorded"
                    )
    except (BadZipFile, zlib.error, EOFError) as exc:
        raise ImportFormatError(f"{path.name}: the archive is damaged ({exc}).") from None
    except OSError as exc:
        raise ImportFormatError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    finally:
        plan.close()
    if report.already_imported:
        report.notes.append("already imported: this file's content was imported into this program before")
    elif report.import_id is None:
        pass  # nothing was imported (the note above says so): nothing to learn from
    elif not learn:
        report.notes.append("demos and lessons not rebuilt (run `minetune optimize` to rebuild demos)")
    elif not settings.reoptimize:
        report.notes.append("demos and lessons not rebuilt: re-optimization is turned off in the settings")
    else:
        _up_to_speed(store, settings, program, report, counts, model, max_lessons)
    report.elapsed_s = time.perf_counter() - start
    return report


def _fill(report: ImportReport, counts: ImportCounts) -> None:
    report.import_id = counts.import_id
    report.conversations = counts.conversations
    report.turns = counts.turns
    report.attempts = counts.attempts
    report.ratings = counts.ratings
    report.critiques = counts.critiques


# -- detection -----------------------------------------------------------------------------


def _plan(path: Path, fmt: str | None, limits: ImportLimits) -> _Plan:
    if not path.exists():
        raise ImportFormatError(f"No such file or folder: {path}")
    try:
        source = Source(path, limits)
    except BadZipFile as exc:
        raise ImportFormatError(f"{path.name} is not a readable zip archive: {exc}.") from None
    except OSError as exc:
        raise ImportFormatError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    try:
        return _plan_source(source, path, fmt)
    except (BadZipFile, zlib.error, EOFError) as exc:
        source.close()
        raise ImportFormatError(f"{path.name}: the archive is damaged ({exc}).") from None
    except OSError as exc:
        source.close()
        raise ImportFormatError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    except BaseException:
        source.close()
        raise


def _plan_source(source: Source, path: Path, fmt: str | None) -> _Plan:
    if source.kind != "file":
        what = "folder" if source.kind == "folder" else "zip archive"
        if fmt not in (None, "chatgpt"):
            raise ImportFormatError(f"{path.name} is a {what}; the {fmt} format is imported from a file.")
        members = source.members
        conversations = chatgpt.conversation_members(members)
        if not conversations:
            raise ImportFormatError(
                f"{path.name} is a {what} without conversations.json, so it is not a ChatGPT export; "
                "import other formats one file at a time."
            )
        feedback = chatgpt.feedback_member(members)
        used = conversations + ([feedback] if feedback else [])
        source.check(used)
        return _Plan("chatgpt", source, conversations, source.sha256(used), source.limits, feedback)
    if source.size() == 0:
        raise ImportFormatError(f"{path.name} is empty (0 bytes); there is nothing to import.")
    head = source.head()
    if looks_binary(head):
        raise ImportFormatError(
            f"{path.name} looks like a binary file, not text; importable formats: {', '.join(FORMATS)}."
        )
    fmt = fmt or _sniff(source, path.name, head.decode("utf-8", errors="ignore"))
    plan = _Plan(fmt, source, [""], source.sha256(), source.limits)
    if fmt == "chatgpt":
        sibling = path.parent / "message_feedback.json"
        if sibling.is_file() and sibling != path:
            plan.sidecar = Source(path.parent, source.limits)
            plan.feedback = "message_feedback.json"
            digest = hashlib.sha256(plan.sha256.encode() + plan.sidecar.sha256([plan.feedback]).encode())
            plan.sha256 = digest.hexdigest()
    return plan


def _sniff(source: Source, name: str, head: str) -> str:
    text = head.lstrip("\ufeff")
    stripped = text.lstrip()
    if capture_md.matches(text):
        return "capture-md"
    limit = source.limits.element_chars
    if stripped.startswith("["):
        with source.open_text() as fh:
            first = next(iter_array(fh, name, max_chars=limit), None)
        if first is None:
            if chatgpt.CONVERSATION_FILE.search(name):
                return "chatgpt"
            raise ImportFormatError(f"{name} is an empty JSON array; there is nothing to import.")
        return _record_format(first, f"{name} item 1")
    if stripped.startswith("{"):
        with source.open_text() as fh:
            _, first = next(iter_lines(fh, name, limit))
        return _record_format(first, f"{name} line 1")
    first_line = text.splitlines()[0] if text else ""
    if csv_table.matches(first_line, name) or name.lower().endswith((".csv", ".tsv")):
        return "csv"
    raise ImportFormatError(
        f"{name}: unknown format; importable formats: {', '.join(FORMATS)} "
        "(CSV needs a header with prompt and response columns). Pass --format to choose one."
    )


def _record_format(record: Any, where: str) -> str:
    if isinstance(record, dict):
        if "mapping" in record:
            return "chatgpt"
        for fmt, module in RECORD_FORMATS.items():
            if module.matches(record):
                return fmt
    keys = (
        ", ".join(clip(k, 40) for k in sorted(record)[:8])
        if isinstance(record, dict)
        else type(record).__name__
    )
    raise ImportFormatError(
        f"{where}: unknown format (fields: {keys}); importable formats: {', '.join(FORMATS)}."
    )


# -- parsing ---------------------------------------------------------------------------------


def _conversations(plan: _Plan, skip: Callable[[str, str], None]) -> Iterator[NewConversation]:
    source, name, limit = plan.source, plan.source.label(""), plan.limits.element_chars
    if plan.format == "chatgpt":
        yield from chatgpt.parse(
            source, plan.members, plan.feedback, skip, sidecar=plan.sidecar, limits=plan.limits
        )
    elif plan.format in RECORD_FORMATS:
        yield from RECORD_FORMATS[plan.format].parse(records(_json_records(source, name, limit)), skip)
    elif plan.format == "capture-md":
        with source.open_text() as fh:
            yield from capture_md.parse(fh, name, skip, limit)
    else:
        with source.open_text() as fh:
            yield from csv_table.parse(fh, name, skip, limit)


def _json_records(source: Source, name: str, limit: int) -> Iterator[tuple[str, Any]]:
    """Records of a JSON array or of JSON Lines, whichever the file holds."""
    is_array = source.head("", 4096).decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n").startswith("[")
    with source.open_text() as fh:
        if is_array:
            for index, item in enumerate(iter_array(fh, name, max_chars=limit), start=1):
                yield f"{name} item {index}", item
        else:
            for where, item in iter_lines(fh, name, limit):
                yield f"{name} {where}", item


def _bounded(
    conversations: Iterator[NewConversation],
    limits: ImportLimits,
    skip: Callable[[str, str], None],
    report: ImportReport,
) -> Iterator[NewConversation]:
    """Skip conversations with a message over ``limits.message_chars``; shorten long titles."""
    shortened = 0
    for conv in conversations:
        longest = _longest_message(conv)
        if longest > limits.message_chars:
            skip(
                conv.label or "conversation",
                f"a message of {longest:,} characters is over the {limits.message_chars:,}-character limit",
            )
            continue
        if len(conv.title) > limits.title_chars:
            conv.title = clip(conv.title, limits.title_chars)
            shortened += 1
        yield conv
    if shortened:
        report.notes.append(
            f"{shortened} title(s) longer than {limits.title_chars} characters were shortened"
        )


def _longest_message(conv: NewConversation) -> int:
    """The longest text a conversation stores (each distinct string object looked at once: attempts
    share their history's strings, so this stays linear)."""
    longest, seen = 0, set[int]()
    for turn in conv.turns:
        texts: list[Any] = [turn.user_message]
        for attempt in turn.attempts:
            texts.append(attempt.response)
            texts.extend(m.get("content") for m in attempt.messages)
        for text in texts:
            if isinstance(text, str) and id(text) not in seen:
                seen.add(id(text))
                longest = max(longest, len(text))
    return longest


# -- up to speed -----------------------------------------------------------------------------


def _up_to_speed(
    store: Store,
    settings: Settings,
    program: str,
    report: ImportReport,
    counts: ImportCounts | None,
    model: str | None,
    max_lessons: int,
) -> None:
    """Rebuild the demo index from the (now imported) ratings; learn lessons from critiques."""
    from minetune.learn.reoptimize import Learner

    learner = Learner(store, settings, program)
    try:
        report.demo_candidates = learner.rebuild().demo_candidates
    except MinetuneError as exc:
        report.warnings.append(f"imported, but the demo index was not rebuilt: {exc}")
        return
    critique_ids = list(counts.critique_feedback_ids)[-max_lessons:] if counts else []
    if not critique_ids:
        report.notes.append("lessons: skipped, no imported rating has a critique")
        return
    spec = settings.reflection_model or model or store.active_version(program).model_spec or settings.model
    if not spec:
        report.notes.append(
            f"lessons: skipped, {report.critiques} imported critique(s) but no model is configured "
            "(set MINETUNE_MODEL or pass --model to learn rules from them)"
        )
        return
    from minetune.models import resolve_model

    try:
        reflector = resolve_model(settings, spec)
    except MinetuneError as exc:
        report.warnings.append(f"lessons: skipped, {exc}")
        return
    for feedback_id in critique_ids:
        learning = learner.on_feedback(feedback_id, reflector)
        if learning.rule:
            report.lessons_learned += 1
        if learning.warnings:
            report.warnings.extend(learning.warnings)
            report.warnings.append("lessons: stopped after the first failure")
            break
    report.notes.append(
        f"lessons: {report.lessons_learned} rule(s) learned from the newest {len(critique_ids)} of "
        f"{report.critiques} critique(s)"
    )
