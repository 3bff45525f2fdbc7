"""Finding the stored attempt whose tool calls a client answers (a chat-completions tool-call
follow-up: the assistant ``tool_calls`` message sent back, then ``role: "tool"`` results).

The tool calls an answer made are kept in ``attempts.extra["tool_calls"]`` (JSON); there is no
index on them, so the search narrows by text (``LIKE`` on the JSON, portable across SQLite and
PostgreSQL) and then checks candidates exactly in Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import String, cast, select

from minetune.store.repo import Store
from minetune.store.schema import COMPLETE, Attempt, Conversation, Program, Turn

CANDIDATES = 20  # newest matching attempts checked (a reused id, e.g. a fake or a local server's)


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def call_signature(calls: Any) -> list[tuple[str, str, str]]:
    """(id, function name, arguments) of each tool call, in order: what identifies them."""
    if not isinstance(calls, Sequence) or isinstance(calls, str):
        return []
    out = []
    for call in calls:
        if not isinstance(call, Mapping):
            continue
        function = call.get("function")
        if not isinstance(function, Mapping):
            function = {}
        out.append((str(call.get("id") or ""), str(function.get("name") or ""),
                    str(function.get("arguments") or "")))
    return out


def find_tool_call_answer(
    store: Store,
    program_id: int,
    calls: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]] = (),
    attempt_id: int | None = None,
) -> tuple[int, int] | None:
    """(attempt id, conversation id) of the newest complete attempt of this user's program that
    made exactly the tool calls ``calls`` (same ids, names and arguments; names and arguments
    alone when the calls carry no ids). Among several, one whose stored messages after the system
    prompt equal ``history`` (the client's messages before the assistant message, after its leading
    system messages, in their stored form) is preferred. With ``attempt_id``, only that attempt
    is checked (one indexed lookup). None when there is none."""
    wanted = call_signature(calls)
    if not wanted:
        return None
    ids = [c[0] for c in wanted if c[0]]
    needle = ids[0] if ids else wanted[0][1]
    if not needle:
        return None
    query = (
        select(Attempt.id, Turn.conversation_id, Attempt.extra, Attempt.messages)
        .join(Turn, Attempt.turn_id == Turn.id)
        .join(Conversation, Turn.conversation_id == Conversation.id)
        .join(Program, Conversation.program_id == Program.id)
        .where(
            Conversation.program_id == program_id,
            Program.user_id == store.user_id,
            Attempt.status == COMPLETE,
            Attempt.extra.is_not(None),
            cast(Attempt.extra, String).like(_like(needle), escape="\\"),
        )
        .order_by(Attempt.id.desc())
        .limit(CANDIDATES)
    )
    if attempt_id is not None:
        query = query.where(Attempt.id == attempt_id)
    with store.db.transaction() as s:
        rows = s.execute(query).all()
    matching = [row for row in rows if call_signature((row[2] or {}).get("tool_calls")) == wanted]
    sent = [dict(m) for m in history]
    for row in matching:
        stored = list(row[3] or [])
        if stored and isinstance(stored[0], Mapping) and stored[0].get("role") == "system":
            stored = stored[1:]  # the program prompt (with the client's leading system messages)
        if stored == sent:
            return row[0], row[1]
    return (matching[0][0], matching[0][1]) if matching else None
