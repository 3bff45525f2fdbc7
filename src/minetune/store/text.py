"""Text that makes no sense with control characters is refused before it is stored.

Names (users, programs) take no control character at all; lesson (rule) text may hold line
breaks and tabs but no other control character (NUL included). Conversation titles are derived
from messages, so their control characters (line breaks too) become spaces instead of refusing the
message. Messages and answers themselves are not checked here: they are the user's own text.

The checks are attribute events on the mapped columns, so every path that sets them — the
repository, imports, bundles, the web app — goes through them.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from sqlalchemy import event

from minetune.errors import StoreError
from minetune.store.schema import Conversation, Lesson, Program, User

_LINE_BREAKS = frozenset("\n\r\t")


def _controls(text: str, allowed: frozenset[str] = frozenset()) -> list[str]:
    return [c for c in text if c not in allowed and unicodedata.category(c) == "Cc"]


def has_controls(text: str) -> bool:
    """Whether ``text`` holds any control character (no stored name does)."""
    return bool(_controls(text))


def _shown(chars: list[str]) -> str:
    return ", ".join(sorted({f"U+{ord(c):04X}" for c in chars}))


def check_name(value: str, what: str) -> str:
    """``value`` unchanged, or :class:`StoreError` when it holds a control character."""
    bad = _controls(value)
    if bad:
        raise StoreError(f"{what} may not contain control characters ({_shown(bad)}).")
    return value


def check_lesson(value: str) -> str:
    """Rule text may hold line breaks and tabs, no other control character (NUL included)."""
    bad = _controls(value, _LINE_BREAKS)
    if bad:
        raise StoreError(f"A rule may not contain control characters ({_shown(bad)}); use plain text.")
    return value


def clean_title(value: str) -> str:
    """A title on one line: control characters (line breaks included) become spaces."""
    if not _controls(value):
        return value
    return re.sub(r"\s+", " ", "".join(" " if unicodedata.category(c) == "Cc" else c for c in value)).strip()


def _checked(check: Any) -> Any:
    def listener(target: Any, value: Any, oldvalue: Any, initiator: Any) -> Any:
        return check(value) if isinstance(value, str) else value

    return listener


event.listen(User.name, "set", _checked(lambda v: check_name(v, "A user name")), retval=True)
event.listen(Program.name, "set", _checked(lambda v: check_name(v, "A program name")), retval=True)
event.listen(Lesson.text, "set", _checked(check_lesson), retval=True)
event.listen(Conversation.title, "set", _checked(clean_title), retval=True)
