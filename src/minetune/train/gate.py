"""The gate of a run: keep the trained adapter only if it measurably helps and does not forget.

:class:`GateConfig` decides over the scores of the held-out sets before and after training
(:func:`minetune.train.scoring.score`). It is plain data, stored with the job, so a resumed run
(:func:`minetune.train.runs.resume`) is judged by the same gate as the run it continues.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

DEFAULT_MIN_HELD_OUT = 8
DEFAULT_SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    reason: str
    report: dict[str, Any] = field(default_factory=dict)


Gate = Callable[[dict[str, Any], dict[str, Any]], GateDecision]


def sign_test(differences: Sequence[float], threshold: float = 0.0) -> tuple[int, int, float]:
    """The exact one-sided paired sign test of H0 "the median difference is at most ``threshold``".

    Returns (pairs above ``threshold``, pairs not tied with it, p-value): p = P(X ≥ k) for
    X ~ Binomial(n, ½), where k pairs of the n untied ones are above the threshold (ties are
    dropped, as the sign test does). With no untied pairs p is 1.
    """
    above = sum(1 for d in differences if d > threshold)
    below = sum(1 for d in differences if d < threshold)
    n = above + below
    if n == 0:
        return above, n, 1.0
    return above, n, sum(math.comb(n, i) for i in range(above, n + 1)) / 2**n


@dataclass(frozen=True)
class GateConfig:
    """Keep an update only if it improves beyond noise and does not forget.

    * **Enough held-out data** — at least ``min_held_out`` held-out preference pairs (held-out
      accepted answers when there are no pairs), or the update is refused.
    * **Improvement** — per held-out pair i, the change of its preference margin
      dᵢ = marginᵢ(after) − marginᵢ(before), where margin = log p(chosen) − log p(rejected)
      summed over the answer's tokens (without pairs: dᵢ = lossᵢ(before) − lossᵢ(after), the
      fall of the mean token loss of held-out accepted answer i). The mean of dᵢ must exceed
      ``min_improvement``, **and** the exact one-sided paired sign test (:func:`sign_test`) must
      reject "the median dᵢ is at most ``min_improvement``" at level ``significance``: with k of
      n untied pairs above it, p = P(Binomial(n, ½) ≥ k) ≤ ``significance``. With 8 pairs and
      the default 0.05 that means at least 7 of 8 must improve. The sign test assumes nothing
      about the shape of the differences (only that pairs are independent), so one pair with a
      large gain cannot carry an update that most pairs do not support.
    * **Retention** — the token loss on older answers the update did not train on (neither new
      nor replayed) may rise by at most ``retention_tolerance`` (relative). When no such answers
      are left, retention is reported as not measured.
    """

    min_improvement: float = 0.0
    retention_tolerance: float = 0.05
    min_held_out: int = DEFAULT_MIN_HELD_OUT
    significance: float = DEFAULT_SIGNIFICANCE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def problems(self) -> list[str]:
        out = []
        if self.retention_tolerance < 0:
            out.append("the retention tolerance cannot be negative")
        if self.min_held_out < 1:
            out.append("the gate needs at least 1 held-out example (min_held_out)")
        if not 0 < self.significance < 1:
            out.append("the gate's significance level must be between 0 and 1")
        return out

    def __call__(self, before: dict[str, Any], after: dict[str, Any]) -> GateDecision:
        return self.decide(before, after)

    def decide(self, before: dict[str, Any], after: dict[str, Any]) -> GateDecision:
        report: dict[str, Any] = {
            "min_held_out": self.min_held_out,
            "significance": self.significance,
            "test": "one-sided exact paired sign test",
        }
        if before.get("margins") and after.get("margins"):
            unit = "pair"
            diffs = [a - b for b, a in zip(before["margins"], after["margins"], strict=True)]
            report |= {
                "metric": "held-out preference margin",
                "margin_before": before["margin"],
                "margin_after": after["margin"],
            }
        elif before.get("target_losses") and after.get("target_losses"):
            unit = "answer"
            diffs = [b - a for b, a in zip(before["target_losses"], after["target_losses"], strict=True)]
            report |= {
                "metric": "held-out loss on accepted answers",
                "valid_loss_before": before.get("valid_loss"),
                "valid_loss_after": after.get("valid_loss"),
            }
        else:
            return GateDecision(
                False,
                "Refused: there are no held-out rated examples to measure the update by (rate more answers).",
                report,
            )
        improvement = sum(diffs) / len(diffs)
        improved, untied, p_value = sign_test(diffs, self.min_improvement)
        report |= {
            "held_out": len(diffs),
            "improvement": improvement,
            "improved": improved,
            "p_value": p_value,
            "regression": sum(1 for d in diffs if d < 0) / len(diffs),
        }
        retention = None
        if before.get("retain_loss") and after.get("retain_loss") is not None:
            retention = after["retain_loss"] / before["retain_loss"] - 1
            report |= {
                "retain_loss_before": before["retain_loss"],
                "retain_loss_after": after["retain_loss"],
            }
        report["retention"] = retention
        if len(diffs) < self.min_held_out:
            return GateDecision(
                False,
                f"Refused: only {len(diffs)} held-out {unit}(s) to measure the update by, at least "
                f"{self.min_held_out} needed (rate more answers); the previous adapter stays active.",
                report,
            )
        if improvement <= self.min_improvement:
            return GateDecision(
                False,
                f"Refused: the {report['metric']} did not improve ({_signed(improvement)}, "
                f"needed more than {_signed(self.min_improvement)}); the previous adapter stays active.",
                report,
            )
        if p_value > self.significance:
            return GateDecision(
                False,
                f"Refused: the {report['metric']} rose {_signed(improvement)} on average, but only "
                f"{improved} of {untied} held-out {unit}s improved — within noise (one-sided sign test "
                f"p = {p_value:.3g}, needed at most {self.significance:g}); "
                "the previous adapter stays active.",
                report,
            )
        if retention is not None and retention > self.retention_tolerance:
            return GateDecision(
                False,
                f"Refused: the loss on older examples rose {retention:.1%} (tolerance "
                f"{self.retention_tolerance:.1%}); the previous adapter stays active.",
                report,
            )
        kept = (
            f"Kept: {report['metric']} {_signed(improvement)} ({improved} of {untied} held-out {unit}s "
            f"improved, sign test p = {p_value:.3g})"
        )
        if retention is not None:
            kept += f", older-example loss {retention:+.1%}"
        else:
            kept += ", retention not measured (no older answers left out of the update)"
        return GateDecision(True, kept + ".", report)


def _signed(value: float) -> str:
    return f"{value:+.4g}"
