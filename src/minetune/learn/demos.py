"""Demos: the user's accepted answers, chosen per message by similarity x learned weight, with diversity.

Candidates are attempts the user accepted: effective rating >= ``min_stars`` (4 by default),
or praised without a lower explicit rating. Each turn contributes at most its best-rated
attempt, and the label is always the response the user actually rated.

**Drift-aware weights (credit assignment through the lineage).** Every attempt records the demos
it was shown, so a rating of that attempt is evidence about those demos: 4-5 stars a success,
1-2 a failure, 3 half of each (:func:`credit_of`). A demo's weight is the mean of a Beta
posterior: a uniform Beta(1, 1), plus ``prior_strength`` pseudo-ratings from the demo's own
stars, plus the successes and failures of the answers shown it. Everything decays with a
half-life of ``half_life`` *rated turns* of the program (interaction order, not the clock), so
when the user's taste changes, a demo whose imitations are rated down falls below newer good
answers (and below ``min_weight``, when it is not shown at all). With ``credit`` off the weight is
the old ``stars / 5``.

:class:`DemoIndex` keeps the candidates of one program in memory (a matrix of unit vectors and
arrays of the posterior's counts), so that one new feedback event updates it in well under a
millisecond (a rating touches only the stats of the demos that attempt was shown) and choosing
demos for a message is one matrix-vector product, a few vector operations and a small MMR loop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from minetune.feedback import accepts_answer

if TYPE_CHECKING:  # numpy is imported by the functions that compute, not when the core loads
    import numpy as np

DEFAULT_POLICY: dict[str, Any] = {
    "k": 3,  # at most this many demos per message
    "min_stars": 4,  # accepted = effective rating at least this (or praised)
    "min_similarity": 0.3,  # cosine similarity below this is not shown
    "mmr_lambda": 0.7,  # 1.0 = pure relevance, lower = more diversity
    "token_budget": 800,  # approximate tokens of demo text in the prompt
    "credit": True,  # weight = Beta posterior from the ratings of answers shown the demo (False: stars/5)
    "half_life": 20,  # rated turns after which a demo's prior and evidence count half (0: no decay)
    "prior_strength": 2.0,  # pseudo-ratings the demo's own rating is worth
    "min_weight": 0.5,  # demos whose posterior mean is not above this are not shown
}


def policy_with_defaults(policy: dict[str, Any] | None) -> dict[str, Any]:
    """The demo policy with defaults filled in for missing keys."""
    return DEFAULT_POLICY | (policy or {})


def approx_tokens(text: str) -> int:
    """A cheap token estimate (about 4 characters per token) for budgeting."""
    return max(1, len(text) // 4)


def credit_of(stars: int) -> tuple[float, float]:
    """(success, failure) one rating of an answer gives each demo that answer was shown."""
    if stars >= 4:
        return 1.0, 0.0
    if stars <= 2:
        return 0.0, 1.0
    return 0.5, 0.5


_WORDS = re.compile(r"\w+")


def imitation_shares(answer: str, demo_responses: Sequence[str | None]) -> list[float]:
    """How much of a rating each shown demo gets: the answer's word overlap (Jaccard) with each
    demo's response, relative to the most imitated one (1.0). Unknown responses (None), or an
    answer like none of them, share equally (1.0 each)."""
    words = set(_WORDS.findall(answer.lower()[:4000]))
    overlaps = []
    for response in demo_responses:
        if response is None:
            return [1.0] * len(demo_responses)
        theirs = set(_WORDS.findall(response.lower()[:4000]))
        union = words | theirs
        overlaps.append(len(words & theirs) / len(union) if union else 0.0)
    if not overlaps or max(overlaps) <= 0:
        return [1.0] * len(demo_responses)
    top = max(overlaps)
    return [o / top for o in overlaps]


def decay(age: Any, half_life: float) -> Any:
    """2^(-age / half_life) for an age (or array of ages) in rated turns; 1 when half_life <= 0."""
    import numpy as np

    if half_life <= 0:
        return np.ones_like(np.asarray(age, dtype=np.float64))
    return np.exp2(-np.maximum(np.asarray(age, dtype=np.float64), 0.0) / half_life)


def posterior_weight(
    stars: Any,
    born: Any,
    successes: Any,
    failures: Any,
    at: Any,
    now: int,
    half_life: float,
    prior_strength: float,
) -> Any:
    """Mean of a demo's Beta posterior (vectorised): Beta(1, 1) + its own rating as
    ``prior_strength`` pseudo-ratings decayed from ``born`` + evidence decayed from ``at``
    (successes/failures are summed as of rated turn ``at``)."""
    import numpy as np

    own = (np.asarray(stars, dtype=np.float64) - 1.0) / 4.0
    prior = prior_strength * decay(now - np.asarray(born), half_life)
    evidence = decay(now - np.asarray(at), half_life)
    alpha = 1.0 + prior * own + np.asarray(successes) * evidence
    beta = 1.0 + prior * (1.0 - own) + np.asarray(failures) * evidence
    return alpha / (alpha + beta)


@dataclass(frozen=True)
class Candidate:
    attempt_id: int
    turn_id: int
    conversation_id: int
    user: str
    response: str
    stars: int


@dataclass(frozen=True)
class Demo:
    """A demo chosen for one message."""

    attempt_id: int
    turn_id: int
    user: str
    response: str
    stars: int
    similarity: float
    weight: float = 1.0  # the posterior weight it was chosen with (stars/5 with credit off)


@dataclass(frozen=True)
class DemoStats:
    """What the index knows about one demo: evidence as of now (decayed) and its weight."""

    successes: float
    failures: float
    weight: float


def accepted_candidates(rows: Iterable[tuple[Any, ...]], min_stars: int) -> list[Candidate]:
    """Pick each turn's best accepted attempt.

    ``rows`` are (attempt_id, turn_id, conversation_id, user_message, response, kind, stars)
    per feedback row, in time order.
    """
    explicit: dict[int, int] = {}
    other: dict[int, int] = {}
    praised: set[int] = set()
    info: dict[int, tuple[int, int, str, str]] = {}
    for attempt_id, turn_id, conversation_id, user, response, kind, stars in rows:
        info[attempt_id] = (turn_id, conversation_id, user, response)
        if kind == "praise":
            praised.add(attempt_id)
        if stars is not None:
            (explicit if kind == "explicit" else other)[attempt_id] = stars
    best: dict[int, Candidate] = {}
    for attempt_id, (turn_id, conversation_id, user, response) in info.items():
        stars = explicit.get(attempt_id, other.get(attempt_id))
        rated = attempt_id in explicit
        if not accepts_answer(stars, praised=attempt_id in praised, rated=rated, threshold=min_stars):
            continue
        cand = Candidate(attempt_id, turn_id, conversation_id, user, response, stars or 5)
        current = best.get(turn_id)
        if current is None or (cand.stars, cand.attempt_id) > (current.stars, current.attempt_id):
            best[turn_id] = cand
    return sorted(best.values(), key=lambda c: c.attempt_id)


@dataclass(frozen=True)
class _Credit:
    """What one rated attempt contributed to the demos it was shown (kept to retract it)."""

    turn_id: int
    at: int
    success: float
    failure: float
    demos: tuple[tuple[int, float], ...]  # (demo attempt id, its share of the rating)


class DemoIndex:
    """In-memory demo candidates of one program with their message embeddings and credit stats.

    The clock is the number of the program's turns that have feedback, in the order their first
    feedback came (:meth:`note_turn`); ages and half-lives are counted on it.
    """

    def __init__(self, half_life: float = DEFAULT_POLICY["half_life"]) -> None:
        import numpy as np

        self.half_life = float(half_life)
        self.clock = 0
        self._by_turn: dict[int, Candidate] = {}
        self._by_attempt: dict[int, Candidate] = {}
        self._vectors: dict[int, np.ndarray] = {}
        self._matrix: np.ndarray | None = None
        self._order: list[int] = []
        self._ordinal: dict[int, int] = {}  # turn -> clock value when it was first rated
        self._turn_attempts: dict[int, set[int]] = {}  # turn -> attempts credited or holding evidence
        self._credits: dict[int, _Credit] = {}  # rated attempt -> its contribution
        self._evidence: dict[int, list[float]] = {}  # demo attempt -> [successes, failures, at]
        # Arrays aligned with _order, built with the matrix; evidence entries updated in place.
        self._stars = self._born = self._succ = self._fail = self._at = np.zeros(0)
        self._position: dict[int, int] = {}  # attempt id of a candidate -> row

    def __len__(self) -> int:
        return len(self._by_turn)

    def turn_ids(self) -> list[int]:
        return list(self._by_turn)

    def knows_turn(self, turn_id: int) -> bool:
        return turn_id in self._ordinal

    def response_of(self, attempt_id: int) -> str | None:
        """The response of a demo candidate (None when the attempt is not one now)."""
        candidate = self._by_attempt.get(attempt_id)
        return None if candidate is None else candidate.response

    # -- candidates -----------------------------------------------------------------------

    def note_turn(self, turn_id: int) -> int:
        """The turn's place on the clock; a turn rated for the first time advances the clock."""
        ordinal = self._ordinal.get(turn_id)
        if ordinal is None:
            self.clock += 1
            ordinal = self._ordinal[turn_id] = self.clock
        return ordinal

    def upsert(self, candidate: Candidate, vector: np.ndarray) -> None:
        """Add or replace the candidate of ``candidate.turn_id``."""
        import numpy as np

        self.note_turn(candidate.turn_id)
        self.remove_turn(candidate.turn_id)
        self._by_turn[candidate.turn_id] = candidate
        self._by_attempt[candidate.attempt_id] = candidate
        self._vectors[candidate.turn_id] = np.asarray(vector, dtype=np.float32)
        self._matrix = None

    def remove_turn(self, turn_id: int) -> None:
        candidate = self._by_turn.pop(turn_id, None)
        if candidate is not None:
            self._by_attempt.pop(candidate.attempt_id, None)
            self._vectors.pop(turn_id, None)
            self._matrix = None

    def forget_turn(self, turn_id: int) -> None:
        """Remove a turn completely: its candidate, what its attempts' ratings credited to demos,
        and the evidence about its attempts as demos (after forget, or when it is excluded)."""
        self.remove_turn(turn_id)
        for attempt_id in self._turn_attempts.pop(turn_id, set()):
            self.credit(attempt_id, turn_id, None, ())
            if self._evidence.pop(attempt_id, None) is not None:
                self._set_row(attempt_id, [0.0, 0.0, 0.0])

    # -- credit ---------------------------------------------------------------------------

    def credit(
        self,
        attempt_id: int,
        turn_id: int,
        stars: int | None,
        demo_ids: Sequence[int],
        shares: Sequence[float] | None = None,
    ) -> bool:
        """Make ``attempt_id``'s current effective rating (None: no rating) the evidence it gives the
        demos it was shown, each in proportion to its share (default 1; see
        :func:`imitation_shares`); a changed rating first retracts what the old one gave.
        Whether anything changed."""
        shares = [1.0] * len(demo_ids) if shares is None else shares
        demos = tuple((int(d), float(w)) for d, w in zip(demo_ids, shares, strict=True))
        old = self._credits.get(attempt_id)
        if stars is None or not demos:
            new = None
        else:
            success, failure = credit_of(stars)
            at = old.at if old is not None else self.note_turn(turn_id)
            new = _Credit(turn_id, at, success, failure, demos)
        if old == new:  # the same rating of the same demos (same turn, same time)
            return False
        if old is not None:
            for demo, share in old.demos:
                self._add_evidence(demo, -old.success * share, -old.failure * share, old.at)
            del self._credits[attempt_id]
        if new is not None:
            for demo, share in new.demos:
                self._add_evidence(demo, new.success * share, new.failure * share, new.at)
            self._credits[attempt_id] = new
            self._turn_attempts.setdefault(turn_id, set()).add(attempt_id)
        return old is not None or new is not None

    def attach(self, attempt_id: int, turn_id: int) -> None:
        """Record which turn an attempt (a possible demo) belongs to, so forgetting it finds it."""
        self._turn_attempts.setdefault(turn_id, set()).add(attempt_id)

    def _add_evidence(self, demo: int, success: float, failure: float, at: int) -> None:
        if demo not in self._evidence and success <= 0 and failure <= 0:
            return  # retracting from a demo forgotten since
        row = self._evidence.setdefault(demo, [0.0, 0.0, float(at)])
        if at > row[2]:  # bring the sums forward to the newer reference point first
            factor = float(decay(at - row[2], self.half_life))
            row[0], row[1], row[2] = row[0] * factor, row[1] * factor, float(at)
        weight = float(decay(row[2] - at, self.half_life))
        row[0] = max(0.0, row[0] + success * weight)
        row[1] = max(0.0, row[1] + failure * weight)
        self._set_row(demo, row)

    def _set_row(self, demo: int, row: list[float]) -> None:
        position = self._position.get(demo) if self._matrix is not None else None
        if position is not None:
            self._succ[position], self._fail[position], self._at[position] = row

    def stats(self, attempt_id: int, policy: dict[str, Any] | None = None) -> DemoStats | None:
        """A candidate's evidence as of now (decayed) and its weight under ``policy`` (None when
        the attempt is not a candidate)."""
        self._ensure_matrix()
        position = self._position.get(attempt_id)
        if position is None:
            return None
        factor = float(decay(self.clock - self._at[position], self.half_life))
        weight = float(self.weights(policy_with_defaults(policy))[position])
        return DemoStats(float(self._succ[position]) * factor, float(self._fail[position]) * factor, weight)

    # -- selection ------------------------------------------------------------------------

    def _ensure_matrix(self) -> np.ndarray:
        import numpy as np

        if self._matrix is None:
            self._order = list(self._by_turn)
            self._matrix = (
                np.stack([self._vectors[t] for t in self._order])
                if self._order
                else np.zeros((0, 0), dtype=np.float32)
            )
            cands = [self._by_turn[t] for t in self._order]
            self._position = {c.attempt_id: i for i, c in enumerate(cands)}
            self._stars = np.array([c.stars for c in cands], dtype=np.float64)
            self._born = np.array([self._ordinal[c.turn_id] for c in cands], dtype=np.float64)
            rows = [self._evidence.get(c.attempt_id, (0.0, 0.0, 0.0)) for c in cands]
            evidence = np.array(rows, dtype=np.float64).reshape(len(cands), 3)
            self._succ, self._fail, self._at = (evidence[:, i].copy() for i in range(3))
        return self._matrix

    def weights(self, policy: dict[str, Any]) -> np.ndarray:
        """Every candidate's weight under ``policy``, aligned with the matrix rows."""
        import numpy as np

        self._ensure_matrix()
        policy = policy_with_defaults(policy)
        if not policy["credit"]:
            return self._stars / 5.0
        return np.asarray(
            posterior_weight(
                self._stars,
                self._born,
                self._succ,
                self._fail,
                self._at,
                self.clock,
                self.half_life,
                float(policy["prior_strength"]),
            )
        )

    def select(
        self, query: np.ndarray, policy: dict[str, Any], exclude_turns: Sequence[int] = ()
    ) -> list[Demo]:
        """Demos for a message with embedding ``query``: relevance = similarity x weight, then MMR."""
        import numpy as np

        policy = policy_with_defaults(policy)
        matrix = self._ensure_matrix()
        if not len(self._order) or policy["k"] <= 0:
            return []
        sims = matrix @ np.asarray(query, dtype=np.float32)
        weights = self.weights(policy)
        # With credit on, relevance is similarity x advantage (2 x mean - 1: how much better than a
        # coin flip imitating the demo is expected to do), which separates good from failing demos
        # more than the mean does; the floor hides demos no better than even odds.
        relevance = sims * (2 * weights - 1 if policy["credit"] else weights)
        excluded = set(exclude_turns)
        floor = float(policy["min_weight"]) if policy["credit"] else -1.0
        pool = [
            i
            for i in np.argsort(-relevance)[: max(50, 5 * policy["k"])]
            if sims[i] >= policy["min_similarity"] and weights[i] > floor and self._order[i] not in excluded
        ]
        chosen: list[int] = []
        budget = policy["token_budget"]
        lam = policy["mmr_lambda"]
        while pool and len(chosen) < policy["k"]:
            if chosen:
                redundancy = (matrix[pool] @ matrix[chosen].T).max(axis=1)
                scores = lam * relevance[pool] - (1 - lam) * redundancy
            else:
                scores = relevance[pool]
            pick = pool.pop(int(np.argmax(scores)))
            cand = self._by_turn[self._order[pick]]
            cost = approx_tokens(cand.user) + approx_tokens(cand.response)
            if cost > budget:
                continue
            budget -= cost
            chosen.append(pick)
        return [
            Demo(c.attempt_id, c.turn_id, c.user, c.response, c.stars, float(sims[i]), float(weights[i]))
            for i in chosen
            for c in (self._by_turn[self._order[i]],)
        ]
