"""Blind A/B comparisons: one prompt answered by two arms, shown in random order, judged by the user.

An arm is a program version answered through a model spec: two versions of a program, or the
active version with and without its LoRA adapter (prompt-only). Both arms see the same demos for
the prompt, each rendered into its own version's system prompt. Results are summarised as win
rates with Wilson score intervals (ties count half a win to each arm).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from minetune.config import Settings
from minetune.errors import MinetuneError
from minetune.models.base import ChatModel, Message
from minetune.program import render_messages
from minetune.store import Store
from minetune.store import comparisons as comparisons_db
from minetune.store.schema import Comparison, ProgramVersion

Z_95 = 1.959963984540054  # the standard normal quantile for a two-sided 95% interval


class ComparisonError(MinetuneError):
    """The arms of a comparison cannot be set up as asked."""


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: a version answered through ``model_spec`` (None: the default model)."""

    label: str
    version: ProgramVersion
    model_spec: str | None


def version_arms(store: Store, program: str, first: int, second: int) -> tuple[Arm, Arm]:
    """Two versions of ``program``, each answering with its own model spec."""
    if first == second:
        raise ComparisonError(f"Pick two different versions to compare (both are v{first}).")
    one, two = store.version(program, first), store.version(program, second)
    return Arm(f"v{one.number}", one, one.model_spec), Arm(f"v{two.number}", two, two.model_spec)


def adapter_unavailable(store: Store, program: str) -> str | None:
    """Why prompt-only vs adapter cannot be compared for ``program`` (None when it can)."""
    version = store.active_version(program)
    if not version.adapter:
        return (
            f"The active version of {program!r} (v{version.number}) has no LoRA adapter; "
            "train one on the Training page first."
        )
    if not version.model_spec:
        return f"The active version of {program!r} has an adapter but no model spec to serve it with."
    return None


def adapter_arms(store: Store, program: str) -> tuple[Arm, Arm]:
    """The active version served without its adapter (prompt-only) and with it."""
    from minetune.store.adapters import active_adapter
    from minetune.train.adapters import spec_with_adapter

    problem = adapter_unavailable(store, program)
    if problem:
        raise ComparisonError(problem)
    version = store.active_version(program)
    assert version.model_spec is not None
    adapter = active_adapter(store, program)
    name = f"adapter {adapter.id}" if adapter is not None else "adapter"
    prompt_only = spec_with_adapter(version.model_spec, None)
    return (
        Arm(f"v{version.number} prompt-only", version, prompt_only),
        Arm(f"v{version.number} + {name}", version, version.model_spec),
    )


ModelFor = Callable[[str | None], ChatModel]


def compare(
    store: Store,
    settings: Settings,
    program: str,
    arms: tuple[Arm, Arm],
    prompt: str,
    model_for: ModelFor,
    *,
    turn_id: int | None = None,
    demos: Iterable[Any] | None = None,
    swap: bool | None = None,
) -> Comparison:
    """Answer ``prompt`` with both arms and record an undecided comparison.

    Both arms get the same demos (default: chosen for the prompt by the program's demo index,
    never the prompt's own turn). The arms are shown as A and B in random order (``swap`` fixes
    it). Model errors propagate and nothing is stored.
    """
    if not prompt.strip():
        raise ComparisonError("The prompt is empty; type one or pick a past message.")
    if demos is None:
        from minetune.learn.reoptimize import Learner

        demos, _ = Learner(store, settings, program).demos_for(prompt, [turn_id] if turn_id else [])
    shown = list(arms)
    if swap if swap is not None else secrets.randbelow(2) == 1:
        shown.reverse()
    chosen = list(demos)
    results = []
    for arm in shown:
        messages: list[Message] = render_messages(arm.version, prompt, demos=chosen)
        model = model_for(arm.model_spec)
        completion = model.complete(
            messages, temperature=settings.temperature, max_tokens=settings.max_tokens
        )
        results.append((arm, messages, model.spec, completion.text))
    (arm_a, messages_a, model_a, answer_a), (arm_b, messages_b, model_b, answer_b) = results
    return comparisons_db.create_comparison(
        store,
        program,
        turn_id=turn_id,
        prompt=prompt,
        arm_a=arm_a.label,
        arm_b=arm_b.label,
        version_a_id=arm_a.version.id,
        version_b_id=arm_b.version.id,
        model_a=model_a,
        model_b=model_b,
        messages_a=messages_a,
        messages_b=messages_b,
        answer_a=answer_a,
        answer_b=answer_b,
    )


# -- results -----------------------------------------------------------------------------------------


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a proportion ``successes / n`` (``(0, 1)`` when n is 0).

    With p = successes / n::

        centre    = (p + z²/(2n)) / (1 + z²/n)
        halfwidth = z / (1 + z²/n) * sqrt(p(1 - p)/n + z²/(4n²))
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n ({n}), got {successes}")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class ArmResult:
    """One arm's record in a matchup: wins, losses, ties, win rate and its 95% Wilson interval."""

    arm: str
    wins: int
    losses: int
    ties: int

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def score(self) -> float:
        return self.wins + self.ties / 2

    @property
    def rate(self) -> float:
        return self.score / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.score, self.n)


@dataclass(frozen=True)
class Matchup:
    """Every decided comparison between the same two arms."""

    first: ArmResult
    second: ArmResult

    @property
    def n(self) -> int:
        return self.first.n


def matchups(rows: Iterable[Comparison]) -> list[Matchup]:
    """Win rates per pair of arms over decided comparisons, most-compared pair first."""
    tally: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows:
        if row.winner is None:
            continue
        first, second = sorted((row.arm_a, row.arm_b))
        counts = tally.setdefault((first, second), {first: 0, second: 0, "tie": 0})
        if row.winner == "tie":
            counts["tie"] += 1
        else:
            counts[row.arm_a if row.winner == "a" else row.arm_b] += 1
    result = []
    for (first, second), counts in tally.items():
        ties = counts["tie"]
        result.append(
            Matchup(
                ArmResult(first, counts[first], counts[second], ties),
                ArmResult(second, counts[second], counts[first], ties),
            )
        )
    return sorted(result, key=lambda m: (-m.n, m.first.arm, m.second.arm))
