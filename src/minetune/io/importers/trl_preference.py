"""TRL preference JSONL, as ``minetune export`` writes it (and TRL's DPOTrainer / KTOTrainer read it).

- ``trl-dpo``: ``{"prompt", "chosen", "rejected"}``: one turn with two attempts that saw the same
  prompt, the chosen answer rated 5★ and the rejected one 1★ (as ``openai-dpo`` imports).
- ``trl-kto``: ``{"prompt", "completion", "label"}``: one turn with one attempt, rated 5★ when
  ``label`` is true (desirable) and 1★ when false.

The prompt is conversational (a list of messages, the last user message is the turn's) or a plain
string (TRL's standard form: one user message); answers are a list of assistant messages or a string.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from minetune.io.importers.base import Skip, assistant_text, content_id, first_line_title, need, text_content
from minetune.store.imports import NewAttempt, NewConversation, NewFeedback, NewTurn

DPO, KTO = "trl-dpo", "trl-kto"
DESIRED, UNDESIRED = 5, 1


def matches_dpo(record: dict[str, Any]) -> bool:
    return {"prompt", "chosen", "rejected"} <= record.keys()


def matches_kto(record: dict[str, Any]) -> bool:
    return {"prompt", "completion", "label"} <= record.keys()


def _prompt(raw: Any, where: str) -> list[dict[str, Any]] | None:
    """The prompt messages; None when one has non-text content."""
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    sent = []
    for i, message in enumerate(need(raw, list, where, "prompt"), start=1):
        here = f"{where} prompt message {i}"
        message = need(message, dict, here, "message")
        role = need(message.get("role"), str, here, "role")
        text = text_content(message.get("content"), here)
        if text is None:
            return None
        sent.append({"role": "system" if role == "developer" else role, "content": text})
    return sent


def _turn(
    fmt: str, where: str, record: dict[str, Any], answers: list[tuple[str | None, int]], skip: Skip
) -> NewConversation | None:
    sent = _prompt(record.get("prompt"), where)
    if sent is None or any(text is None for text, _ in answers):
        skip(where, "non-text content (images or audio)")
        return None
    users = [m["content"] for m in sent if m["role"] == "user"]
    if not users or not users[-1].strip():
        skip(where, "no user message in the prompt")
        return None
    if any(not (text or "").strip() for text, _ in answers):
        skip(where, "an empty answer")
        return None
    spec = f"import:{fmt}"
    attempts = [
        NewAttempt(text or "", sent, spec, feedback=[NewFeedback(kind="imported", stars=stars)])
        for text, stars in answers
    ]
    user = users[-1]
    return NewConversation(
        [NewTurn(user, attempts)],
        external_id=content_id(fmt, record),
        title=first_line_title(user),
        source=fmt,
        label=where,
    )


def parse_dpo(records: Iterator[tuple[str, dict[str, Any]]], skip: Skip) -> Iterator[NewConversation]:
    for where, record in records:
        answers = [
            (assistant_text(record.get("chosen"), where, "chosen"), DESIRED),
            (assistant_text(record.get("rejected"), where, "rejected"), UNDESIRED),
        ]
        conversation = _turn(DPO, where, record, answers, skip)
        if conversation is not None:
            yield conversation


def parse_kto(records: Iterator[tuple[str, dict[str, Any]]], skip: Skip) -> Iterator[NewConversation]:
    for where, record in records:
        label = need(record.get("label"), bool, where, "label")
        completion = assistant_text(record.get("completion"), where, "completion")
        answers = [(completion, DESIRED if label else UNDESIRED)]
        conversation = _turn(KTO, where, record, answers, skip)
        if conversation is not None:
            yield conversation
