"""Data access for erasure: which rows a forget reaches, deleting them, and the narrow write paths
that redaction needs — including the one sanctioned write to an immutable program version.

Only queries and writes live here, each inside the caller's transaction (a ``Session``); what to
delete, redact or retrain is decided by :mod:`minetune.app.forget`. :func:`scrub` runs after the
transaction so the database keeps no deleted text in free pages, the WAL or dead tuples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from minetune.errors import NotFoundError
from minetune.store.db import Database
from minetune.store.repo import lock_row
from minetune.store.schema import (
    Adapter,
    Attempt,
    Base,
    Comparison,
    Conversation,
    Feedback,
    ImportRecord,
    JudgeState,
    Lesson,
    Program,
    ProgramVersion,
    TrainingJob,
    Turn,
)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass
class Scope:
    """The rows one forget reaches: turns (with their conversation and program), the conversations
    named explicitly (deleted even when turns remain elsewhere), attempts, feedback and programs."""

    turns: dict[int, tuple[int, int]] = field(default_factory=dict)  # turn -> (conversation, program)
    conversations: set[int] = field(default_factory=set)
    attempts: set[int] = field(default_factory=set)
    feedback: set[int] = field(default_factory=set)
    programs: set[int] = field(default_factory=set)
    names: dict[int, str] = field(default_factory=dict)  # program id -> name
    imports: list[int] = field(default_factory=list)

    @property
    def touched_conversations(self) -> set[int]:
        return {c for c, _ in self.turns.values()} | self.conversations


def lock_programs(s: Session, program_ids: Iterable[int]) -> None:
    """Lock these program rows (in id order, so two callers cannot deadlock) for the rest of the
    transaction: forgets of one program run one at a time, and never rewrite a row that another
    forget is deleting (PostgreSQL; on SQLite every transaction already holds the write lock)."""
    for program_id in sorted(set(program_ids)):
        lock_row(s, Program, program_id)


def resolve_scope(
    s: Session,
    user_id: int,
    program_ids: Sequence[int],
    *,
    turn_ids: Sequence[int] = (),
    conversation_ids: Sequence[int] = (),
    import_ids: Sequence[int] = (),
    before: datetime | None = None,
    everything: bool = False,
) -> Scope:
    """The user's turns/conversations named, those an import brought, before ``before`` or all
    (``everything``) within ``program_ids``, and the attempts and feedback under them. Unknown ids
    raise NotFoundError."""
    scope = Scope()
    if import_ids:
        imports = set(
            s.scalars(
                select(ImportRecord.id)
                .join(Program, Program.id == ImportRecord.program_id)
                .where(ImportRecord.id.in_(list(import_ids)), Program.user_id == user_id)
            )
        )
        missing = sorted(set(import_ids) - imports)
        if missing:
            raise NotFoundError(f"No import with id {missing[0]}.")
        scope.imports = sorted(imports)
        brought = s.scalars(select(Conversation.id).where(Conversation.import_id.in_(scope.imports)))
        conversation_ids = [*conversation_ids, *brought]
    owned = (
        select(Turn.id, Turn.conversation_id, Conversation.program_id)
        .join(Conversation, Conversation.id == Turn.conversation_id)
        .join(Program, Program.id == Conversation.program_id)
        .where(Program.user_id == user_id)
    )
    if turn_ids:
        found = {t: (c, p) for t, c, p in s.execute(owned.where(Turn.id.in_(list(turn_ids))))}
        missing = sorted(set(turn_ids) - set(found))
        if missing:
            raise NotFoundError(f"No turn with id {missing[0]}.")
        scope.turns.update(found)
    if conversation_ids:
        rows = s.execute(
            select(Conversation.id, Conversation.program_id)
            .join(Program, Program.id == Conversation.program_id)
            .where(Conversation.id.in_(list(conversation_ids)), Program.user_id == user_id)
        ).all()
        missing = sorted(set(conversation_ids) - {r[0] for r in rows})
        if missing:
            raise NotFoundError(f"No conversation with id {missing[0]}.")
        scope.conversations |= {r[0] for r in rows}
        scope.programs |= {r[1] for r in rows}
        scope.turns.update(
            {
                t: (c, p)
                for t, c, p in s.execute(owned.where(Turn.conversation_id.in_(list(conversation_ids))))
            }
        )
    if everything:
        rows = s.execute(
            select(Conversation.id, Conversation.program_id).where(Conversation.program_id.in_(program_ids))
        ).all()
        scope.conversations |= {r[0] for r in rows}
        scope.programs |= set(program_ids)
        scope.turns.update(
            {t: (c, p) for t, c, p in s.execute(owned.where(Conversation.program_id.in_(program_ids)))}
        )
        scope.imports = sorted(
            set(scope.imports)
            | set(s.scalars(select(ImportRecord.id).where(ImportRecord.program_id.in_(program_ids))))
        )
    elif before is not None:
        cutoff = _aware(before).astimezone(UTC)
        scope.turns.update(
            {
                t: (c, p)
                for t, c, p in s.execute(
                    owned.where(Conversation.program_id.in_(program_ids), Turn.created_at < cutoff)
                )
            }
        )
    turns = sorted(scope.turns)
    if turns:
        scope.attempts = set(s.scalars(select(Attempt.id).where(Attempt.turn_id.in_(turns))))
    if scope.attempts:
        scope.feedback = set(
            s.scalars(select(Feedback.id).where(Feedback.attempt_id.in_(sorted(scope.attempts))))
        )
    scope.programs |= {p for _, p in scope.turns.values()}
    scope.names = dict(
        s.execute(select(Program.id, Program.name).where(Program.id.in_(sorted(scope.programs)))).all()
    )
    return scope


# -- what the scope holds ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ForgottenTurn:
    """One turn about to be deleted: its message, every answer, and every critique or feedback text."""

    turn_id: int
    conversation_id: int
    index: int
    user_message: str
    responses: tuple[str, ...]
    notes: tuple[str, ...]  # critiques, praise texts, critiques folded into retries


def forgotten_turns(s: Session, turn_ids: Iterable[int]) -> list[ForgottenTurn]:
    ids = sorted(set(turn_ids))
    if not ids:
        return []
    turns = {t.id: t for t in s.scalars(select(Turn).where(Turn.id.in_(ids)))}
    responses: dict[int, list[str]] = {t: [] for t in ids}
    notes: dict[int, list[str]] = {t: [] for t in ids}
    for turn_id, response, critique_used in s.execute(
        select(Attempt.turn_id, Attempt.response, Attempt.critique_used).where(Attempt.turn_id.in_(ids))
    ):
        responses[turn_id].append(response)
        if critique_used:
            notes[turn_id].append(critique_used)
    for turn_id, critique, note in s.execute(
        select(Attempt.turn_id, Feedback.critique, Feedback.text)
        .join(Attempt, Attempt.id == Feedback.attempt_id)
        .where(Attempt.turn_id.in_(ids))
    ):
        notes[turn_id] += [x for x in (critique, note) if x]
    return [
        ForgottenTurn(
            t,
            turns[t].conversation_id,
            turns[t].index,
            turns[t].user_message,
            tuple(responses[t]),
            tuple(notes[t]),
        )
        for t in ids
    ]


def lessons_from_feedback(s: Session, feedback_ids: Iterable[int]) -> list[Lesson]:
    """Lessons (any status) learned from these feedback rows."""
    ids = sorted(set(feedback_ids))
    if not ids:
        return []
    return list(s.scalars(select(Lesson).where(Lesson.feedback_id.in_(ids)).order_by(Lesson.id)))


def active_lessons(s: Session, program_id: int) -> list[Lesson]:
    return list(
        s.scalars(
            select(Lesson)
            .where(Lesson.program_id == program_id, Lesson.status == "active")
            .order_by(Lesson.id)
        )
    )


def user_adapters(s: Session, user_id: int) -> list[Adapter]:
    return list(
        s.scalars(
            select(Adapter)
            .join(Program, Program.id == Adapter.program_id)
            .where(Program.user_id == user_id)
            .order_by(Adapter.id)
        )
    )


def user_jobs(s: Session, user_id: int) -> list[TrainingJob]:
    return list(
        s.scalars(
            select(TrainingJob)
            .join(Program, Program.id == TrainingJob.program_id)
            .where(Program.user_id == user_id)
            .order_by(TrainingJob.id)
        )
    )


def other_attempts(
    s: Session, program_ids: Iterable[int], exclude_turns: Iterable[int], chunk: int = 500
) -> Iterator[tuple[Attempt, int, str]]:
    """(attempt, its conversation id, its turn's user message) for every attempt of these programs
    outside ``exclude_turns``, read in chunks (the caller may change the attempts as it goes)."""
    excluded = sorted(set(exclude_turns))
    query = (
        select(Attempt.id)
        .join(Turn, Turn.id == Attempt.turn_id)
        .join(Conversation, Conversation.id == Turn.conversation_id)
        .where(Conversation.program_id.in_(sorted(set(program_ids))))
        .order_by(Attempt.id)
    )
    if excluded:
        query = query.where(Attempt.turn_id.not_in(excluded))
    ids = list(s.scalars(query))
    for i in range(0, len(ids), chunk):
        rows = s.execute(
            select(Attempt, Turn.conversation_id, Turn.user_message)
            .join(Turn, Turn.id == Attempt.turn_id)
            .where(Attempt.id.in_(ids[i : i + chunk]))
            .order_by(Attempt.id)
        )
        for row in rows:
            yield row[0], row[1], row[2]


def program_names(user_id: int) -> Any:
    """A query of (program id, name) for the user's programs."""
    return select(Program.id, Program.name).where(Program.user_id == user_id)


def attempt_conversations(s: Session, attempt_ids: Iterable[int]) -> dict[int, int]:
    ids = sorted(set(attempt_ids))
    if not ids:
        return {}
    rows = s.execute(select(Attempt.id, Turn.conversation_id).join(Turn).where(Attempt.id.in_(ids)))
    return {a: c for a, c in rows}


def comparisons(s: Session, program_ids: Iterable[int], exclude_turns: Iterable[int]) -> list[Comparison]:
    excluded = sorted(set(exclude_turns))
    query = select(Comparison).where(Comparison.program_id.in_(sorted(set(program_ids))))
    rows = list(s.scalars(query.order_by(Comparison.id)))
    return [c for c in rows if c.turn_id is None or c.turn_id not in excluded]


def conversations(s: Session, ids: Iterable[int]) -> list[Conversation]:
    wanted = sorted(set(ids))
    if not wanted:
        return []
    return list(s.scalars(select(Conversation).where(Conversation.id.in_(wanted)).order_by(Conversation.id)))


def remaining_turns(s: Session, conversation_id: int, exclude_turns: Iterable[int]) -> list[Turn]:
    """The conversation's turns outside ``exclude_turns``, in order."""
    excluded = sorted(set(exclude_turns))
    query = select(Turn).where(Turn.conversation_id == conversation_id).order_by(Turn.index)
    if excluded:
        query = query.where(Turn.id.not_in(excluded))
    return list(s.scalars(query))


def best_responses(s: Session, turn_ids: Iterable[int]) -> dict[int, str]:
    """Each turn's last attempt's response (the one a bootstrap stores is the persona's reply)."""
    ids = sorted(set(turn_ids))
    if not ids:
        return {}
    out: dict[int, str] = {}
    for turn_id, response in s.execute(
        select(Attempt.turn_id, Attempt.response).where(Attempt.turn_id.in_(ids)).order_by(Attempt.number)
    ):
        out[turn_id] = response
    return out


def versions(s: Session, program_ids: Iterable[int]) -> list[ProgramVersion]:
    return list(
        s.scalars(
            select(ProgramVersion)
            .where(ProgramVersion.program_id.in_(sorted(set(program_ids))))
            .order_by(ProgramVersion.program_id, ProgramVersion.number)
        )
    )


def judges(s: Session, program_ids: Iterable[int]) -> list[JudgeState]:
    return list(s.scalars(select(JudgeState).where(JudgeState.program_id.in_(sorted(set(program_ids))))))


# -- writes ----------------------------------------------------------------------------------------------


def redact_version(s: Session, version_id: int, values: dict[str, Any]) -> None:
    """Overwrite fields of one program version in place.

    Program versions are immutable (see :func:`minetune.store.schema._versions_are_immutable`);
    erasure is the one sanctioned exception. This is a Core UPDATE of the table, so the ORM guard
    is not involved; any loaded copy of the row is expired so nothing stale is read or re-flushed.
    Only :mod:`minetune.app.forget` calls it.
    """
    if not values:
        return
    allowed = {"instructions", "lessons", "demo_policy", "note", "sources"}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"cannot redact version fields {sorted(unknown)}")
    s.flush()
    table = ProgramVersion.__table__
    assert isinstance(table, Table)
    s.connection().execute(update(table).where(table.c.id == version_id).values(**values))
    for obj in list(s.identity_map.values()):
        if isinstance(obj, ProgramVersion) and obj.id == version_id:
            s.expire(obj)


def delete_judge(s: Session, judge: JudgeState) -> None:
    s.delete(judge)


def delete_scope(s: Session, scope: Scope) -> int:
    """Delete the scope's turns (attempts, feedback, embeddings and comparisons cascade), the
    conversations named and those left empty, and with ``everything`` the import records.
    Returns the number of conversations deleted."""
    turns = sorted(scope.turns)
    if turns:
        s.execute(delete(Turn).where(Turn.id.in_(turns)))
    touched = scope.touched_conversations
    gone: list[int] = []
    if touched:
        left = set(s.scalars(select(Turn.conversation_id).where(Turn.conversation_id.in_(sorted(touched)))))
        gone = sorted(scope.conversations | (touched - left))
        if gone:
            s.execute(delete(Conversation).where(Conversation.id.in_(gone)))
    if scope.imports:
        s.execute(delete(ImportRecord).where(ImportRecord.id.in_(scope.imports)))
    return len(gone)


def conversations_left_empty(s: Session, scope: Scope) -> list[int]:
    """The conversations :func:`delete_scope` deletes: those named, and those it leaves empty."""
    touched = scope.touched_conversations
    if not touched:
        return []
    left = set(
        s.scalars(
            select(Turn.conversation_id).where(
                Turn.conversation_id.in_(sorted(touched)), Turn.id.not_in(sorted(scope.turns) or [-1])
            )
        )
    )
    return sorted(scope.conversations | (touched - left))


def serving_adapters(s: Session, program_ids: Iterable[int]) -> dict[int, int]:
    """program id -> the adapter (newest with that path) its active version serves."""
    out: dict[int, int] = {}
    for program_id in sorted(set(program_ids)):
        prog = s.get(Program, program_id)
        serving = s.get(ProgramVersion, prog.active_version_id) if prog and prog.active_version_id else None
        if serving is None or not serving.adapter:
            continue
        adapter = s.scalar(
            select(Adapter.id)
            .where(Adapter.program_id == program_id, Adapter.path == serving.adapter)
            .order_by(Adapter.id.desc())
        )
        if adapter is not None:
            out[program_id] = adapter
    return out


def serving_tainted(s: Session, program_ids: Iterable[int]) -> dict[int, int]:
    """program id -> the tainted adapter its active version serves, for these programs."""
    out: dict[int, int] = {}
    for program_id in sorted(set(program_ids)):
        prog = s.get(Program, program_id)
        if prog is None or prog.active_version_id is None:
            continue
        serving = s.get(ProgramVersion, prog.active_version_id)
        if serving is None or not serving.adapter:
            continue
        tainted = s.scalar(
            select(Adapter.id).where(
                Adapter.program_id == program_id,
                Adapter.path == serving.adapter,
                Adapter.tainted_at.is_not(None),
            )
        )
        if tainted is not None:
            out[program_id] = tainted
    return out


def row_counts(s: Session) -> dict[str, int]:
    return {t.name: s.scalar(select(func.count()).select_from(t)) or 0 for t in Base.metadata.sorted_tables}


# -- after the transaction -------------------------------------------------------------------------


# Tables a forget writes to: the PostgreSQL VACUUM after it covers these.
TOUCHED_TABLES = (
    "turns",
    "attempts",
    "feedback",
    "turn_embeddings",
    "conversations",
    "comparisons",
    "eval_items",
    "eval_runs",
    "lessons",
    "program_versions",
    "judges",
    "imports",
    "adapters",
    "training_jobs",
)


def scrub(db: Database) -> str:
    """Make deleted and overwritten text unrecoverable from the database files; says what ran.

    SQLite: ``secure_delete`` is on for every connection (see :mod:`minetune.store.db`), so deleted
    and overwritten records and freed pages are zeroed in place; the WAL, which still holds the old
    page images, is checkpointed into the main file and truncated (``wal_checkpoint(TRUNCATE)``;
    a connection still reading keeps it from emptying, which the result says). PostgreSQL, on an
    autocommit connection after the forget transaction: ``VACUUM FULL`` of each touched table
    (rewrites it without the dead row versions), or a plain ``VACUUM`` when the table is busy for
    more than 200 ms (dead rows are removed and their space reused, but their bytes may stay in
    the data file until overwritten). WAL segments PostgreSQL recycles itself, and backups, are
    outside minetune's reach.
    """
    engine = db.engine
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()  # the driver connection: VACUUM cannot run inside a transaction
        try:
            cursor = raw.cursor()
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            busy = cursor.fetchone()
            cursor.close()
        finally:
            raw.close()
        note = "" if not busy or not busy[0] else " (another connection was reading: the WAL is not empty)"
        return "sqlite: secure_delete (every connection), wal_checkpoint(TRUNCATE)" + note
    if engine.dialect.name == "postgresql":
        done: list[str] = []
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            try:
                for table in TOUCHED_TABLES:
                    conn.exec_driver_sql("SET lock_timeout = '200ms'")
                    try:
                        conn.exec_driver_sql(f'VACUUM FULL "{table}"')
                        done.append(f"VACUUM FULL {table}")
                    except OperationalError:  # busy: a plain VACUUM needs no exclusive lock
                        conn.exec_driver_sql("RESET lock_timeout")
                        conn.exec_driver_sql(f'VACUUM "{table}"')
                        done.append(f"VACUUM {table}")
            finally:  # the connection goes back to the pool: no lock timeout may stay on it
                conn.exec_driver_sql("RESET lock_timeout")
        return "postgresql: " + ", ".join(done)
    return f"{engine.dialect.name}: no scrub step known"
