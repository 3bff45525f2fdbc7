"""Demos: the user's accepted answers, chosen per message by similarity x rating with diversity.

Candidates are attempts the user accepted: effective rating >= ``min_stars`` (4 by default),
or praised without a lower explicit rating. Each turn contributes at most its best-rated
attempt, and the label is always the response the user actually rated.

:class:`DemoIndex` keeps the candidates of one program in memory (a matrix of unit vectors), so
that one new feedback event updates it in well under a millisecond and choosing demos for a
message is one matrix-vector product plus a small MMR loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_POLICY: dict[str, Any] = {
    "k": 3,  # at most this many demos per message
    "min_stars": 4,  # accepted = effective rating at least this (or praised)
    "min_similarity": 0.3,  # cosine similarity below this is not shown
    "mmr_lambda": 0.7,  # 1.0 = pure relevance, lower = more diversity
    "token_budget": 800,  # approximate tokens of demo text in the prompt
}


def policy_with_defaults(policy: dict[str, Any] | None) -> dict[str, Any]:
    """The demo policy with defaults filled in for missing keys."""
    return DEFAULT_POLICY | (policy or {})


def approx_tokens(text: str) -> int:
    """A cheap token estimate (about 4 characters per token) for budgeting."""
    return max(1, len(text) // 4)


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
        accepted = (stars is not None and stars >= min_stars) or (
            attempt_id in praised and attempt_id not in explicit
        )
        if not accepted:
            continue
        cand = Candidate(attempt_id, turn_id, conversation_id, user, response, stars or 5)
        current = best.get(turn_id)
        if current is None or (cand.stars, cand.attempt_id) > (current.stars, current.attempt_id):
            best[turn_id] = cand
    return sorted(best.values(), key=lambda c: c.attempt_id)


class DemoIndex:
    """In-memory demo candidates of one program with their message embeddings."""

    def __init__(self) -> None:
        self._by_turn: dict[int, Candidate] = {}
        self._vectors: dict[int, np.ndarray] = {}
        self._matrix: np.ndarray | None = None
        self._order: list[int] = []

    def __len__(self) -> int:
        return len(self._by_turn)

    def turn_ids(self) -> list[int]:
        return list(self._by_turn)

    def upsert(self, candidate: Candidate, vector: np.ndarray) -> None:
        """Add or replace the candidate of ``candidate.turn_id``."""
        self._by_turn[candidate.turn_id] = candidate
        self._vectors[candidate.turn_id] = np.asarray(vector, dtype=np.float32)
        self._matrix = None

    def remove_turn(self, turn_id: int) -> None:
        if self._by_turn.pop(turn_id, None) is not None:
            self._vectors.pop(turn_id, None)
            self._matrix = None

    def _ensure_matrix(self) -> np.ndarray:
        if self._matrix is None:
            self._order = list(self._by_turn)
            self._matrix = (
                np.stack([self._vectors[t] for t in self._order])
                if self._order
                else np.zeros((0, 0), dtype=np.float32)
            )
        return self._matrix

    def select(
        self, query: np.ndarray, policy: dict[str, Any], exclude_turns: Sequence[int] = ()
    ) -> list[Demo]:
        """Demos for a message with embedding ``query``: relevance = similarity x stars/5, then MMR."""
        policy = policy_with_defaults(policy)
        matrix = self._ensure_matrix()
        if not len(self._order) or policy["k"] <= 0:
            return []
        sims = matrix @ np.asarray(query, dtype=np.float32)
        stars = np.array([self._by_turn[t].stars for t in self._order], dtype=np.float32)
        relevance = sims * (stars / 5.0)
        excluded = set(exclude_turns)
        pool = [
            i
            for i in np.argsort(-relevance)[: max(50, 5 * policy["k"])]
            if sims[i] >= policy["min_similarity"] and self._order[i] not in excluded
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
            Demo(c.attempt_id, c.turn_id, c.user, c.response, c.stars, float(sims[i]))
            for i in chosen
            for c in (self._by_turn[self._order[i]],)
        ]
