"""Driving one simulated user through a real :class:`minetune.Session`, and summarising runs."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learning import styles
from learning.standin import StandInModel
from learning.user import SimulatedUser, Taste, true_stars
from minetune import Session
from minetune.config import load_settings
from minetune.models.base import ChatModel
from minetune.program import render_messages
from minetune.store import Store

RETRY_LIMIT = 5


@dataclass(frozen=True)
class Interaction:
    phase: int  # 0 before the change, 1 after
    first_stars: int  # the stars the user gave the first attempt (praise counts as 5)
    attempts: int  # attempts made until 5★, or the retry limit when it never came
    solved: bool


@dataclass
class Run:
    arm: str
    user: str
    seed: int
    interactions: list[Interaction] = field(default_factory=list)
    probes: dict[str, float] = field(default_factory=dict)  # old-domain score at the change / at the end
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Schedule:
    """``before`` interactions on the home domain with the first taste, then ``after`` with the
    changed taste: on the same questions (``change="taste"``) or on the work domain (``"domain"``)."""

    before: int = 60
    after: int = 60
    change: str = "taste"

    def phase(self, taste: Taste, index: int) -> tuple[int, str, styles.Style]:
        if index < self.before:
            return 0, "home", taste.before
        if self.change == "taste":
            return 1, "home", taste.after
        return 1, "work", taste.work


def interact(
    chat: Session,
    user: SimulatedUser,
    question: styles.Question,
    taste: styles.Style,
    phase: int,
    retry_limit: int = RETRY_LIMIT,
) -> Interaction:
    """One message in a new conversation, rated (or praised) and retried until 5★ or the limit."""
    chat.new_conversation()
    answer = chat.send(question.text)
    attempts, first = 1, None
    while True:
        stars, critique = user.judge(answer.text, question, taste)
        first = stars if first is None else first
        if stars == 5:
            praise = user.praises()
            if praise:
                chat.send(praise)  # praise in the next message: the detector must notice it
            else:
                chat.rate(5)
            return Interaction(phase, first, attempts, True)
        chat.rate(stars, critique)
        if attempts >= retry_limit:
            return Interaction(phase, first, attempts, False)
        answer = chat.retry()
        attempts += 1


def probe(chat: Session, questions: Sequence[styles.Question], taste: styles.Style) -> float:
    """Mean true stars (no noise) of one fresh answer to each question, rendered exactly as
    ``send`` would (demos included) but not stored: it measures without teaching."""
    scores = []
    model = chat.model()
    for q in questions:
        demos, _ = chat.learner.demos_for(q.text)
        messages = render_messages(chat.version, q.text, demos=demos)
        text = model.complete(
            messages, temperature=chat.settings.temperature, max_tokens=chat.settings.max_tokens
        ).text
        scores.append(true_stars(len(styles.mismatches(text, q, taste))))
    return statistics.fmean(scores)


def open_session(home: Path, model: str | ChatModel, **overrides: Any) -> Session:
    settings = load_settings(
        home, database_url=f"sqlite:///{home / 'store.db'}", retry_limit=RETRY_LIMIT, **overrides
    )
    return Session(Store.open(settings), settings, model=model)


def asked(rng: random.Random, domain: str) -> Callable[[], styles.Question]:
    """Questions of a domain in shuffled order, reshuffled after each pass."""
    pool: list[styles.Question] = []

    def next_question() -> styles.Question:
        if not pool:
            pool.extend(styles.questions(domain))
            rng.shuffle(pool)
        return pool.pop()

    return next_question


PROMPT_ARMS = {
    # arm: (re-optimize after feedback, the user writes critiques)
    "no learning": (False, True),
    "prompt (critiques)": (True, True),
    "prompt (stars only)": (True, False),
}


def run_prompt_arm(arm: str, taste: Taste, seed: int, schedule: Schedule, home: Path, probes: int = 8) -> Run:
    """One user through the stand-in model under one prompt-path arm."""
    reoptimize, critiques = PROMPT_ARMS[arm]
    user = SimulatedUser(seed, critiques)
    rng = random.Random(seed + 1)
    next_of = {d: asked(rng, d) for d in ("home", "work")}
    old_probes = styles.questions("home", held_out=True)[:probes]
    run = Run(arm, taste.name, seed)
    with open_session(home, StandInModel(seed + 2), reoptimize=reoptimize) as chat:
        for index in range(schedule.before + schedule.after):
            if index == schedule.before:
                run.probes["at change"] = probe(chat, old_probes, taste.before)
            phase, domain, wanted = schedule.phase(taste, index)
            run.interactions.append(interact(chat, user, next_of[domain](), wanted, phase))
        run.probes["at end"] = probe(chat, old_probes, taste.before)
    return run


# -- summaries --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    start: int  # index of the window's first interaction
    phase: int
    first_stars: float
    attempts: float
    solved: float


def windows(runs: Sequence[Run], size: int = 10) -> list[Window]:
    """Per window of ``size`` interactions, the means over every run (all runs share a schedule)."""
    length = min(len(r.interactions) for r in runs)
    out = []
    for start in range(0, length, size):
        chunk = [i for r in runs for i in r.interactions[start : start + size]]
        out.append(
            Window(
                start,
                chunk[0].phase,
                statistics.fmean(i.first_stars for i in chunk),
                statistics.fmean(i.attempts for i in chunk),
                statistics.fmean(i.solved for i in chunk),
            )
        )
    return out


def first_window_at_least(wins: Sequence[Window], phase: int, stars: float) -> int | None:
    """Interactions into ``phase`` at the end of its first window with mean first-attempt stars
    ≥ ``stars`` (None: never)."""
    in_phase = [w for w in wins if w.phase == phase]
    if not in_phase:
        return None
    origin = in_phase[0].start
    size = in_phase[1].start - origin if len(in_phase) > 1 else 10
    for w in in_phase:
        if w.first_stars >= stars:
            return w.start - origin + size
    return None


def after(wins: Sequence[Window], phase: int, interactions: int) -> list[Window]:
    """The windows of ``phase`` that start at least ``interactions`` into it."""
    in_phase = [w for w in wins if w.phase == phase]
    return [w for w in in_phase if w.start - in_phase[0].start >= interactions] if in_phase else []
