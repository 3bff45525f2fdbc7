"""Store helpers for browsing and curating: conversation lists, a program's turns for review,
excluding a turn, storing a user's edited answer, and the raw rows the metrics page plots.

Plain repository functions over a :class:`~minetune.store.repo.Store`: each is scoped to the
store's user (another user's ids are reported as not found) and runs in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, true
from sqlalchemy.orm import selectinload

from minetune.errors import NotFoundError, StoreError
from minetune.store.repo import Store
from minetune.store.schema import Attempt, Conversation, Feedback, Program, ProgramVersion, Turn

# The model_spec of an attempt that is the user's own edited answer rather than a model's.
USER_EDIT_MODEL = "user-edit"


@dataclass(frozen=True)
class ConversationSummary:
    id: int
    title: str
    created_at: datetime
    turns: int


def _owner_query(store: Store, *columns: Any) -> Any:
    return (
        select(*columns)
        .select_from(Conversation)
        .join(Program, Program.id == Conversation.program_id)
        .where(Program.user_id == store.user_id)
    )


def conversation_program(store: Store, conversation_id: int) -> str:
    """The name of the program a conversation of this user belongs to."""
    with store.db.transaction() as s:
        name = s.scalar(_owner_query(store, Program.name).where(Conversation.id == conversation_id))
    if name is None:
        raise NotFoundError(f"No conversation with id {conversation_id}.")
    return str(name)


def turn_location(store: Store, turn_id: int) -> tuple[str, int]:
    """(program name, conversation id) of one of this user's turns."""
    with store.db.transaction() as s:
        row = s.execute(
            _owner_query(store, Program.name, Conversation.id)
            .join(Turn, Turn.conversation_id == Conversation.id)
            .where(Turn.id == turn_id)
        ).first()
    if row is None:
        raise NotFoundError(f"No turn with id {turn_id}.")
    return str(row[0]), int(row[1])


def attempt_location(store: Store, attempt_id: int) -> tuple[str, int, int]:
    """(program name, conversation id, turn id) of one of this user's attempts."""
    with store.db.transaction() as s:
        row = s.execute(
            _owner_query(store, Program.name, Conversation.id, Turn.id)
            .join(Turn, Turn.conversation_id == Conversation.id)
            .join(Attempt, Attempt.turn_id == Turn.id)
            .where(Attempt.id == attempt_id)
        ).first()
    if row is None:
        raise NotFoundError(f"No attempt with id {attempt_id}.")
    return str(row[0]), int(row[1]), int(row[2])


def conversations(
    store: Store, program: str, limit: int = 200, ids: list[int] | None = None
) -> list[ConversationSummary]:
    """The program's conversations (not their branches, see store/branches.py), newest first, with
    their number of turns; only those in ``ids`` when given."""
    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        counts = (
            select(Turn.conversation_id, func.count().label("n")).group_by(Turn.conversation_id).subquery()
        )
        rows = s.execute(
            select(Conversation.id, Conversation.title, Conversation.created_at, counts.c.n)
            .outerjoin(counts, counts.c.conversation_id == Conversation.id)
            .where(Conversation.program_id == prog.id, Conversation.parent_id.is_(None))
            .where(Conversation.id.in_(ids) if ids is not None else true())
            .order_by(Conversation.id.desc())
            .limit(limit)
        ).all()
    return [ConversationSummary(i, t or "", c, n or 0) for i, t, c, n in rows]


def _turns_with_attempts() -> Any:
    return select(Turn).options(selectinload(Turn.attempts).selectinload(Attempt.feedback))


def conversation_turns(store: Store, conversation_id: int) -> tuple[Conversation, list[Turn]]:
    """A conversation and its turns in order, each with its attempts and their feedback loaded."""
    with store.db.transaction() as s:
        conv = store.owned_row(s, Conversation, conversation_id)
        turns = s.scalars(
            _turns_with_attempts().where(Turn.conversation_id == conv.id).order_by(Turn.index)
        ).all()
        return conv, list(turns)


def program_turns(store: Store, program: str, limit: int = 1000) -> list[Turn]:
    """The program's newest turns (newest first), with attempts and feedback loaded."""
    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        return list(
            s.scalars(
                _turns_with_attempts()
                .join(Conversation, Conversation.id == Turn.conversation_id)
                .where(Conversation.program_id == prog.id)
                .order_by(Turn.id.desc())
                .limit(limit)
            )
        )


def version_by_id(store: Store, version_id: int) -> ProgramVersion:
    """One of this user's program versions by its id."""
    with store.db.transaction() as s:
        version = s.scalar(
            select(ProgramVersion)
            .join(Program, Program.id == ProgramVersion.program_id)
            .where(ProgramVersion.id == version_id, Program.user_id == store.user_id)
        )
    if version is None:
        raise NotFoundError(f"No program version with id {version_id}.")
    return version


def set_excluded(store: Store, turn_id: int, excluded: bool) -> None:
    """Exclude a turn from demos and training data (it is kept), or bring it back."""
    with store.db.transaction() as s:
        store.owned_row(s, Turn, turn_id).excluded = excluded


def add_user_edit(store: Store, turn_id: int, text: str) -> Attempt:
    """Store the user's own answer to a turn as its newest attempt, rated 5 stars explicitly.

    The attempt's model is ``user-edit``; it is sent with the messages of the turn's first
    attempt (its original prompt). Its 5 stars do not set the turn's attempts-to-5 count: the
    model never earned them.
    """
    if not text.strip():
        raise StoreError("An edited answer needs some text.")
    with store.db.transaction() as s:
        turn = store.owned_row(s, Turn, turn_id)
        attempts = s.scalars(select(Attempt).where(Attempt.turn_id == turn.id).order_by(Attempt.number)).all()
        first = attempts[0] if attempts else None
        latest = attempts[-1] if attempts else None
        attempt = Attempt(
            turn_id=turn.id,
            number=len(attempts) + 1,
            version_id=latest.version_id if latest else None,
            model_spec=USER_EDIT_MODEL,
            messages=list(first.messages) if first else [{"role": "user", "content": turn.user_message}],
            response=text,
            critique_used=None,
            latency_ms=0.0,
            demo_attempt_ids=[],
        )
        s.add(attempt)
        s.flush()
        s.add(Feedback(attempt_id=attempt.id, kind="explicit", stars=5, text="edited by the user"))
        s.flush()
        return attempt


# -- rows for metrics ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackEvent:
    id: int
    created_at: datetime
    attempt_id: int
    kind: str
    stars: int | None
    user_edit: bool


@dataclass(frozen=True)
class AttemptUsage:
    created_at: datetime
    model_spec: str
    prompt_tokens: int | None
    completion_tokens: int | None


def feedback_events(store: Store, program: str) -> list[FeedbackEvent]:
    """Every feedback event of the program's turns, oldest first."""
    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        rows = s.execute(
            select(
                Feedback.id,
                Feedback.created_at,
                Feedback.attempt_id,
                Feedback.kind,
                Feedback.stars,
                Attempt.model_spec,
            )
            .join(Attempt, Attempt.id == Feedback.attempt_id)
            .join(Turn, Turn.id == Attempt.turn_id)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .where(Conversation.program_id == prog.id)
            .order_by(Feedback.id)
        ).all()
    return [FeedbackEvent(i, c, a, k, st, m == USER_EDIT_MODEL) for i, c, a, k, st, m in rows]


def turns_reaching_five(store: Store, program: str) -> list[tuple[datetime, int]]:
    """(turn time, attempts to the first model-made 5-star answer) per turn that reached one."""
    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        rows = s.execute(
            select(Turn.created_at, Turn.attempts_to_5)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .where(Conversation.program_id == prog.id, Turn.attempts_to_5.is_not(None))
            .order_by(Turn.id)
        ).all()
    return [(c, n) for c, n in rows if n is not None]


def attempt_usage(store: Store, program: str) -> list[AttemptUsage]:
    """Token usage of every model-made attempt of the program, oldest first."""
    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        rows = s.execute(
            select(Attempt.created_at, Attempt.model_spec, Attempt.prompt_tokens, Attempt.completion_tokens)
            .join(Turn, Turn.id == Attempt.turn_id)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .where(Conversation.program_id == prog.id, Attempt.model_spec != USER_EDIT_MODEL)
            .order_by(Attempt.id)
        ).all()
    return [AttemptUsage(*row) for row in rows]
