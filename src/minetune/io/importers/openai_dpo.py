"""OpenAI preference (DPO) JSONL: ``{"input": {"messages": [...]}, "preferred_output": [...],
"non_preferred_output": [...]}`` per line.

Each line is one turn (the last user message of ``input``) with two attempts that both saw the
exact input messages: the preferred answer first, rated 5★, then the non-preferred one, rated 1★.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from minetune.io.importers.base import Skip, assistant_text, content_id, first_line_title, need, text_content
from minetune.store.imports import NewAttempt, NewConversation, NewFeedback, NewTurn

FORMAT = "openai-dpo"


def matches(record: dict[str, Any]) -> bool:
    return "preferred_output" in record and "non_preferred_output" in record


def parse(records: Iterator[tuple[str, dict[str, Any]]], skip: Skip) -> Iterator[NewConversation]:
    for where, record in records:
        source = need(record.get("input"), dict, where, "input")
        sent: list[dict[str, Any]] = []
        user: str | None = None
        usable = True
        for i, message in enumerate(need(source.get("messages"), list, where, "input.messages"), start=1):
            here = f"{where} input message {i}"
            message = need(message, dict, here, "message")
            role = need(message.get("role"), str, here, "role")
            text = text_content(message.get("content"), here)
            if text is None:
                usable = False
                break
            role = "system" if role == "developer" else role
            sent.append({"role": role, "content": text})
            if role == "user":
                user = text
        preferred = assistant_text(record.get("preferred_output"), where, "preferred_output")
        other = assistant_text(record.get("non_preferred_output"), where, "non_preferred_output")
        if not usable or preferred is None or other is None:
            skip(where, "non-text content (images or audio)")
            continue
        if user is None or not user.strip():
            skip(where, "no user message in input.messages")
            continue
        if not preferred.strip() or not other.strip():
            skip(where, "an empty preferred or non-preferred answer")
            continue
        spec = f"import:{FORMAT}"
        attempts = [
            NewAttempt(preferred, sent, spec, feedback=[NewFeedback(kind="imported", stars=5)]),
            NewAttempt(other, sent, spec, feedback=[NewFeedback(kind="imported", stars=1)]),
        ]
        yield NewConversation(
            [NewTurn(user, attempts)],
            external_id=content_id(FORMAT, record),
            title=first_line_title(user),
            source=FORMAT,
            label=where,
        )
