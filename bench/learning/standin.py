"""A steerable stand-in chat model for the prompt path (an in-process ``ChatModel``).

What it does with the messages minetune renders, and nothing else:

* **reflection calls** (minetune's lesson prompt): reads the critique, writes ONE rule for the
  first wish it understands (:data:`styles.RULES`), superseding rules in force on the same axis;
  ``{"rule": null}`` when it understands none;
* **rules** ("Lessons learned ..." lines of the system prompt): each understood rule fixes its axis,
  obeyed with probability ``follow`` (0.95);
* **demos** ("Examples of answers your user rated highly"): on each axis not fixed by a rule it
  imitates the style most of the shown answers have (ties: the first one) with probability
  ``imitate`` (0.85);
* **retries**: a critique folded into the retry request fixes the axes it names (``follow``); the
  free axes are drawn at random (no imitation: the demos led to the rejected answer), and the
  style of every earlier rejected attempt of the turn is avoided by re-drawing them (up to 20
  draws), as a model asked to "try again" changes something;
* everything else is drawn uniformly at random. Messages it does not know (e.g. praise) get
  "Glad it helped!".
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Generator

from learning import styles
from minetune.learn.lessons import REFLECTION_MARKER
from minetune.models.base import Completion, CompletionStream, Message

LESSONS_HEADER = "Lessons learned from your user's feedback:"
DEMOS_HEADER = "Examples of answers your user rated highly:"


class StandInModel:
    """See the module docstring. ``calls`` counts generate calls (answers and reflections)."""

    spec = "bench:stand-in"

    def __init__(self, seed: int, follow: float = 0.95, imitate: float = 0.85) -> None:
        self.rng = random.Random(seed)
        self.follow = follow
        self.imitate = imitate
        self.calls = 0

    # -- ChatModel ----------------------------------------------------------------------------

    def complete(
        self, messages: list[Message], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> Completion:
        self.calls += 1
        text = self._answer(messages)
        return Completion(text, self.spec, sum(len(m["content"]) // 4 for m in messages), len(text) // 4)

    def stream(
        self, messages: list[Message], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> CompletionStream:
        completion = self.complete(messages)

        def deltas() -> Generator[str, None, Completion]:
            yield completion.text
            return completion

        return CompletionStream(deltas())

    # -- behaviour ----------------------------------------------------------------------------

    def _answer(self, messages: list[Message]) -> str:
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        if system.startswith(REFLECTION_MARKER):
            return self._reflect(messages[-1]["content"])
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        # The question is the last user message that is not a retry request.
        asked = [i for i in users if not messages[i]["content"].startswith("Your previous answer was")]
        question = styles.find_question(messages[asked[-1]]["content"]) if asked else None
        if question is None:
            return "Glad it helped!"
        tail = messages[asked[-1] + 1 :]
        return styles.render(question, self._style(question, system, tail))

    def _style(self, question: styles.Question, system: str, tail: list[Message]) -> styles.Style:
        axes = styles.axes_of(question.domain)
        fixed: styles.Style = {}
        for axis, value in _rules(system):
            if axis in axes and self.rng.random() < self.follow:
                fixed[axis] = value
        for message in tail:  # retry requests: the newest critique of an axis wins
            critique = re.search(r"^Critique: (.*)$", message["content"], re.MULTILINE)
            if message["role"] == "user" and critique:
                for axis, value in styles.understood(critique.group(1)):
                    if axis in axes and self.rng.random() < self.follow:
                        fixed[axis] = value
        rejected = [styles.parse_style(m["content"]) for m in tail if m["role"] == "assistant"]
        imitated = _demo_styles(system)
        for _ in range(20):
            style = dict(fixed)
            for axis in axes:
                if axis in style:
                    continue
                if axis in imitated and not rejected and self.rng.random() < self.imitate:
                    style[axis] = imitated[axis]
                else:
                    style[axis] = self.rng.choice(styles.AXES[axis])
            if not any(all(r.get(a) == style[a] for a in axes) for r in rejected):
                break
        return style

    def _reflect(self, prompt: str) -> str:
        critique = re.search(r"^Critique: (.*)$", prompt, re.MULTILINE)
        wishes = styles.understood(critique.group(1)) if critique else []
        if not wishes:
            return json.dumps({"rule": None, "supersedes": []})
        axis, value = wishes[0]
        in_force = re.findall(r"^\[(\d+)\] (.*)$", prompt.split("Rules in force:", 1)[-1], re.MULTILINE)
        supersedes = [
            int(rule_id)
            for rule_id, text in in_force
            if any(a == axis for a, _ in styles.understood(text)) and text != styles.RULES[(axis, value)]
        ]
        return json.dumps({"rule": styles.RULES[(axis, value)], "supersedes": supersedes})


def _rules(system: str) -> list[tuple[str, str]]:
    if LESSONS_HEADER not in system:
        return []
    block = system.split(LESSONS_HEADER, 1)[1].split(DEMOS_HEADER, 1)[0]
    wishes = []
    for line in block.splitlines():
        if line.startswith("- "):
            wishes += styles.understood(line[2:])
    return wishes


def _demo_styles(system: str) -> styles.Style:
    """Per axis, the style most demo answers in the system prompt show (ties: the first shown)."""
    if DEMOS_HEADER not in system:
        return {}
    block = system.split(DEMOS_HEADER, 1)[1]
    answers = [
        part.split("\nAssistant: ", 1)[1] for part in block.split("\n\nUser: ") if "\nAssistant: " in part
    ]
    shown = [styles.parse_style(a) for a in answers]
    chosen: styles.Style = {}
    for axis in styles.AXES:
        values = [s[axis] for s in shown if axis in s]
        if values:
            counts = Counter(values)
            best = max(counts.values())
            chosen[axis] = next(v for v in values if counts[v] == best)
    return chosen
