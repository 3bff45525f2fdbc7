"""Writing imported history into the store: one transaction per imported file, bulk inserts in batches.

The importers in :mod:`minetune.io.importers` turn each source format into the plain records below
(:class:`NewConversation` with its turns, attempts and feedback); :func:`write_import` stores them.
A file whose content hash was already imported into the program is not imported again, and a
conversation whose ``external_id`` the program already has is skipped, so re-importing a later,
bigger export adds only what is new. Memory stays flat: conversations are consumed from an
iterator and written a batch at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from minetune.errors import StoreError
from minetune.store.repo import Store
from minetune.store.schema import Attempt, Conversation, Feedback, ImportRecord, Program, Turn

BATCH_SIZE = 500
MAX_TITLE = 500
MAX_EXTERNAL_ID = 300

SkipCallback = Callable[[str, str], None]


@dataclass
class NewFeedback:
    """A rating attached to an imported attempt (kind ``imported``, or ``praise`` for captures)."""

    kind: str = "imported"
    stars: int | None = None
    critique: str | None = None
    text: str | None = None
    created_at: datetime | None = None


@dataclass
class NewAttempt:
    """One imported answer and the exact message list that produced it."""

    response: str
    messages: list[dict[str, Any]]
    model_spec: str
    created_at: datetime | None = None
    feedback: list[NewFeedback] = field(default_factory=list)


@dataclass
class NewTurn:
    user_message: str
    attempts: list[NewAttempt]
    created_at: datetime | None = None


@dataclass
class NewConversation:
    """An imported conversation; ``external_id`` is its identity in the source (for idempotency)."""

    turns: list[NewTurn]
    external_id: str | None = None
    title: str = ""
    source: str = "import"
    created_at: datetime | None = None
    label: str = ""  # how reports name it, e.g. "conversation 'Trip plan' (abc-123)" or "line 7"


@dataclass
class ImportCounts:
    conversations: int = 0
    turns: int = 0
    attempts: int = 0
    ratings: int = 0
    critiques: int = 0
    skipped_conversations: int = 0
    import_id: int | None = None  # the imports row written (forget it with `minetune forget --import`)
    # The newest feedback rows with a critique (bounded), for learning lessons after the import.
    critique_feedback_ids: deque[int] = field(default_factory=lambda: deque(maxlen=50))

    def as_dict(self) -> dict[str, int]:
        return {
            "conversations": self.conversations,
            "turns": self.turns,
            "attempts": self.attempts,
            "ratings": self.ratings,
            "critiques": self.critiques,
            "skipped_conversations": self.skipped_conversations,
        }


def already_imported(store: Store, program: str, sha256: str) -> bool:
    """Whether a file with this content hash was imported into ``program`` before (writes nothing)."""
    with store.db.transaction() as s:
        program_id = s.scalar(
            select(Program.id).where(Program.user_id == store.user_id, Program.name == program)
        )
        return program_id is not None and _import_exists(s, program_id, sha256)


def _import_exists(s: Session, program_id: int, sha256: str) -> bool:
    query = select(ImportRecord.id).where(
        ImportRecord.program_id == program_id, ImportRecord.sha256 == sha256
    )
    return s.scalar(query) is not None


def write_import(
    store: Store,
    program: str,
    conversations: Iterable[NewConversation],
    *,
    sha256: str,
    path: str,
    format: str,
    on_skip: SkipCallback,
    batch_size: int = BATCH_SIZE,
) -> ImportCounts | None:
    """Store every conversation in one transaction; None when this file was already imported.

    Anything raised while ``conversations`` is being consumed (a parse error in the source) rolls
    the whole file back. A file that yields no conversation to store is rolled back too: nothing is
    written, not even the imports row, and the counts come back with ``import_id`` None.
    """
    counts = ImportCounts()
    try:
        with store.db.transaction() as s:
            prog = store.program_row(s, program)
            if _import_exists(s, prog.id, sha256):
                return None
            first_new_id = (s.scalar(select(func.max(Conversation.id))) or 0) + 1
            record = ImportRecord(program_id=prog.id, sha256=sha256, path=path, format=format, counts={})
            s.add(record)
            s.flush()  # its id goes on every conversation it brings, so the import can be forgotten
            batch: list[NewConversation] = []
            for conv in conversations:
                batch.append(conv)
                if len(batch) >= batch_size:
                    _write_batch(s, prog.id, record.id, batch, first_new_id, counts, on_skip)
                    batch = []
            _write_batch(s, prog.id, record.id, batch, first_new_id, counts, on_skip)
            if counts.conversations == 0:
                raise _NothingImported
            record.counts = counts.as_dict()
            counts.import_id = record.id
            s.flush()
    except _NothingImported:
        return counts
    except IntegrityError as exc:
        raise StoreError(f"The import was rejected by the database and rolled back: {exc.orig}") from exc
    return counts


class _NothingImported(Exception):
    """Raised inside the import transaction to roll back a file that brought no conversation."""


def _write_batch(
    s: Session,
    program_id: int,
    import_id: int,
    batch: list[NewConversation],
    first_new_id: int,
    counts: ImportCounts,
    on_skip: SkipCallback,
) -> None:
    if not batch:
        return
    now = datetime.now(UTC)
    ext_ids = [c.external_id[:MAX_EXTERNAL_ID] for c in batch if c.external_id]
    existing: dict[str, int] = {}
    if ext_ids:
        rows = s.execute(
            select(Conversation.external_id, Conversation.id).where(
                Conversation.program_id == program_id, Conversation.external_id.in_(set(ext_ids))
            )
        )
        existing = {ext: row_id for ext, row_id in rows if ext is not None}
    keep: list[NewConversation] = []
    in_batch: set[str] = set()
    for conv in batch:
        ext = conv.external_id[:MAX_EXTERNAL_ID] if conv.external_id else None
        label = conv.label or (f"conversation {ext}" if ext else "conversation")
        if ext is not None and ext in existing:
            earlier = existing[ext] >= first_new_id
            on_skip(label, "duplicate of an earlier item in this file" if earlier else "already imported")
            counts.skipped_conversations += 1
            continue
        if ext is not None and ext in in_batch:
            on_skip(label, "duplicate of an earlier item in this file")
            counts.skipped_conversations += 1
            continue
        if not conv.turns:
            on_skip(label, "nothing to import (no answered user message)")
            counts.skipped_conversations += 1
            continue
        if ext is not None:
            in_batch.add(ext)
        keep.append(conv)
    if not keep:
        return

    conv_ids = _insert_returning(
        s,
        Conversation,
        [
            {
                "program_id": program_id,
                "title": (c.title or "")[:MAX_TITLE],
                "source": c.source,
                "external_id": c.external_id[:MAX_EXTERNAL_ID] if c.external_id else None,
                "import_id": import_id,
                "created_at": c.created_at or now,
            }
            for c in keep
        ],
    )
    turn_rows: list[dict[str, Any]] = []
    turns: list[NewTurn] = []
    for conv, conv_id in zip(keep, conv_ids, strict=True):
        for index, turn in enumerate(conv.turns):
            turn_rows.append(
                {
                    "conversation_id": conv_id,
                    "index": index,
                    "user_message": turn.user_message,
                    "attempts_to_5": _attempts_to_5(turn),
                    "created_at": turn.created_at or conv.created_at or now,
                }
            )
            turns.append(turn)
    turn_ids = _insert_returning(s, Turn, turn_rows)
    attempt_rows: list[dict[str, Any]] = []
    attempts: list[NewAttempt] = []
    for turn, turn_id in zip(turns, turn_ids, strict=True):
        for number, attempt in enumerate(turn.attempts, start=1):
            attempt_rows.append(
                {
                    "turn_id": turn_id,
                    "number": number,
                    "version_id": None,
                    "model_spec": attempt.model_spec[:500],
                    "messages": attempt.messages,
                    "response": attempt.response,
                    "critique_used": None,
                    "latency_ms": 0.0,
                    "prompt_tokens": None,
                    "completion_tokens": None,
                    "demo_attempt_ids": [],
                    "created_at": attempt.created_at or turn.created_at or now,
                }
            )
            attempts.append(attempt)
    attempt_ids = _insert_returning(s, Attempt, attempt_rows)
    feedback_rows: list[dict[str, Any]] = []
    for attempt, attempt_id in zip(attempts, attempt_ids, strict=True):
        for fb in attempt.feedback:
            feedback_rows.append(
                {
                    "attempt_id": attempt_id,
                    "kind": fb.kind,
                    "stars": fb.stars,
                    "critique": fb.critique,
                    "text": fb.text,
                    "created_at": fb.created_at or attempt.created_at or now,
                }
            )
    feedback_ids = _insert_returning(s, Feedback, feedback_rows)
    for row, fb_id in zip(feedback_rows, feedback_ids, strict=True):
        if row["critique"]:
            counts.critiques += 1
            counts.critique_feedback_ids.append(fb_id)
    counts.conversations += len(keep)
    counts.turns += len(turn_rows)
    counts.attempts += len(attempt_rows)
    counts.ratings += sum(1 for row in feedback_rows if row["stars"] is not None)


def _attempts_to_5(turn: NewTurn) -> int | None:
    for number, attempt in enumerate(turn.attempts, start=1):
        if any(fb.stars == 5 for fb in attempt.feedback):
            return number
    return None


def _insert_returning(s: Session, model: Any, rows: list[dict[str, Any]]) -> list[int]:
    """Bulk-insert ``rows`` and return their ids in order.

    SQLite cannot return ids of a multi-row insert in order without going row by row, so there the
    ids are assigned here: past both the largest id and ``sqlite_sequence`` (ids are never reused),
    inside the transaction that holds the database's write lock. Other databases use
    INSERT ... RETURNING in parameter order.
    """
    if not rows:
        return []
    if s.get_bind().dialect.name != "sqlite":
        result = s.execute(insert(model).returning(model.id, sort_by_parameter_order=True), rows)
        return list(result.scalars())
    largest = s.scalar(select(func.max(model.id))) or 0
    used = s.execute(
        text("SELECT seq FROM sqlite_sequence WHERE name = :name"), {"name": model.__tablename__}
    ).scalar()
    first = max(largest, int(used or 0)) + 1
    ids = list(range(first, first + len(rows)))
    for row, row_id in zip(rows, ids, strict=True):
        row["id"] = row_id
    s.execute(insert(model), rows)
    return ids
