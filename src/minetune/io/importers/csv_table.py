"""CSV (or TSV) with a header row: prompt and response columns, optionally rating and critique.

Header names are matched case-insensitively with a few aliases (see ``COLUMNS``). A rating is
1-5 (``4``, ``4.0``, ``4/5``, ``★★★★``) or a thumb (``up``/``down``, 👍/👎 → 5/1); an empty cell
leaves the answer unrated. Rows without a rating column are imported unrated.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import TextIO

from minetune.io.importers.base import DEFAULT_LIMITS, ImportFormatError, Skip, content_id, first_line_title
from minetune.io.importers.jsonstream import read_lines
from minetune.store.imports import NewAttempt, NewConversation, NewFeedback, NewTurn

FORMAT = "csv"
COLUMNS = {
    "prompt": ("prompt", "user", "user_message", "question", "instruction", "input", "query", "message"),
    "response": ("response", "assistant", "answer", "output", "completion", "reply", "assistant_response"),
    "rating": ("rating", "stars", "score", "rate", "thumbs"),
    "critique": ("critique", "feedback", "comment", "comments", "note", "notes"),
    "system": ("system", "system_prompt", "instructions"),
    "model": ("model", "model_spec"),
}
_THUMBS = {"up": 5, "thumbsup": 5, "👍": 5, "good": 5, "down": 1, "thumbsdown": 1, "👎": 1, "bad": 1}


def _key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lstrip("\ufeff").lower())


def columns(header: list[str]) -> dict[str, int]:
    """Which column index holds each field (only those present)."""
    keys = [_key(h) for h in header]
    found: dict[str, int] = {}
    for field, aliases in COLUMNS.items():
        for alias in aliases:
            if alias in keys:
                found[field] = keys.index(alias)
                break
    return found


def delimiter(first_line: str, name: str) -> str:
    if name.lower().endswith(".tsv"):
        return "\t"
    counts = {d: first_line.count(d) for d in (",", "\t", ";")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def matches(first_line: str, name: str) -> bool:
    header = next(csv.reader([first_line], delimiter=delimiter(first_line, name)), [])
    found = columns(header)
    return "prompt" in found and "response" in found and len(header) >= 2


def parse_rating(value: str, where: str) -> int | None:
    text = value.strip()
    if not text:
        return None
    if set(text) <= {"★", "☆"}:
        stars = text.count("★")
    elif _key(text).replace("_", "") in _THUMBS:
        return _THUMBS[_key(text).replace("_", "")]
    else:
        match = re.fullmatch(r"(\d+(?:\.0+)?)(?:\s*/\s*5)?", text)
        stars = int(float(match.group(1))) if match else 0
    if not 1 <= stars <= 5:
        raise ImportFormatError(f"{where}: rating {value!r} is not 1-5 stars or a thumbs up/down.")
    return stars


def parse(
    stream: TextIO, name: str, skip: Skip, max_chars: int = DEFAULT_LIMITS.element_chars
) -> Iterator[NewConversation]:
    """Rows as conversations; lines are read bounded (``max_chars``), fields by the csv module's limit."""
    lines = read_lines(stream, name, max_chars)
    first = next(lines, "")
    sep = delimiter(first, name)
    header = next(csv.reader([first], delimiter=sep), [])
    found = columns(header)
    if "prompt" not in found or "response" not in found:
        raise ImportFormatError(
            f"{name}: a CSV import needs prompt and response columns; the header has: {', '.join(header)}."
        )
    reader = csv.reader(lines, delimiter=sep)
    try:
        for number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            where = f"{name} row {number}"

            def cell(field: str, row: list[str] = row) -> str:
                index = found.get(field)
                return row[index] if index is not None and index < len(row) else ""

            prompt, response = cell("prompt"), cell("response")
            if not prompt.strip() or not response.strip():
                skip(where, "empty prompt or response")
                continue
            stars = parse_rating(cell("rating"), where)
            critique = cell("critique").strip() or None
            system = cell("system")
            sent = ([{"role": "system", "content": system}] if system.strip() else []) + [
                {"role": "user", "content": prompt}
            ]
            feedback = [NewFeedback(stars=stars, critique=critique)] if stars or critique else []
            attempt = NewAttempt(
                response, sent, cell("model").strip() or f"import:{FORMAT}", feedback=feedback
            )
            yield NewConversation(
                [NewTurn(prompt, [attempt])],
                external_id=content_id(FORMAT, [prompt, response, system, stars, critique]),
                title=first_line_title(prompt),
                source=FORMAT,
                label=where,
            )
    except csv.Error as exc:
        raise ImportFormatError(f"{name} row {reader.line_num}: malformed CSV ({exc}).") from None
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{name} is not UTF-8 text (a binary file?): {exc.reason}.") from None
