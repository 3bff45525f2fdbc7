"""Reading big JSON without loading it whole: the elements of a top-level array one at a time,
JSON Lines, and plain lines, each bounded in size.

:func:`iter_array` keeps a window of the text (a read chunk plus the element being decoded) and
hands each complete element to the standard library's C decoder, so memory is bounded by the
largest element, not the file; an element longer than ``max_chars`` refuses the file as soon as
that much of it has been read. (ijson would not bound this by itself: it builds every element,
and every string token, whole.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TextIO

from minetune.io.importers.base import DEFAULT_LIMITS, ImportFormatError, size_text

CHUNK = 1 << 20
MAX_READ = 8 * CHUNK
RAISE_HINT = "pass --max-element-mb to allow more"
_WS = " \t\r\n"


def _utf8(name: str, exc: UnicodeDecodeError) -> ImportFormatError:
    return ImportFormatError(f"{name} is not UTF-8 text (a binary file?): {exc.reason} at byte {exc.start}.")


class _Window:
    def __init__(self, stream: TextIO, name: str, chunk: int) -> None:
        self.stream = stream
        self.name = name
        self.chunk = chunk
        self.buf = ""
        self.pos = 0
        self.base = 0  # characters dropped from the front of buf
        self.eof = False

    def more(self, size: int | None = None) -> bool:
        """Append the next chunk (dropping what was consumed); False at end of input."""
        if self.eof:
            return False
        try:
            data = self.stream.read(size or self.chunk)
        except UnicodeDecodeError as exc:
            raise _utf8(self.name, exc) from exc
        if not data:
            self.eof = True
            return False
        self.base += self.pos
        self.buf = self.buf[self.pos :] + data
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end), without consuming it."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def where(self) -> str:
        return f"character {self.base + self.pos + 1}"


def too_big(name: str, what: str, limit: int) -> ImportFormatError:
    return ImportFormatError(
        f"{name}: {what} is larger than the {size_text(limit)} limit; refusing the file "
        f"(a guard against zip bombs and runaway files; {RAISE_HINT})."
    )


def iter_array(
    stream: TextIO, name: str, chunk: int = CHUNK, max_chars: int = DEFAULT_LIMITS.element_chars
) -> Iterator[Any]:
    """Yield the elements of the JSON array in ``stream`` one at a time.

    Truncated or malformed JSON, or an element longer than ``max_chars``, raises
    :class:`ImportFormatError` naming the element it was in.
    """
    w = _Window(stream, name, chunk)
    decoder = json.JSONDecoder()
    first = w.peek()
    if first != "[":
        found = "nothing (the file is empty)" if first == "" else repr(first)
        raise ImportFormatError(f"{name}: expected a JSON array ('['), found {found}.")
    w.pos += 1
    index = 0
    while True:
        ch = w.peek()
        if ch == "]":
            w.pos += 1
            break
        if ch == "":
            raise ImportFormatError(f"{name} is truncated: the JSON array ends after {index} element(s).")
        if index:
            if ch != ",":
                raise ImportFormatError(f"{name}: expected ',' or ']' after element {index} at {w.where()}.")
            w.pos += 1
            if w.peek() == "":
                raise ImportFormatError(f"{name} is truncated after element {index}.")
        index += 1
        yield _decode(w, decoder, index, max_chars)
    if w.peek() != "":
        raise ImportFormatError(f"{name}: unexpected data after the JSON array at {w.where()}.")


def _decode(w: _Window, decoder: json.JSONDecoder, index: int, max_chars: int) -> Any:
    read = w.chunk
    while True:
        try:
            value, end = decoder.raw_decode(w.buf, w.pos)
        except json.JSONDecodeError as exc:
            at_edge = exc.pos >= len(w.buf) - 16 or exc.msg.startswith("Unterminated string")
            if at_edge and len(w.buf) - w.pos > max_chars:
                raise too_big(w.name, f"element {index} of the JSON array", max_chars) from None
            if at_edge and w.more(read):
                read = min(read * 2, MAX_READ)  # an element bigger than a chunk: grow geometrically
                continue
            if w.eof and at_edge:
                raise ImportFormatError(
                    f"{w.name} is truncated: element {index} of the JSON array is incomplete."
                ) from None
            raise ImportFormatError(
                f"{w.name}: invalid JSON in element {index} of the array "
                f"at character {w.base + exc.pos + 1}: {exc.msg}."
            ) from None
        except (ValueError, RecursionError) as exc:  # a number over Python's digit limit; deep nesting
            raise ImportFormatError(
                f"{w.name}: element {index} of the JSON array cannot be read: {exc}."
            ) from None
        if end - w.pos > max_chars:
            raise too_big(w.name, f"element {index} of the JSON array", max_chars)
        if end == len(w.buf) and not isinstance(value, dict | list) and w.more(read):
            continue  # a bare number may continue in the next chunk
        w.pos = end
        return value


def read_lines(stream: TextIO, name: str, max_chars: int = DEFAULT_LIMITS.element_chars) -> Iterator[str]:
    """The lines of ``stream`` (line ends kept), refusing one longer than ``max_chars``."""
    number = 0
    try:
        while line := stream.readline(max_chars + 1):
            number += 1
            if len(line) > max_chars:
                raise too_big(name, f"line {number}", max_chars)
            yield line
    except UnicodeDecodeError as exc:
        raise _utf8(name, exc) from exc


def iter_lines(
    stream: TextIO, name: str, max_chars: int = DEFAULT_LIMITS.element_chars
) -> Iterator[tuple[str, Any]]:
    """Yield ("line N", value) for each non-blank line of a JSON Lines stream."""
    for number, line in enumerate(read_lines(stream, name, max_chars), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            truncated = exc.pos >= len(line.rstrip()) - 1 or exc.msg.startswith("Unterminated")
            what = "truncated or invalid JSON" if truncated else "invalid JSON"
            raise ImportFormatError(
                f"{name} line {number}: {what} ({exc.msg}); JSON Lines needs one complete object per line."
            ) from None
        except (ValueError, RecursionError) as exc:
            raise ImportFormatError(f"{name} line {number} cannot be read: {exc}.") from None
        yield f"line {number}", value
