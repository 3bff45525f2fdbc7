"""Offline evaluation: replay held-out prompts through two candidates and score their answers.

A candidate is a program version answered by a chat model (two versions, or one version with and
without its LoRA adapter). For every held-out item — a prompt the user rated, its conversation
history, the user's accepted answer when there is one — both candidates answer through the
:class:`~minetune.models.base.ChatModel` protocol, with the same demos, each rendered into its
own version's prompt. The answers are then scored two ways:

* **judge**: the personal judge's predicted stars (:mod:`minetune.learn.judge`) for each answer;
  the higher one wins, a difference under :data:`JUDGE_TIE` stars is a tie;
* **reference**: against the user's accepted answer, where the item has one — an exact match
  (whitespace- and case-insensitive) beats a non-match, else the higher fuzzy similarity wins
  (:func:`fuzzy_ratio`, 0-1), a difference under :data:`FUZZY_TIE` is a tie.

The headline result (:attr:`EvalReport.basis`) is the judge's when it is ready, else the
reference's. Win rates count ties as half a win and come with a 95% Wilson score interval
(:func:`minetune.learn.abtest.wilson_interval`). :func:`evaluate` returns an :class:`EvalReport`;
it stores nothing (the core does, :mod:`minetune.app.evaluate`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from minetune.learn.abtest import ArmResult
from minetune.models.base import ChatModel
from minetune.program import DemoLike, VersionLike, render_messages

JUDGE_TIE = 0.05  # predicted stars closer than this are a tie
FUZZY_TIE = 0.02  # fuzzy similarities closer than this are a tie
FUZZY_MAX_CHARS = 4000  # the difflib fallback is quadratic: longer texts are compared clipped
BASES = ("judge", "reference")

JudgeScores = Callable[[str, list[str]], list[float]]
"""(prompt, answers) -> predicted stars for each answer (the judge, when it is ready)."""
DemosFor = Callable[["EvalItem"], Sequence[DemoLike]]
"""The demos both candidates are shown for an item (never the item's own turn)."""


@dataclass(frozen=True)
class EvalItem:
    """One held-out prompt: what the user asked (after ``history``), how they rated the answers
    they got (best stars), and their accepted answer when there is one."""

    turn_id: int
    prompt: str
    history: tuple[tuple[str, str], ...] = ()
    reference: str | None = None
    user_stars: int | None = None


@dataclass(frozen=True)
class Candidate:
    """One side of the evaluation: a version answered by ``model``."""

    label: str
    version: VersionLike
    model: ChatModel


@dataclass(frozen=True)
class ItemResult:
    """Both answers to one item, their scores, and the winner per basis (``a``, ``b``, ``tie``;
    None where that basis could not score the item)."""

    turn_id: int
    prompt: str
    reference: str | None
    user_stars: int | None
    answer_a: str
    answer_b: str
    judge_a: float | None = None
    judge_b: float | None = None
    exact_a: bool | None = None
    exact_b: bool | None = None
    fuzzy_a: float | None = None
    fuzzy_b: float | None = None
    judge_winner: str | None = None
    reference_winner: str | None = None

    def winner(self, basis: str) -> str | None:
        return self.judge_winner if basis == "judge" else self.reference_winner


@dataclass(frozen=True)
class Tally:
    """B's record against A on one basis: wins, losses and ties, win rate and its interval."""

    basis: str
    wins: int
    losses: int
    ties: int

    @property
    def _arm(self) -> ArmResult:
        return ArmResult("b", self.wins, self.losses, self.ties)

    @property
    def n(self) -> int:
        return self._arm.n

    @property
    def win_rate(self) -> float | None:
        """B's wins plus half its ties over the items scored (None when none was)."""
        return self._arm.rate if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        """95% Wilson score interval of :attr:`win_rate` ((0, 1) when nothing was scored)."""
        return self._arm.interval

    def as_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return asdict(self) | {"n": self.n, "win_rate": self.win_rate, "low": low, "high": high}


@dataclass(frozen=True)
class EvalReport:
    """What an evaluation found: B against A per basis, mean scores per side, and every item.

    ``basis`` names the headline tally (``judge`` when the judge was ready, else ``reference``);
    ``judge_note`` says why the judge was or was not used (its held-out agreement when it was)."""

    label_a: str
    label_b: str
    items: list[ItemResult]
    basis: str
    judge_note: str
    fuzzy_method: str
    tallies: dict[str, Tally] = field(default_factory=dict)

    @property
    def headline(self) -> Tally:
        return self.tallies[self.basis]

    @property
    def unscored(self) -> int:
        """Items the headline basis could not score (no reference and no judge)."""
        return sum(1 for item in self.items if item.winner(self.basis) is None)

    def means(self) -> dict[str, float | None]:
        """Mean judge stars, exact-match rate and fuzzy similarity of each side (None: no data)."""

        def mean(values: list[float]) -> float | None:
            return sum(values) / len(values) if values else None

        out: dict[str, float | None] = {}
        for side in ("a", "b"):
            judged = [v for i in self.items if (v := getattr(i, f"judge_{side}")) is not None]
            exact = [float(v) for i in self.items if (v := getattr(i, f"exact_{side}")) is not None]
            fuzzy = [v for i in self.items if (v := getattr(i, f"fuzzy_{side}")) is not None]
            out |= {f"judge_{side}": mean(judged), f"exact_{side}": mean(exact), f"fuzzy_{side}": mean(fuzzy)}
        return out

    def summary(self) -> dict[str, Any]:
        """The numbers (no text): tallies, means, counts — what the store keeps with a run."""
        return {
            "basis": self.basis,
            "items": len(self.items),
            "unscored": self.unscored,
            "judge_note": self.judge_note,
            "fuzzy_method": self.fuzzy_method,
            "tallies": {k: t.as_dict() for k, t in self.tallies.items()},
            "means": self.means(),
            "with_reference": sum(1 for i in self.items if i.reference is not None),
        }


# -- scoring ------------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Whitespace-collapsed, case-folded text: what an exact match compares."""
    return " ".join(text.split()).casefold()


def exact_match(answer: str, reference: str) -> bool:
    return normalise(answer) == normalise(reference)


def fuzzy_method() -> str:
    """Which similarity :func:`fuzzy_ratio` uses here (rapidfuzz when installed, else difflib)."""
    try:
        import rapidfuzz  # noqa: F401
    except ImportError:
        return "difflib"
    return "rapidfuzz"


def fuzzy_ratio(answer: str, reference: str) -> float:
    """Similarity 0-1 of the normalised texts: ``2 * matched / total characters`` (rapidfuzz's
    Indel ratio when installed; else difflib's, on texts clipped to :data:`FUZZY_MAX_CHARS`)."""
    a, b = normalise(answer), normalise(reference)
    if not a and not b:
        return 1.0
    try:
        from rapidfuzz import fuzz
    except ImportError:
        matcher = difflib.SequenceMatcher(None, a[:FUZZY_MAX_CHARS], b[:FUZZY_MAX_CHARS], autojunk=False)
        return float(matcher.ratio())
    return float(fuzz.ratio(a, b)) / 100.0


def _winner(a: float, b: float, tie: float) -> str:
    if abs(a - b) < tie:
        return "tie"
    return "a" if a > b else "b"


def score_item(item: EvalItem, answer_a: str, answer_b: str, judge: JudgeScores | None = None) -> ItemResult:
    """Score both answers to ``item``: by the judge (when given) and against the reference (when
    the item has one)."""
    fields: dict[str, Any] = {}
    if judge is not None:
        judge_a, judge_b = (float(v) for v in judge(item.prompt, [answer_a, answer_b]))
        fields |= {
            "judge_a": judge_a,
            "judge_b": judge_b,
            "judge_winner": _winner(judge_a, judge_b, JUDGE_TIE),
        }
    if item.reference is not None:
        exact_a, exact_b = exact_match(answer_a, item.reference), exact_match(answer_b, item.reference)
        fuzzy_a, fuzzy_b = fuzzy_ratio(answer_a, item.reference), fuzzy_ratio(answer_b, item.reference)
        # An exact match beats a near miss; otherwise the closer answer wins.
        exact_winner = ("a" if exact_a else "b") if exact_a != exact_b else None
        winner = exact_winner or _winner(fuzzy_a, fuzzy_b, FUZZY_TIE)
        fields |= {
            "exact_a": exact_a,
            "exact_b": exact_b,
            "fuzzy_a": fuzzy_a,
            "fuzzy_b": fuzzy_b,
            "reference_winner": winner,
        }
    return ItemResult(
        item.turn_id, item.prompt, item.reference, item.user_stars, answer_a, answer_b, **fields
    )


def tally(items: Sequence[ItemResult], basis: str) -> Tally:
    """B's wins, losses and ties against A over the items ``basis`` scored."""
    winners = [item.winner(basis) for item in items]
    return Tally(basis, winners.count("b"), winners.count("a"), winners.count("tie"))


def report(
    label_a: str,
    label_b: str,
    items: list[ItemResult],
    *,
    judge_ready: bool,
    judge_note: str,
    method: str | None = None,
) -> EvalReport:
    """The report over scored items (also used to recount a stored run after items were forgotten)."""
    return EvalReport(
        label_a,
        label_b,
        items,
        basis="judge" if judge_ready else "reference",
        judge_note=judge_note,
        fuzzy_method=method or fuzzy_method(),
        tallies={basis: tally(items, basis) for basis in BASES},
    )


# -- running ------------------------------------------------------------------------------------------


def evaluate(
    items: Sequence[EvalItem],
    a: Candidate,
    b: Candidate,
    *,
    demos_for: DemosFor | None = None,
    judge: JudgeScores | None = None,
    judge_note: str = "judge not used",
    temperature: float | None = None,
    max_tokens: int | None = None,
    on_item: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> EvalReport:
    """Answer every item with both candidates and score the answers (see the module docstring).

    ``demos_for`` gives the demos both candidates see for an item; ``judge`` scores answers (None
    when the judge is not ready: the reference decides). ``on_item(done, total)`` is called after
    each item; when ``cancelled()`` turns true the items answered so far are reported. Model
    errors propagate."""
    results: list[ItemResult] = []
    for number, item in enumerate(items, start=1):
        if cancelled is not None and cancelled():
            break
        demos = list(demos_for(item)) if demos_for is not None else []
        answers = []
        for candidate in (a, b):
            messages = render_messages(candidate.version, item.prompt, item.history, demos=demos)
            completion = candidate.model.complete(messages, temperature=temperature, max_tokens=max_tokens)
            answers.append(completion.text)
        results.append(score_item(item, answers[0], answers[1], judge))
        if on_item is not None:
            on_item(number, len(items))
    return report(a.label, b.label, results, judge_ready=judge is not None, judge_note=judge_note)
