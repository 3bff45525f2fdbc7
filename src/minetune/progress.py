"""How a program is doing over time: mean stars, attempts to 5 stars, training examples per method
against the eligibility thresholds, and tokens (with a cost only where one is known).

Series are bucketed per day when the data spans at least ``MIN_DAYS`` days, otherwise per group
of consecutive events (so a program used for one afternoon still shows a trend). Answers the user
wrote themselves (dataset edits) are left out of the quality series: the model did not earn them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from minetune.store import Store, browse
from minetune.train.datasets import MIN_EXAMPLES, RECOMMENDED_EXAMPLES, eligibility_report

MIN_DAYS = 3  # fewer distinct days than this: bucket by count instead
MAX_POINTS = 30  # count buckets are sized so a series has at most this many points
LOCAL_BACKENDS = ("ollama:", "hf:")  # run on the user's own machine: no per-token price


@dataclass(frozen=True)
class Point:
    label: str
    value: float
    count: int  # events in the bucket


@dataclass(frozen=True)
class Series:
    points: list[Point]
    bucket: str  # "day" or "every N <events>"


@dataclass(frozen=True)
class ModelUsage:
    model: str
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    without_usage: int  # attempts whose backend reported no token counts
    cost_usd: float | None  # None: no price known
    cost_note: str


@dataclass
class Metrics:
    program: str
    stars: Series
    attempts_to_5: Series
    tokens: Series
    examples: dict[str, int]
    minimum: int = MIN_EXAMPLES
    recommended: int = RECOMMENDED_EXAMPLES
    eligibility: dict[str, str] = field(default_factory=dict)
    usage: list[ModelUsage] = field(default_factory=list)
    ratings: int = 0

    @property
    def total_cost(self) -> float | None:
        """Total cost in USD, or None when some model's price is unknown."""
        costs = [u.cost_usd for u in self.usage]
        return None if any(c is None for c in costs) else round(sum(c or 0.0 for c in costs), 6)


def bucket(events: Sequence[tuple[datetime, float]], noun: str, total: bool = False) -> Series:
    """Mean (or, with ``total``, sum) of event values per day, or per group of consecutive events
    when they span fewer than ``MIN_DAYS`` days. Events must be in time order."""
    if not events:
        return Series([], "day")
    days = sorted({when.date() for when, _ in events})
    groups: list[tuple[str, list[float]]] = []
    if len(days) >= MIN_DAYS:
        by_day: dict[str, list[float]] = {}
        for when, value in events:
            by_day.setdefault(when.date().isoformat(), []).append(value)
        groups = list(by_day.items())
        label = "day"
    else:
        size = max(1, math.ceil(len(events) / MAX_POINTS))
        for start in range(0, len(events), size):
            chunk = [v for _, v in events[start : start + size]]
            name = f"#{start + 1}" if size == 1 else f"#{start + 1}-{start + len(chunk)}"
            groups.append((name, chunk))
        label = f"every {noun}" if size == 1 else f"every {size} {noun}s"
    points = [
        Point(name, round(sum(vals) if total else sum(vals) / len(vals), 3), len(vals))
        for name, vals in groups
    ]
    return Series(points, label)


def _star_events(store: Store, program: str) -> list[tuple[datetime, float]]:
    """Each model-made attempt's effective rating (latest explicit, else latest other), placed at
    the time of the feedback that set it."""
    explicit: dict[int, tuple[int, datetime, int]] = {}
    other: dict[int, tuple[int, datetime, int]] = {}
    for event in browse.feedback_events(store, program):
        if event.stars is None or event.user_edit:
            continue
        target = explicit if event.kind == "explicit" else other
        target[event.attempt_id] = (event.id, event.created_at, event.stars)
    final = other | explicit
    return [(when, float(stars)) for _, when, stars in sorted(final.values())]


def _usage(store: Store, program: str) -> tuple[list[ModelUsage], list[tuple[datetime, float]]]:
    per_model: dict[str, list[int]] = {}
    events = []
    for row in browse.attempt_usage(store, program):
        counts = per_model.setdefault(row.model_spec, [0, 0, 0, 0])
        counts[0] += 1
        if row.prompt_tokens is None and row.completion_tokens is None:
            counts[3] += 1
            continue
        counts[1] += row.prompt_tokens or 0
        counts[2] += row.completion_tokens or 0
        events.append((row.created_at, float((row.prompt_tokens or 0) + (row.completion_tokens or 0))))
    usage = []
    for model, (attempts, prompt, completion, missing) in sorted(per_model.items()):
        if model.startswith(LOCAL_BACKENDS):
            cost, note = 0.0, "runs locally"
        else:
            cost, note = None, "unknown: no price is known for this model"
        usage.append(ModelUsage(model, attempts, prompt, completion, missing, cost, note))
    return usage, events


def metrics(store: Store, program: str) -> Metrics:
    """Every series of the metrics page for one program of the store's user."""
    stars = _star_events(store, program)
    reached = [(when, float(n)) for when, n in browse.turns_reaching_five(store, program)]
    usage, token_events = _usage(store, program)
    report = eligibility_report(store, program)
    return Metrics(
        program=program,
        stars=bucket(stars, "rating"),
        attempts_to_5=bucket(reached, "turn"),
        tokens=bucket(token_events, "answer", total=True),
        examples={m: e.count for m, e in report.items()},
        eligibility={m: e.summary() for m, e in report.items()},
        usage=usage,
        ratings=len(stars),
    )
