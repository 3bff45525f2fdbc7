"""Choosing what a run trains on and is measured by: a :class:`Selection` of a program's examples,
the method (``auto``), held-out sets, and reproducible samples."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.train.config import TrainingError
from minetune.train.datasets import DEFAULT_SEED, DEFAULT_THRESHOLD, MIN_EXAMPLES, build_dataset
from minetune.train.rows import target_text
from minetune.train.scoring import EvalSets

AUTO_ORDER = ("dpo", "sft", "kto")


@dataclass(frozen=True)
class Selection:
    """Which examples of a program to train on (all by default)."""

    since: datetime | None = None
    until: datetime | None = None
    conversations: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "conversations": list(self.conversations),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Selection:
        data = data or {}
        since, until = data.get("since"), data.get("until")
        return cls(
            datetime.fromisoformat(since) if since else None,
            datetime.fromisoformat(until) if until else None,
            tuple(int(c) for c in data.get("conversations") or ()),
        )

    def empty(self) -> bool:
        return self.since is None and self.until is None and not self.conversations

    def apply(self, store: Store, examples: list[Any]) -> list[Any]:
        if self.empty():
            return examples
        info = adapters_db.turn_info(store, [ex.turn_id for ex in examples])
        kept = []
        for ex in examples:
            meta = info.get(ex.turn_id)
            if meta is None:
                continue
            if self.conversations and meta.conversation_id not in self.conversations:
                continue
            if self.since is not None and meta.created_at < _aware(self.since):
                continue
            if self.until is not None and meta.created_at >= _aware(self.until):
                continue
            kept.append(ex)
        return kept


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass
class Examples:
    """A method's examples for a program, split, after a selection."""

    method: str
    train: list[Any]
    valid: list[Any]


def examples_for(
    store: Store,
    program: str,
    method: str,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    seed: int = DEFAULT_SEED,
    selection: Selection | None = None,
) -> Examples:
    dataset = build_dataset(store, program, method, threshold=threshold, seed=seed)
    selection = selection or Selection()
    return Examples(method, selection.apply(store, dataset.train), selection.apply(store, dataset.valid))


def choose_method(
    store: Store, program: str, *, threshold: int = DEFAULT_THRESHOLD, minimum: int = MIN_EXAMPLES
) -> str:
    """``auto``: DPO when there are enough preference pairs, else SFT, else KTO."""
    from minetune.train.datasets import eligibility_report

    report = eligibility_report(store, program, threshold)
    for method in AUTO_ORDER:
        elig = report[method]
        if elig.count >= minimum and (minimum < MIN_EXAMPLES or elig.eligible):
            return method
    raise TrainingError(
        "Not enough rated examples to train on yet. " + " ".join(report[m].summary() for m in AUTO_ORDER)
    )


def too_few(method: str, examples: Sequence[Any], minimum: int, threshold: int) -> TrainingError:
    from minetune.train.datasets import eligibility

    text = f"Too few {method.upper()} examples to train on: {len(examples)}, at least {minimum} needed."
    if minimum == MIN_EXAMPLES:
        text += " " + eligibility(method, examples, threshold).summary()
    return TrainingError(text)


def default_eval_sets(
    store: Store,
    program: str,
    method: str,
    valid: list[Any],
    threshold: int,
    seed: int,
    *,
    exclude: Collection[int] = (),
) -> EvalSets:
    """Held-out sets for a run: the validation split's preference pairs, and its answers, leaving
    out every example that shares an attempt with ``exclude`` (what the run, or the adapter it
    continues, trains on), so nothing trained on is measured as held out."""
    pairs = (
        valid
        if method == "dpo"
        else examples_for(store, program, "dpo", threshold=threshold, seed=seed).valid
    )
    seen = set(exclude)
    return EvalSets(
        pairs=[ex for ex in pairs if seen.isdisjoint(ex.attempt_ids)],
        targets=[ex for ex in valid if target_text(ex) is not None and seen.isdisjoint(ex.attempt_ids)],
    )


def sample(items: Sequence[Any], count: int, seed: int) -> list[Any]:
    """A reproducible sample of ``count`` items (all when there are fewer), in their original order."""
    if count >= len(items):
        return list(items)
    picked = sorted(random.Random(seed).sample(range(len(items)), count))
    return [items[i] for i in picked]
