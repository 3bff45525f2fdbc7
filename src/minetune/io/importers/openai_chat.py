"""OpenAI chat fine-tuning JSONL: one ``{"messages": [{"role", "content", "weight"?}, ...]}`` per line.

Each user message and the assistant answer after it become a turn whose attempt keeps the exact
message list before the answer (system prompt and history). Answers are training targets, so they
are imported as accepted (5★), except those with ``"weight": 0``, which the format marks as not to
be learned from: they are kept as history, unrated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from minetune.io.importers.base import Skip, chat_conversation, content_id, need, text_content
from minetune.store.imports import NewConversation

FORMAT = "openai-chat"


def matches(record: dict[str, Any]) -> bool:
    return isinstance(record.get("messages"), list) and "preferred_output" not in record


def parse_messages(raw: Any, where: str, skip: Skip) -> list[tuple[str, str, bool]] | None:
    """(role, text, trained) per usable message; None when a message has non-text content."""
    out: list[tuple[str, str, bool]] = []
    for i, message in enumerate(need(raw, list, where, "messages"), start=1):
        here = f"{where} message {i}"
        message = need(message, dict, here, "message")
        role = need(message.get("role"), str, here, "role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            skip(here, f"{role} message")
            continue
        if role == "assistant" and message.get("content") is None and message.get("tool_calls"):
            skip(here, "tool call")
            continue
        text = text_content(message.get("content"), here)
        if text is None:
            return None
        weight = message.get("weight", 1)
        if weight not in (0, 1):
            need(weight, int, here, "weight")
        out.append((role, text, weight != 0))
    return out


def parse(records: Iterator[tuple[str, dict[str, Any]]], skip: Skip) -> Iterator[NewConversation]:
    for where, record in records:
        messages = parse_messages(record.get("messages"), where, skip)
        if messages is None:
            skip(where, "non-text content (images or audio)")
            continue
        model = record.get("model")
        spec = f"import:{model}" if isinstance(model, str) and model else f"import:{FORMAT}"
        yield chat_conversation(
            messages,
            fmt=FORMAT,
            where=where,
            skip=skip,
            model_spec=spec,
            external_id=content_id(FORMAT, record),
        )
