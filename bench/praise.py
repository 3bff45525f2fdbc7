"""Precision and recall of praise detection on the labelled set, per kind and overall.

The set is ``tests/data/praise_labelled.jsonl``: one message a line, ``{"text", "praise", "kind"}``
(and ``"lang"`` for messages in French, Spanish or German), labelled by what a person means.

    .venv/bin/python bench/praise.py [--set PATH] [--errors]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from minetune.feedback import PraiseDetector

DEFAULT_SET = Path(__file__).resolve().parent.parent / "tests" / "data" / "praise_labelled.jsonl"


@dataclass
class Score:
    """Confusion counts for one group of messages."""

    n: int = 0
    praise: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, label: bool, predicted: bool) -> None:
        self.n += 1
        self.praise += label
        self.tp += label and predicted
        self.fp += predicted and not label
        self.fn += label and not predicted

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / self.praise if self.praise else None

    @property
    def accuracy(self) -> float:
        return (self.n - self.fp - self.fn) / self.n if self.n else 0.0


def load(path: Path = DEFAULT_SET) -> list[dict[str, object]]:
    """The labelled rows of ``path``."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def score(rows: Iterable[dict[str, object]], detector: PraiseDetector) -> tuple[Score, dict[str, Score]]:
    """Overall and per-kind scores of ``detector`` on ``rows``."""
    overall, kinds = Score(), dict[str, Score]()
    for row in rows:
        predicted = detector.is_praise(str(row["text"]))
        overall.add(bool(row["praise"]), predicted)
        kinds.setdefault(str(row["kind"]), Score()).add(bool(row["praise"]), predicted)
    return overall, kinds


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def table(overall: Score, kinds: dict[str, Score]) -> str:
    """A markdown table: one line per kind, then the overall line."""
    lines = [
        "| kind | messages | praise | TP | FP | FN | precision | recall | accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in [*sorted(kinds.items()), ("**all**", overall)]:
        lines.append(
            f"| {name} | {s.n} | {s.praise} | {s.tp} | {s.fp} | {s.fn} | "
            f"{_fmt(s.precision)} | {_fmt(s.recall)} | {s.accuracy:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, help="labelled JSONL file")
    parser.add_argument("--errors", action="store_true", help="also list every misclassified message")
    args = parser.parse_args()
    rows = load(args.set)
    detector = PraiseDetector()
    overall, kinds = score(rows, detector)
    start = time.perf_counter()
    repeats = 20
    for _ in range(repeats):
        for row in rows:
            detector.is_praise(str(row["text"]))
    per_message_us = (time.perf_counter() - start) / (repeats * len(rows)) * 1e6
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    print(f"{when}, {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{len(rows)} messages from {args.set.name}; {per_message_us:.0f} µs per message\n")
    print(table(overall, kinds))
    if args.errors:
        print("\nmisclassified (label → detected phrase):")
        for row in rows:
            found = detector.detect(str(row["text"]))
            if (found is not None) != bool(row["praise"]):
                label = "praise" if row["praise"] else "not praise"
                print(f"  [{row['kind']}] {row['text']!r}: {label} → {found!r}")


if __name__ == "__main__":
    main()
