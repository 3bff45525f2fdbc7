"""Store helpers for exchanges: one exchange (conversation, turn, attempt, embedding) in one
transaction, finding the stored attempt a client quotes back, the program of an attempt, and the
life of a streamed attempt (``streaming`` → ``complete`` or ``interrupted``).

Plain repository functions over a :class:`~minetune.store.repo.Store`, scoped to its user; each
runs in one transaction and has committed when it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from minetune.errors import NotFoundError
from minetune.store.db import Database
from minetune.store.repo import Store, next_turn_index
from minetune.store.schema import COMPLETE, Attempt, Conversation, Program, Turn, TurnEmbedding

STREAMING = "streaming"
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class ExchangeIds:
    """Where one exchange was stored; ``new_conversation`` says whether it started one."""

    conversation_id: int
    turn_id: int
    attempt_id: int
    new_conversation: bool
    attempt_ids: tuple[int, ...] = ()  # every attempt stored, in order (more than one for n>1)


def find_answer(
    store: Store, program_id: int, text: str, attempt_id: int | None = None
) -> tuple[int, int] | None:
    """(attempt id, conversation id) of the newest complete attempt of this user's program whose
    response is exactly ``text``, or None (a half answer is never "found"). With ``attempt_id``, only
    that attempt is checked (one indexed lookup); without, the program's attempts are searched (a
    walk over them: no index on text).
    """
    query = (
        select(Attempt.id, Turn.conversation_id)
        .join(Turn, Attempt.turn_id == Turn.id)
        .join(Conversation, Turn.conversation_id == Conversation.id)
        .join(Program, Conversation.program_id == Program.id)
        .where(
            Conversation.program_id == program_id,
            Program.user_id == store.user_id,
            Attempt.response == text,
            Attempt.status == COMPLETE,
        )
    )
    if attempt_id is not None:
        query = query.where(Attempt.id == attempt_id)
    with store.db.transaction() as s:
        row = s.execute(query.order_by(Attempt.id.desc()).limit(1)).first()
    return (row[0], row[1]) if row is not None else None


@dataclass(frozen=True)
class Embedding:
    """A turn embedding to store with the exchange: raw float32 bytes, embedder name, dimensions."""

    vector: bytes
    model: str
    dim: int


def record_exchange(
    store: Store,
    program_id: int,
    conversation_id: int | None,
    user_message: str,
    *,
    title: str = "",
    source: str = "chat",
    embedding: Embedding | None = None,
    more_attempts: Sequence[dict[str, Any]] = (),
    **attempt_fields: Any,
) -> ExchangeIds:
    """Store a user message, its first attempt and its embedding in one transaction, continuing
    ``conversation_id`` (when it is one of this program's; one deleted meanwhile starts afresh) or
    starting a new conversation titled ``title``. The turn index is taken under a row lock.
    ``more_attempts`` (each its own attempt fields) are stored as attempts 2, 3, ... of the same
    turn: the other choices of an ``n>1`` request, each rateable.

    Not synced to disk before returning (``durable=False``: the proxy's hot path); a power cut may
    lose the newest answers, never feedback, which commits durably."""
    with store.db.transaction(durable=False) as s:
        owned = s.scalar(select(Program.id).where(Program.id == program_id, Program.user_id == store.user_id))
        if owned is None:
            raise NotFoundError(f"No program with id {program_id}.")
        if conversation_id is not None:
            found = s.scalar(
                select(Conversation.id).where(
                    Conversation.id == conversation_id, Conversation.program_id == program_id
                )
            )
            conversation_id = found
        new = conversation_id is None
        if conversation_id is None:
            conversation = Conversation(program_id=program_id, title=title[:500], source=source)
            s.add(conversation)
            s.flush()
            conversation_id = conversation.id
        turn = Turn(
            conversation_id=conversation_id,
            index=next_turn_index(s, conversation_id),
            user_message=user_message,
        )
        s.add(turn)
        s.flush()
        attempt = Attempt(turn_id=turn.id, number=1, **attempt_fields)
        s.add(attempt)
        others = [Attempt(turn_id=turn.id, number=n, **f) for n, f in enumerate(more_attempts, start=2)]
        s.add_all(others)
        if embedding is not None:
            s.add(
                TurnEmbedding(
                    turn_id=turn.id, model=embedding.model, dim=embedding.dim, vector=embedding.vector
                )
            )
        s.flush()
        ids = (attempt.id, *(a.id for a in others))
        return ExchangeIds(conversation_id, turn.id, attempt.id, new, ids)


def finish_attempt(store: Store, attempt_id: int, **fields: Any) -> None:
    """Complete a streamed attempt: its answer arrived whole (``fields``: response, latency, tokens).
    Like :func:`record_exchange`, not synced to disk before returning."""
    with store.db.transaction(durable=False) as s:
        owned = _owned_attempt(store, attempt_id)
        s.execute(
            update(Attempt).where(Attempt.id.in_(owned)).values(status=COMPLETE, stream_owner=None, **fields)
        )


def interrupt_attempt(store: Store, attempt_id: int, **fields: Any) -> bool:
    """Mark a streamed attempt ``interrupted`` (the stream was cut: upstream failed or ended early,
    or the client went away), keeping what arrived (``fields``: the partial response, latency).
    Only a ``streaming`` attempt changes; whether it did."""
    with store.db.transaction() as s:
        owned = _owned_attempt(store, attempt_id)
        result = s.execute(
            update(Attempt)
            .where(Attempt.id.in_(owned), Attempt.status == STREAMING)
            .values(status=INTERRUPTED, stream_owner=None, **fields)
        )
        return bool(getattr(result, "rowcount", 0))


def interrupt_streams(
    db: Database, *, dead_owner: Callable[[str], bool], started_before: datetime
) -> list[int]:
    """Across every user: mark ``streaming`` attempts ``interrupted`` whose process is dead
    (``dead_owner(stream_owner)``) or that started before ``started_before`` (no stream runs that
    long); the ids marked, in order."""
    with db.transaction() as s:
        rows = s.execute(
            select(Attempt.id, Attempt.stream_owner, Attempt.created_at).where(Attempt.status == STREAMING)
        ).all()
        ids = [
            attempt_id
            for attempt_id, owner, created in rows
            if owner is None or dead_owner(owner) or _aware(created) < started_before
        ]
        if ids:
            s.execute(
                update(Attempt)
                .where(Attempt.id.in_(ids), Attempt.status == STREAMING)
                .values(status=INTERRUPTED, stream_owner=None)
            )
        return sorted(ids)


def attempt_state(store: Store, attempt_id: int) -> tuple[str, str]:
    """(program name, status) of an attempt of this user; NotFoundError otherwise (the same error
    whether the attempt does not exist or belongs to another user)."""
    with store.db.transaction() as s:
        row = s.execute(
            select(Program.name, Attempt.status)
            .join(Conversation, Conversation.program_id == Program.id)
            .join(Turn, Turn.conversation_id == Conversation.id)
            .join(Attempt, Attempt.turn_id == Turn.id)
            .where(Attempt.id == attempt_id, Program.user_id == store.user_id)
        ).first()
    if row is None:
        raise NotFoundError(f"No attempt with id {attempt_id}.")
    return str(row[0]), str(row[1])


def attempt_program(store: Store, attempt_id: int) -> str:
    """The name of the program an attempt of this user belongs to; NotFoundError otherwise
    (the same error whether the attempt does not exist or belongs to another user)."""
    with store.db.transaction() as s:
        name = s.scalar(
            select(Program.name)
            .join(Conversation, Conversation.program_id == Program.id)
            .join(Turn, Turn.conversation_id == Conversation.id)
            .join(Attempt, Attempt.turn_id == Turn.id)
            .where(Attempt.id == attempt_id, Program.user_id == store.user_id)
        )
    if name is None:
        raise NotFoundError(f"No attempt with id {attempt_id}.")
    return str(name)


def _owned_attempt(store: Store, attempt_id: int) -> Any:
    return (
        select(Attempt.id)
        .join(Turn, Attempt.turn_id == Turn.id)
        .join(Conversation, Turn.conversation_id == Conversation.id)
        .join(Program, Conversation.program_id == Program.id)
        .where(Attempt.id == attempt_id, Program.user_id == store.user_id)
    )


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes (stored as UTC); PostgreSQL aware ones."""
    if value.tzinfo is not None:
        return value
    from datetime import UTC

    return value.replace(tzinfo=UTC)
