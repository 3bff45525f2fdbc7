"""ShareGPT: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": "..."}], "system"?}``,
as a JSON array or JSON Lines. Answers are training targets, imported as accepted (5★)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from minetune.io.importers.base import Skip, chat_conversation, content_id, need
from minetune.store.imports import NewConversation

FORMAT = "sharegpt"
ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
}


def matches(record: dict[str, Any]) -> bool:
    return isinstance(record.get("conversations"), list)


def parse(records: Iterator[tuple[str, dict[str, Any]]], skip: Skip) -> Iterator[NewConversation]:
    for where, record in records:
        messages: list[tuple[str, str, bool]] = []
        system = record.get("system")
        if system is not None and need(system, str, where, "system").strip():
            messages.append(("system", system, True))
        for i, item in enumerate(need(record.get("conversations"), list, where, "conversations"), start=1):
            here = f"{where} message {i}"
            item = need(item, dict, here, "message")
            speaker = need(item.get("from"), str, here, "from")
            value = need(item.get("value"), str, here, "value")
            role = ROLES.get(speaker.lower())
            if role is None:
                skip(here, f"message from {speaker!r}")
                continue
            messages.append((role, value, True))
        record_id = record.get("id")
        title = record_id if isinstance(record_id, str) else ""
        yield chat_conversation(
            messages,
            fmt=FORMAT,
            where=where,
            skip=skip,
            model_spec=f"import:{FORMAT}",
            external_id=content_id(FORMAT, record),
            title=title,
        )
