"""Praised exchanges as markdown, in the layout of the original capture system (seed 003)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from minetune.store import Capture

RULE = "=" * 80


def _fence(body: str, info: str = "") -> str:
    """A code block whose fence is longer than any backtick run inside ``body``."""
    longest = run = 0
    for ch in body:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{body}\n{fence}"


def _timestamp(value: datetime) -> str:
    return value.replace(tzinfo=None).isoformat(timespec="seconds")


def render_capture(capture: Capture) -> str:
    """One capture as a markdown section."""
    return "\n".join(
        [
            RULE,
            f"## Example Captured: {_timestamp(capture.captured_at)}",
            f"**Praise:** {capture.praise}",
            RULE,
            "",
            "### User Message (n-3):",
            _fence(capture.user_message),
            "",
            "### System Prompt with Memories (n-2):",
            _fence(capture.system_prompt),
            "",
            "### Assistant Response (n-1):",
            _fence(capture.response),
            "",
            "### Metadata:",
            _fence(json.dumps(capture.metadata, indent=2, ensure_ascii=False), "json"),
            "",
        ]
    )


def write_captures(captures: Iterable[Capture], out: Path) -> int:
    """Write captures to ``out`` (replacing it atomically); returns how many were written."""
    sections = [render_capture(c) for c in captures]
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(sections), encoding="utf-8")
    tmp.replace(out)
    return len(sections)
