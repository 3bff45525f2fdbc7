"""Lessons: critiques distilled into short rules by a reflection call to an LLM.

Each rule links to the feedback it came from. The reflection call sees the active rules, so a
newer critique that contradicts an older rule supersedes it. Every change publishes the active
rules as a new program version (see :meth:`minetune.store.Store.change_lessons`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from minetune.errors import MinetuneError
from minetune.models.base import ChatModel, Message
from minetune.store import Store
from minetune.store.schema import Lesson, ProgramVersion

MAX_RULE_CHARS = 240

# The first words of the reflection prompt; the test fake recognises reflection calls by them.
REFLECTION_MARKER = "You distill a user's feedback into rules for an AI assistant."

REFLECTION_PROMPT = (
    REFLECTION_MARKER
    + """
Given the user's message, the assistant's answer, the user's rating and critique, and the rules
already in force, write ONE short, general, imperative rule (at most 25 words) that would have
avoided the criticism next time. Do not mention this specific conversation. If the critique
contradicts an existing rule, list that rule's id under "supersedes". If the critique teaches
nothing general, use null for "rule".
Answer with JSON only: {"rule": "..." or null, "supersedes": [ids]}"""
)


class ReflectionError(MinetuneError):
    """The reflection call failed or its answer could not be used."""


@dataclass(frozen=True)
class Reflection:
    rule: str | None
    supersedes: list[int] = field(default_factory=list)


def reflection_messages(
    message: str, response: str, stars: int | None, critique: str, rules: list[Lesson]
) -> list[Message]:
    existing = "\n".join(f"[{r.id}] {r.text}" for r in rules) or "(none)"
    rating = f"{stars}/5" if stars is not None else "not rated"
    user = (
        f"User message:\n{message}\n\nAssistant answer:\n{response}\n\n"
        f"Rating: {rating}\nCritique: {critique}\n\nRules in force:\n{existing}"
    )
    return [{"role": "system", "content": REFLECTION_PROMPT}, {"role": "user", "content": user}]


def parse_reflection(text: str, known_ids: set[int]) -> Reflection:
    """Read the model's JSON answer; anything unusable raises :class:`ReflectionError`."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match is None:
        raise ReflectionError(f"The reflection model did not answer with JSON: {text[:120]!r}")
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise ReflectionError(f"The reflection model's JSON is invalid: {exc}") from exc
    if not isinstance(data, dict) or "rule" not in data:
        raise ReflectionError("The reflection model's answer has no 'rule' field.")
    rule = data["rule"]
    if rule is not None and not isinstance(rule, str):
        raise ReflectionError("The reflection model's 'rule' is not text.")
    rule = " ".join(rule.split()) if rule else None
    if rule and len(rule) > MAX_RULE_CHARS:
        raise ReflectionError(f"The reflection model's rule is too long ({len(rule)} characters).")
    supersedes = data.get("supersedes") or []
    if not isinstance(supersedes, list) or not all(isinstance(i, int) for i in supersedes):
        raise ReflectionError("The reflection model's 'supersedes' is not a list of rule ids.")
    return Reflection(rule, [i for i in supersedes if i in known_ids])


def learn_from_critique(
    store: Store,
    program: str,
    model: ChatModel,
    feedback_id: int,
    message: str,
    response: str,
    stars: int | None,
    critique: str,
) -> tuple[ProgramVersion | None, Reflection]:
    """Distil one critique into a rule and publish it as a new version (None if nothing was learned).

    Errors leave the active version unchanged.
    """
    rules = store.lessons(program)
    completion = model.complete(
        reflection_messages(message, response, stars, critique, rules), temperature=0.0, max_tokens=200
    )
    reflection = parse_reflection(completion.text, {r.id for r in rules})
    if reflection.rule is None:
        return None, reflection
    if any(r.text.casefold() == reflection.rule.casefold() for r in rules):
        return None, reflection
    version, _ = store.change_lessons(
        program,
        add=[{"text": reflection.rule, "origin": "reflection", "feedback_id": feedback_id}],
        supersede={old: 0 for old in reflection.supersedes},
        note=f"lesson from feedback {feedback_id}",
        sources={"feedback_id": feedback_id},
    )
    return version, reflection
