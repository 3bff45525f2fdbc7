"""Alpaca: ``{"instruction", "input"?, "output", "system"?, "history"?}`` records, as a JSON array or
JSON Lines (``system`` and ``history`` are LLaMA-Factory's extra columns).

The user message is the instruction, followed by the input after a blank line when there is one.
``history`` ([[user, assistant], ...]) becomes earlier turns of the conversation, kept as context and
unrated; the output is the training target, imported as accepted (5★).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from minetune.io.importers.base import ImportFormatError, Skip, chat_conversation, content_id, need
from minetune.store.imports import NewConversation

FORMAT = "alpaca"


def matches(record: dict[str, Any]) -> bool:
    return "instruction" in record and "output" in record


def parse(records: Iterator[tuple[str, dict[str, Any]]], skip: Skip) -> Iterator[NewConversation]:
    for where, record in records:
        instruction = need(record.get("instruction"), str, where, "instruction")
        extra = record.get("input")
        extra = "" if extra is None else need(extra, str, where, "input")
        output = need(record.get("output"), str, where, "output")
        system = record.get("system")
        system = "" if system is None else need(system, str, where, "system")
        user = instruction.strip() + ("\n\n" + extra.strip() if extra.strip() else "")
        if not user or not output.strip():
            skip(where, "empty instruction or output")
            continue
        messages: list[tuple[str, str, bool]] = [("system", system, False)] if system.strip() else []
        history = record.get("history")
        for i, pair in enumerate(
            need(history, list, where, "history") if history is not None else [], start=1
        ):
            here = f"{where} history[{i}]"
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                raise ImportFormatError(f"{here}: should be a [user, assistant] pair of texts.")
            messages += [("user", pair[0], False), ("assistant", pair[1], False)]
        messages += [("user", user, True), ("assistant", output, True)]
        yield chat_conversation(
            messages,
            fmt=FORMAT,
            where=where,
            skip=skip,
            model_spec=f"import:{FORMAT}",
            external_id=content_id(FORMAT, record),
        )
