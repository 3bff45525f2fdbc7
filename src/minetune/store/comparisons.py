"""Store helpers for blind A/B comparisons, and the past messages a comparison prompt can come from.

Plain repository functions over a :class:`~minetune.store.repo.Store`: every query is scoped to
the store's user through the program, each call is one transaction committed on return.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from minetune.errors import NotFoundError, StoreError
from minetune.store.repo import Store
from minetune.store.schema import COMPARISON_WINNERS, Comparison, Conversation, Program, Turn


def _comparison(store: Store, s: Session, comparison_id: int) -> Comparison:
    row = s.scalar(
        select(Comparison)
        .join(Program, Program.id == Comparison.program_id)
        .where(Comparison.id == comparison_id, Program.user_id == store.user_id)
    )
    if row is None:
        raise NotFoundError(f"No comparison with id {comparison_id}.")
    return row


def create_comparison(store: Store, program: str, *, turn_id: int | None = None, **fields: Any) -> Comparison:
    """Record a comparison of ``program`` (undecided); ``fields`` are other Comparison columns.

    A ``turn_id`` must be one of this program's turns."""
    with store.db.transaction() as s:
        prog = store.program_row(s, program)
        if turn_id is not None:
            owner = s.scalar(
                select(Conversation.program_id)
                .join(Turn, Turn.conversation_id == Conversation.id)
                .where(Turn.id == turn_id)
            )
            if owner != prog.id:
                raise NotFoundError(f"Program {program!r} has no turn {turn_id}.")
        row = Comparison(program_id=prog.id, turn_id=turn_id, **fields)
        s.add(row)
        s.flush()
        return row


def get_comparison(store: Store, comparison_id: int) -> Comparison:
    with store.db.transaction() as s:
        return _comparison(store, s, comparison_id)


def comparison_program(store: Store, comparison_id: int) -> str:
    """The name of the program a comparison belongs to."""
    with store.db.transaction() as s:
        row = _comparison(store, s, comparison_id)
        name = s.scalar(select(Program.name).where(Program.id == row.program_id))
        assert name is not None
        return name


def record_pick(store: Store, comparison_id: int, winner: str) -> Comparison:
    """Store the user's pick (``a``, ``b`` or ``tie``); a comparison is decided only once."""
    if winner not in COMPARISON_WINNERS:
        raise StoreError(f"Pick one of {', '.join(COMPARISON_WINNERS)}, not {winner!r}.")
    with store.db.transaction() as s:
        row = _comparison(store, s, comparison_id)
        if row.winner is not None:
            raise StoreError(f"Comparison {comparison_id} is already decided ({row.winner}).")
        row.winner = winner
        row.decided_at = datetime.now(UTC)
        s.flush()
        return row


def list_comparisons(store: Store, program: str, limit: int | None = None) -> list[Comparison]:
    """The program's comparisons, newest first."""
    with store.db.transaction() as s:
        query = (
            select(Comparison)
            .where(Comparison.program_id == store.program_row(s, program).id)
            .order_by(Comparison.id.desc())
        )
        if limit is not None:
            query = query.limit(limit)
        return list(s.scalars(query))


def recent_messages(store: Store, program: str, limit: int = 20) -> list[tuple[int, str]]:
    """(turn id, user message) of the program's latest turns, one per distinct message, newest first."""
    with store.db.transaction() as s:
        newest = (
            select(func.max(Turn.id).label("turn_id"))
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .where(Conversation.program_id == store.program_row(s, program).id)
            .group_by(Turn.user_message)
            .subquery()
        )
        rows = s.execute(
            select(Turn.id, Turn.user_message)
            .where(Turn.id.in_(select(newest.c.turn_id)))
            .order_by(Turn.id.desc())
            .limit(limit)
        )
        return [(turn_id, message) for turn_id, message in rows]


def turn_message(store: Store, program: str, turn_id: int) -> str:
    """The user message of one of ``program``'s turns."""
    with store.db.transaction() as s:
        message = s.scalar(
            select(Turn.user_message)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .where(Turn.id == turn_id, Conversation.program_id == store.program_row(s, program).id)
        )
        if message is None:
            raise NotFoundError(f"Program {program!r} has no turn {turn_id}.")
        return message
