"""The demo lineage: which demos each attempt was shown (``attempts.demo_attempt_ids``).

Demo selection credits a rating of an attempt to the demos that attempt was shown
(:mod:`minetune.learn.demos`); this is the one query it needs. Scoped to the store's user and
one program, in one transaction.
"""

from __future__ import annotations

from sqlalchemy import select

from minetune.store.repo import Store
from minetune.store.schema import Attempt, Conversation, Turn

# Beyond this many ids an IN list makes SQLite plan a far slower query than the plain join.
_MAX_IN = 500


def shown_demos(store: Store, program: str, attempt_ids: list[int]) -> dict[int, list[int]]:
    """attempt id -> the attempt ids of the demos it was shown, for those of ``attempt_ids`` in
    ``program`` that were shown any (forget already removed links to forgotten demos)."""
    if not attempt_ids:
        return {}
    wanted = set(attempt_ids)
    with store.db.transaction() as s:
        query = (
            select(Attempt.id, Attempt.demo_attempt_ids)
            .join(Turn, Turn.id == Attempt.turn_id)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .where(Conversation.program_id == store.program_row(s, program).id)
        )
        if len(wanted) <= _MAX_IN:
            query = query.where(Attempt.id.in_(wanted))
        rows = s.execute(query).all()
    return {
        attempt_id: [int(d) for d in demos] for attempt_id, demos in rows if demos and attempt_id in wanted
    }
