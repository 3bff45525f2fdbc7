"""Programs: rendering a version into the exact messages sent to a model, and comparing versions.

A version holds instructions, learned lessons, a demo policy, a model spec and (later) an
adapter. Rendering is deterministic: the same version, history and message give the same prompt.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from minetune.models.base import Message


class VersionLike(Protocol):
    """What rendering needs from a program version (a store row or any lookalike)."""

    number: int
    instructions: str
    lessons: list[Any]
    demo_policy: dict[str, Any]
    model_spec: str | None
    adapter: str | None


@dataclass(frozen=True)
class PriorAttempt:
    """An earlier attempt in the same turn and the feedback it got, folded into a retry."""

    response: str
    stars: int | None
    critique: str | None


def lesson_texts(version: VersionLike) -> list[str]:
    """Active lesson rules as plain strings (lessons may be stored as strings or dicts with 'text')."""
    texts = []
    for lesson in version.lessons or []:
        if isinstance(lesson, str):
            texts.append(lesson)
        elif isinstance(lesson, dict) and lesson.get("active", True) and lesson.get("text"):
            texts.append(str(lesson["text"]))
    return texts


class DemoLike(Protocol):
    """A demo: a user message and the response the user rated highly."""

    @property
    def user(self) -> str: ...

    @property
    def response(self) -> str: ...


def render_system_prompt(version: VersionLike, demos: Sequence[DemoLike] = ()) -> str:
    """Instructions, learned lessons and demos (pinned ones first), exactly as the model sees them."""
    parts = [version.instructions.strip()]
    lessons = lesson_texts(version)
    if lessons:
        parts.append("Lessons learned from your user's feedback:\n" + "\n".join(f"- {t}" for t in lessons))
    pinned = [(d["user"], d["response"]) for d in (version.demo_policy or {}).get("pinned", [])]
    examples = pinned + [(d.user, d.response) for d in demos if (d.user, d.response) not in pinned]
    if examples:
        shown = "\n\n".join(f"User: {u}\nAssistant: {r}" for u, r in examples)
        parts.append("Examples of answers your user rated highly:\n\n" + shown)
    return "\n\n".join(p for p in parts if p)


def retry_request(prior: PriorAttempt) -> str:
    """The user-side message that folds a rating and critique into the next attempt."""
    rating = f"rated {prior.stars}/5" if prior.stars is not None else "not good enough"
    lines = [f"Your previous answer was {rating}."]
    if prior.critique:
        lines.append(f"Critique: {prior.critique}")
    lines.append("Please answer my previous message again, taking this feedback into account.")
    return "\n".join(lines)


def render_messages(
    version: VersionLike,
    message: str,
    history: Sequence[tuple[str, str]] = (),
    prior_attempts: Sequence[PriorAttempt] = (),
    demos: Sequence[DemoLike] = (),
) -> list[Message]:
    """The full message list for one attempt: system prompt, conversation so far, the message,
    and for a retry each earlier attempt followed by its feedback."""
    messages: list[Message] = []
    system = render_system_prompt(version, demos)
    if system:
        messages.append({"role": "system", "content": system})
    for user_text, assistant_text in history:
        messages.append({"role": "user", "content": user_text})
        messages.append({"role": "assistant", "content": assistant_text})
    messages.append({"role": "user", "content": message})
    for prior in prior_attempts:
        messages.append({"role": "assistant", "content": prior.response})
        messages.append({"role": "user", "content": retry_request(prior)})
    return messages


def version_fields(version: VersionLike) -> dict[str, Any]:
    """The fields that define a version's behaviour, for display and diffing."""
    return {
        "instructions": version.instructions,
        "lessons": lesson_texts(version),
        "demo_policy": version.demo_policy or {},
        "model_spec": version.model_spec,
        "adapter": version.adapter,
    }


def diff_versions(old: VersionLike, new: VersionLike) -> str:
    """A unified diff of two versions' fields ('' when they behave the same)."""

    def lines(v: VersionLike) -> list[str]:
        fields = version_fields(v)
        out = ["instructions:", *fields["instructions"].splitlines()]
        out += ["lessons:", *(f"- {t}" for t in fields["lessons"])]
        out.append("demo_policy: " + json.dumps(fields["demo_policy"], sort_keys=True))
        out.append(f"model_spec: {fields['model_spec'] or '(default)'}")
        out.append(f"adapter: {fields['adapter'] or '(none)'}")
        return out

    diff = difflib.unified_diff(
        lines(old), lines(new), fromfile=f"v{old.number}", tofile=f"v{new.number}", lineterm=""
    )
    return "\n".join(diff)
