"""minetune's capture markdown (seed 003's layout, written by ``minetune export --format capture-md``).

Each capture section becomes one turn: the user message, an attempt that saw the system prompt and
the message, the praised response, and the praise as feedback of kind ``praise`` (5★). Code fences
may be longer than three backticks (minetune's exporter lengthens them around backticks); files from
the original capture script always used three, so a block ends at its last fence line before the
next heading.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, TextIO

from minetune.io.importers.base import (
    DEFAULT_LIMITS,
    ImportFormatError,
    Skip,
    content_id,
    first_line_title,
    timestamp,
)
from minetune.io.importers.jsonstream import read_lines, too_big
from minetune.store.imports import NewAttempt, NewConversation, NewFeedback, NewTurn

FORMAT = "capture-md"
HEADER = "## Example Captured:"
_BLOCK = re.compile(r"^###\s+(User Message|System Prompt|Assistant Response|Metadata)\b")
_FENCE = re.compile(r"^(`{3,})")


def matches(head: str) -> bool:
    return any(line.startswith(HEADER) for line in head.splitlines())


def _sections(stream: TextIO, name: str, max_chars: int) -> Iterator[tuple[int, list[str]]]:
    """(line number of the header, lines) for each capture section; one over ``max_chars`` refuses."""
    lines: list[str] | None = None
    start = size = 0
    for number, line in enumerate(read_lines(stream, name, max_chars), start=1):
        line = line.rstrip("\r\n")
        if line.startswith(HEADER):
            if lines is not None:
                yield start, lines
            lines, start, size = [], number, 0
        if lines is not None:
            size += len(line) + 1
            if size > max_chars:
                raise too_big(name, f"the capture at line {start}", max_chars)
            lines.append(line)
    if lines is not None:
        yield start, lines


def _block(lines: list[str], where: str, name: str) -> str:
    while lines and not lines[0].strip():
        lines = lines[1:]
    match = _FENCE.match(lines[0]) if lines else None
    if match is None:
        raise ImportFormatError(f"{where}: the {name} section has no ``` code block.")
    fence = match.group(1)
    for end in range(len(lines) - 1, 0, -1):
        if lines[end].strip() == fence:
            return "\n".join(lines[1:end])
    raise ImportFormatError(f"{where}: the {name} code block is not closed.")


def _capture(start: int, lines: list[str], name: str) -> tuple[dict[str, Any], str]:
    where = f"{name} capture at line {start}"
    captured = lines[0][len(HEADER) :].strip()
    praise = ""
    blocks: dict[str, list[str]] = {}
    current: str | None = None
    for line in lines[1:]:
        heading = _BLOCK.match(line)
        if heading:
            current = heading.group(1)
            blocks[current] = []
        elif current is not None:
            blocks[current].append(line)
        elif line.startswith("**Praise:**"):
            praise = line[len("**Praise:**") :].strip()
    for required in ("User Message", "Assistant Response"):
        if required not in blocks:
            raise ImportFormatError(f"{where}: no '### {required}' section.")
    # The rule line that opens the next capture belongs to no block.
    for body in blocks.values():
        while body and (not body[-1].strip() or set(body[-1].strip()) == {"="}):
            body.pop()
    metadata: Any = {}
    if "Metadata" in blocks:
        raw = _block(blocks["Metadata"], where, "Metadata")
        try:
            metadata = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise ImportFormatError(f"{where}: the Metadata block is not valid JSON ({exc.msg}).") from None
        if not isinstance(metadata, dict):
            raise ImportFormatError(f"{where}: the Metadata block should be a JSON object.")
    record = {
        "captured": captured,
        "praise": praise,
        "user": _block(blocks["User Message"], where, "User Message"),
        "system": _block(blocks["System Prompt"], where, "System Prompt")
        if "System Prompt" in blocks
        else "",
        "response": _block(blocks["Assistant Response"], where, "Assistant Response"),
        "metadata": metadata,
    }
    return record, where


def parse(
    stream: TextIO, name: str, skip: Skip, max_chars: int = DEFAULT_LIMITS.element_chars
) -> Iterator[NewConversation]:
    for start, lines in _sections(stream, name, max_chars):
        record, where = _capture(start, lines, name)
        user, response, system = record["user"], record["response"], record["system"]
        if not user.strip() or not response.strip():
            skip(where, "empty user message or response")
            continue
        metadata = record["metadata"]
        model = metadata.get("model")
        sent = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
        created = timestamp(metadata.get("timestamp")) or timestamp(record["captured"])
        praise = NewFeedback(
            kind="praise", stars=5, text=record["praise"] or None, created_at=timestamp(record["captured"])
        )
        attempt = NewAttempt(
            response,
            sent,
            model if isinstance(model, str) and model else f"import:{FORMAT}",
            created_at=created,
            feedback=[praise],
        )
        yield NewConversation(
            [NewTurn(user, [attempt], created_at=created)],
            external_id=content_id(FORMAT, {k: v for k, v in record.items() if k != "metadata"}),
            title=first_line_title(user),
            source=FORMAT,
            created_at=created,
            label=where,
        )
