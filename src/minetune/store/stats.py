"""The numbers ``minetune stats`` shows, read with SQLAlchemy Core alone.

Importing SQLAlchemy's ORM and the declarative schema costs about 0.15 s on the development VM, a
third of what ``minetune stats`` may take, so this module names the few columns it reads with
lightweight ``table()`` constructs instead of importing :mod:`minetune.store.schema`.
:meth:`minetune.store.Store.stats` computes the same numbers through :func:`program_stats`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import column, func, select, table
from sqlalchemy.engine import Connection

from minetune.errors import NotFoundError
from minetune.files import private_home
from minetune.store import DEFAULT_PROGRAM
from minetune.store.db import open_engine

# The same kinds as minetune.store.schema.FEEDBACK_KINDS (a test keeps them equal); not imported
# from there, because importing the schema is what this module avoids.
FEEDBACK_KINDS = ("explicit", "praise", "imported", "implicit")

_users = table("users", column("id"), column("name"))
_programs = table("programs", column("id"), column("user_id"), column("name"))
_conversations = table("conversations", column("id"), column("program_id"))
_turns = table("turns", column("id"), column("conversation_id"), column("attempts_to_5"))
_attempts = table("attempts", column("id"), column("turn_id"))
_feedback = table("feedback", column("id"), column("attempt_id"), column("kind"), column("stars"))


def effective_ratings(feedback: Iterable[tuple[Any, ...]]) -> dict[int, int]:
    """Map attempt id → stars from (attempt_id, kind, stars) rows in time order.

    The latest explicit rating wins; without one, the latest other rating (praise, imported,
    implicit) counts.
    """
    explicit: dict[int, int] = {}
    other: dict[int, int] = {}
    for attempt_id, kind, stars in feedback:
        if stars is None:
            continue
        (explicit if kind == "explicit" else other)[attempt_id] = stars
    return other | explicit


def program_stats(conn: Connection, program_ids: Sequence[int], program: str | None) -> dict[str, Any]:
    """Counts, the star histogram (each attempt's effective rating), and attempts-to-5 stars of
    the programs ``program_ids`` (``program`` is the name reported: None for all of them)."""
    in_programs = _conversations.c.program_id.in_(list(program_ids))
    turns_of = _turns.join(_conversations, _turns.c.conversation_id == _conversations.c.id)
    attempts_of = _attempts.join(turns_of, _attempts.c.turn_id == _turns.c.id)
    turns = conn.execute(select(_turns.c.attempts_to_5).select_from(turns_of).where(in_programs)).all()
    attempts = conn.scalar(select(func.count()).select_from(attempts_of).where(in_programs)) or 0
    fb_rows = conn.execute(
        select(_feedback.c.attempt_id, _feedback.c.kind, _feedback.c.stars)
        .select_from(_feedback.join(attempts_of, _feedback.c.attempt_id == _attempts.c.id))
        .where(in_programs)
        .order_by(_feedback.c.id)
    ).all()
    ratings = effective_ratings(fb_rows)
    histogram = Counter(ratings.values())
    reached = [row.attempts_to_5 for row in turns if row.attempts_to_5]
    kinds = Counter(kind for _, kind, _ in fb_rows)
    return {
        "program": program,
        "turns": len(turns),
        "attempts": attempts,
        "rated_attempts": len(ratings),
        "ratings": {str(n): histogram.get(n, 0) for n in range(1, 6)},
        "mean_stars": round(sum(ratings.values()) / len(ratings), 3) if ratings else None,
        "turns_reaching_5": len(reached),
        "mean_attempts_to_5": round(sum(reached) / len(reached), 3) if reached else None,
        "mean_score": round(sum(1 / n for n in reached) / len(turns), 3) if turns else None,
        "captures": kinds.get("praise", 0),
        "feedback": {k: kinds.get(k, 0) for k in FEEDBACK_KINDS},
    }


def read_stats(home: Path, database_url: str, user: str, program: str | None) -> dict[str, Any]:
    """:meth:`Store.stats` of ``user`` without the ORM: opens (creating and migrating as needed)
    the database like :meth:`Store.open`, but writes nothing else: a user or ``default`` program
    that does not exist yet has zero counts; another unknown program is a NotFoundError."""
    private_home(home)
    engine = open_engine(database_url)
    try:
        with engine.begin() as conn:
            return program_stats(conn, _program_ids(conn, user, program), program)
    finally:
        engine.dispose()


def _program_ids(conn: Connection, user: str, program: str | None) -> list[int]:
    owned = (
        select(_programs.c.id).join(_users, _programs.c.user_id == _users.c.id).where(_users.c.name == user)
    )
    if program is None:
        return list(conn.scalars(owned))
    # No stored name has a control character (and PostgreSQL refuses NUL in a query).
    found = None if _has_controls(program) else conn.scalar(owned.where(_programs.c.name == program))
    if found is None and program != DEFAULT_PROGRAM:
        raise NotFoundError(f"No program named {program!r}. See `minetune program list`.")
    return [] if found is None else [found]


def _has_controls(text: str) -> bool:
    import unicodedata

    return any(unicodedata.category(ch) == "Cc" for ch in text)
