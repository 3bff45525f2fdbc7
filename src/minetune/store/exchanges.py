"""Store helpers for exchanges: one exchange (conversation, turn, attempt, embedding) in one
transaction, finding the stored attempt a client quotes back, and the program of an attempt.

Plain repository functions over a :class:`~minetune.store.repo.Store`, scoped to its user; each
runs in one transaction and has committed when it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update

from minetune.errors import NotFoundError
from minetune.store.repo import Store, next_turn_index
from minetune.store.schema import Attempt, Conversation, Program, Turn, TurnEmbedding


@dataclass(frozen=True)
class ExchangeIds:
    """Where one exchange was stored; ``new_conversation`` says whether it started one."""

    conversation_id: int
    turn_id: int
    attempt_id: int
    new_conversation: bool


def find_answer(
    store: Store, program_id: int, text: str, attempt_id: int | None = None
) -> tuple[int, int] | None:
    """(attempt id, conversation id) of the newest attempt of this user's program whose response
    is exactly ``text``, or None. With ``attempt_id``, only that attempt is checked (one indexed
    lookup); without, the program's attempts are searched (a walk over them: no index on text).
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
    **attempt_fields: Any,
) -> ExchangeIds:
    """Store a user message, its first attempt and its embedding in one transaction, continuing
    ``conversation_id`` (when it is one of this program's; one deleted meanwhile starts afresh) or
    starting a new conversation titled ``title``. The turn index is taken under a row lock."""
    with store.db.transaction() as s:
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
        if embedding is not None:
            s.add(
                TurnEmbedding(
                    turn_id=turn.id, model=embedding.model, dim=embedding.dim, vector=embedding.vector
                )
            )
        s.flush()
        return ExchangeIds(conversation_id, turn.id, attempt.id, new)


def finish_attempt(store: Store, attempt_id: int, **fields: Any) -> None:
    """Fill in an attempt stored before its answer was complete (a stream)."""
    with store.db.transaction() as s:
        owned = _owned_attempt(store, attempt_id)
        s.execute(update(Attempt).where(Attempt.id.in_(owned)).values(**fields))


def discard_exchange(store: Store, ids: ExchangeIds) -> None:
    """Delete an exchange whose answer never completed: its turn, and its conversation if new."""
    with store.db.transaction() as s:
        turns = (
            select(Turn.id)
            .join(Conversation, Turn.conversation_id == Conversation.id)
            .join(Program, Conversation.program_id == Program.id)
            .where(Turn.id == ids.turn_id, Program.user_id == store.user_id)
        )
        s.execute(delete(Turn).where(Turn.id.in_(turns)))
        if ids.new_conversation:
            conversations = (
                select(Conversation.id)
                .join(Program, Conversation.program_id == Program.id)
                .where(Conversation.id == ids.conversation_id, Program.user_id == store.user_id)
            )
            s.execute(delete(Conversation).where(Conversation.id.in_(conversations)))


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
