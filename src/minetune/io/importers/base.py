"""What every importer shares: the error type, the limits, the skip callback, and small value helpers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from minetune.errors import MinetuneError
from minetune.store.imports import NewAttempt, NewConversation, NewFeedback, NewTurn

Skip = Callable[[str, str], None]
"""``skip(where, reason)``: report an item that is deliberately not imported."""


MiB = 1 << 20
MAX_ERROR_CHARS = 1000
MAX_LABEL_CHARS = 300


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in '…' when it was cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


class ImportFormatError(MinetuneError):
    """The input cannot be imported: unknown format, malformed content, an unsafe archive or a file
    over the :class:`ImportLimits`. The message is one line of bounded length."""

    def __init__(self, message: str) -> None:
        super().__init__(clip(message, MAX_ERROR_CHARS))


@dataclass(frozen=True)
class ImportLimits:
    """What one import reads at most, so a hostile file (a zip bomb, one giant JSON element) is
    refused with a clear error before it can exhaust memory.

    ``element_chars`` bounds one JSON array element (a whole ChatGPT conversation), one JSON Lines
    line, one capture section or CSV line; a file with a bigger one is refused. A conversation with
    a message longer than ``message_chars`` is skipped; titles are shortened to ``title_chars``.
    A zip member is refused when it declares or yields more than ``member_bytes``, or expands more
    than ``zip_ratio`` times once past ``ratio_floor`` bytes (real exports compress 5-20×).
    """

    element_chars: int = 32 * MiB
    message_chars: int = 1 * MiB
    title_chars: int = 500
    member_bytes: int = 8 << 30
    zip_ratio: int = 200
    ratio_floor: int = 1 * MiB


DEFAULT_LIMITS = ImportLimits()


def size_text(n: int) -> str:
    """A byte or character count for messages: '1.5 GiB', '32 MiB', '900 KiB', '12 bytes'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def content_id(fmt: str, record: Any) -> str:
    """A stable identity for a record without one of its own: the hash of its canonical JSON."""
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"{fmt}:{hashlib.sha256(blob.encode('utf-8')).hexdigest()[:40]}"


def timestamp(value: Any) -> datetime | None:
    """Epoch seconds (int/float/str) or an ISO 8601 string as an aware datetime; None if unusable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return datetime.fromtimestamp(float(text), UTC)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


_TYPE_NAMES = {dict: "an object", list: "a list", str: "text", int: "a number", float: "a number"}


def need(value: Any, kind: type | tuple[type, ...], where: str, field: str) -> Any:
    """``value`` if it has the expected type, else a clear :class:`ImportFormatError`."""
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        got = "missing or null" if value is None else _TYPE_NAMES.get(type(value), type(value).__name__)
        raise ImportFormatError(f"{where}: {field!r} should be {expected}, but is {got}.")
    return value


def text_content(content: Any, where: str) -> str | None:
    """An OpenAI-style message ``content``: a string, or a list of parts whose text parts are joined.

    None when there is non-text content (an image, audio...), which callers skip.
    """
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                return None
        return "".join(texts)
    raise ImportFormatError(
        f"{where}: 'content' should be text or a list of parts, not {type(content).__name__}."
    )


def accepted() -> list[NewFeedback]:
    """The rating given to answers of training-data formats: they are examples someone chose (5★)."""
    return [NewFeedback(kind="imported", stars=5)]


def chat_conversation(
    messages: list[tuple[str, str, bool]],
    *,
    fmt: str,
    where: str,
    skip: Skip,
    model_spec: str,
    external_id: str,
    title: str = "",
    rate: bool = True,
) -> NewConversation:
    """Turns from a flat (role, text, trained) message list: each user message (consecutive ones joined)
    answered by the assistant message after it. ``trained`` answers are rated 5★ when ``rate``."""
    sent: list[dict[str, Any]] = []
    turns: list[NewTurn] = []
    pending: str | None = None
    for i, (role, text, trained) in enumerate(messages):
        if role == "system":
            sent.append({"role": "system", "content": text})
        elif role == "user":
            pending = text if pending is None else pending + "\n\n" + text
        elif role == "assistant":
            if pending is None:
                skip(f"{where} message {i + 1}", "assistant message without a user message before it")
                sent.append({"role": "assistant", "content": text})
                continue
            if not pending.strip() or not text.strip():
                skip(f"{where} message {i + 1}", "empty user message or answer")
            else:
                context = [*sent, {"role": "user", "content": pending}]
                attempt = NewAttempt(
                    text, context, model_spec, feedback=accepted() if rate and trained else []
                )
                turns.append(NewTurn(pending, [attempt]))
            sent.extend([{"role": "user", "content": pending}, {"role": "assistant", "content": text}])
            pending = None
    if pending is not None:
        skip(f"{where} message {len(messages)}", "user message without an answer")
    if not title and turns:
        title = turns[0].user_message.strip().splitlines()[0][:80] if turns[0].user_message.strip() else ""
    return NewConversation(turns, external_id=external_id, title=title, source=fmt, label=where)


def first_line_title(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0][:80] if stripped else ""


def records(items: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Check that every record of a JSON/JSONL source is an object."""
    for where, item in items:
        yield where, need(item, dict, where, "record")


def assistant_text(raw: Any, where: str, field: str) -> str | None:
    """An answer given as a string or as a list of messages (their assistant parts joined); None when
    a part holds no text (the record is skipped)."""
    if isinstance(raw, str):
        return raw
    texts = []
    for i, message in enumerate(need(raw, list, where, field), start=1):
        here = f"{where} {field}[{i}]"
        message = need(message, dict, here, "message")
        if message.get("role", "assistant") != "assistant":
            continue
        text = text_content(message.get("content"), here)
        if text is None:
            return None
        texts.append(text)
    return "\n\n".join(texts)
