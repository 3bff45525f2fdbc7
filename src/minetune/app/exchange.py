"""The mine-tuning exchange, written once for every interface: record an answer, rate it, notice
praise, fold a critique into a retry, and learn from the feedback.

The terminal chat, ``minetune rate``, the web app (all through :class:`minetune.loop.Session` or
directly) and the ``/v1`` proxy (through :mod:`minetune.gateway`) call these functions, so the
same feedback is stored and learned from the same way whichever door it came in by. Policy lives
here and nowhere else:

- praise is 5 stars unless the answer was rated explicitly (then only the praise text is kept);
- an answer is *accepted* at ``[continual] stars`` or more, or when praised; accepted answers are
  noted for continual adapter updates when ``[continual] enabled``;
- after every feedback event the program re-optimizes (demos; a critique becomes a rule) unless
  ``reoptimize`` is off — inline for the terminal and the library, in the background for servers
  (see :class:`Learning`);
- only a *complete* attempt is an answer: one still streaming or interrupted (its stream was cut)
  cannot be rated or critiqued (:class:`UnfinishedAnswerError`) and praise passes it by, so it is
  never accepted, never a demo and never a training row.

Each operation is one unit of work: an answer is stored with its turn, conversation and embedding
in one transaction; a rating is committed before the call returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from minetune.config import Settings
from minetune.errors import FeedbackError, MinetuneError
from minetune.feedback import PraiseDetector, accepts_answer, describe_accepted, parse_stars
from minetune.learn.demos import Demo
from minetune.learn.embed import to_bytes
from minetune.learn.reoptimize import Learner, LearningReport
from minetune.models.base import ChatModel, Completion, Message
from minetune.store import Store
from minetune.store.db import Database
from minetune.store.exchanges import (
    Embedding,
    ExchangeIds,
    attempt_state,
    interrupt_streams,
    record_exchange,
)
from minetune.store.schema import COMPLETE, ProgramVersion

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 200_000
TITLE_CHARS = 80

Reflector = Callable[[Store, str], "ChatModel | None"]
"""Gives the model that distils a critique into a rule for (store, program), or None (demos only)."""

Background = Callable[[Store, str, Callable[[], object]], None]
"""Runs ``work`` for (store, program) later, one at a time per program (a server's job runner)."""


# A stream whose process cannot be checked (another host) counts as dead after this long.
STREAM_MAX_S = 6 * 3600.0


class MessageTooLongError(MinetuneError):
    """A message or critique is over :data:`MAX_MESSAGE_CHARS`."""


class UnfinishedAnswerError(FeedbackError):
    """Feedback on an attempt that is not a complete answer (still streaming, or interrupted)."""


def answer_program(store: Store, attempt_id: int) -> str:
    """The program of a complete attempt of this user; NotFoundError when it is not this user's,
    UnfinishedAnswerError while it streams or when its stream was cut."""
    program, status = attempt_state(store, attempt_id)
    if status != COMPLETE:
        state = "is still streaming" if status == "streaming" else "was interrupted before it finished"
        raise UnfinishedAnswerError(
            f"Answer {attempt_id} {state}; only complete answers can be rated or critiqued. "
            "Retry to get a complete answer."
        )
    return program


def recover_streams(db: Database) -> list[int]:
    """Mark attempts left ``streaming`` by a process that died (on this host), or started more than
    :data:`STREAM_MAX_S` ago, ``interrupted``; the ids marked. Call at server start-up."""
    from datetime import UTC, datetime, timedelta

    from minetune.app.jobs import owner_is_dead

    cutoff = datetime.now(UTC) - timedelta(seconds=STREAM_MAX_S)
    marked = interrupt_streams(db, dead_owner=owner_is_dead, started_before=cutoff)
    if marked:
        log.warning("%d answer(s) left streaming by a stopped process marked interrupted", len(marked))
    return marked


def check_length(text: str, what: str) -> None:
    """MessageTooLongError when ``text`` is over :data:`MAX_MESSAGE_CHARS`."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise MessageTooLongError(f"{what} is {len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,}.")


def title_of(message: str) -> str:
    """A conversation's title: the first line of its first message."""
    stripped = message.strip()
    return stripped.splitlines()[0][:TITLE_CHARS] if stripped else ""


# -- learning after feedback --------------------------------------------------------------------


@dataclass(frozen=True)
class Learning:
    """How an interface learns after feedback: which model distils critiques, and whether the work
    runs inline (``background`` None: the terminal, the library) or is handed to a job runner."""

    settings: Settings
    reflector: Reflector
    background: Background | None = None

    def after_feedback(
        self, store: Store, program: str, feedback_id: int, accepted: bool
    ) -> tuple[LearningReport | None, bool]:
        """Re-optimize (unless off) and note an accepted answer for continual updates.

        Returns (the report when learning ran inline, whether it was queued instead)."""
        if accepted:
            note_accepted(store, self.settings, program)
        if not self.settings.reoptimize:
            return None, False
        if self.background is None:
            return learn(store, self.settings, program, feedback_id, self.reflector(store, program)), False

        def work() -> None:
            try:
                report = learn(store, self.settings, program, feedback_id, self.reflector(store, program))
            except MinetuneError as exc:
                log.warning("Learning from feedback %s skipped: %s", feedback_id, exc)
            except Exception:  # a background failure must not vanish silently
                log.exception("Learning from feedback %s of program %r failed", feedback_id, program)
            else:
                if report is not None and report.rule:
                    log.info("Learned a rule for %s (v%s): %s", program, report.version, report.rule)

        self.background(store, program, work)
        return None, True


def learn(
    store: Store, settings: Settings, program: str, feedback_id: int, reflector: ChatModel | None
) -> LearningReport | None:
    """Re-optimize ``program`` after one stored feedback event: sync the demo index; with a
    ``reflector`` model, a critique becomes a rule in a new version. None when ``reoptimize`` is off."""
    if not settings.reoptimize:
        return None
    return Learner(store, settings, program).on_feedback(feedback_id, reflector)


def refresh_demos(
    store: Store, settings: Settings, program: str
) -> tuple[LearningReport, ProgramVersion | None]:
    """Rebuild ``program``'s demo index from all rated data now (``minetune optimize``). With
    ``reoptimize`` off the prompt only changes with a new version, so one is published first
    (returned) and the demos follow from it; otherwise the live index is rebuilt (None)."""
    version = None
    if not settings.reoptimize:
        version = store.add_version(
            program, note="demos refreshed by `minetune optimize` (reoptimize is off)"
        )
    return Learner(store, settings, program).rebuild(), version


def accepted_threshold(settings: Settings, threshold: int | None = None) -> int:
    """The stars that accept an answer: ``threshold`` when given (a command's ``--threshold``),
    else ``[continual] stars``."""
    return settings.continual.stars if threshold is None else threshold


def is_accepted(settings: Settings, stars: int | None) -> bool:
    """Whether a rating accepts an answer for training (``[continual] stars`` or more)."""
    return accepts_answer(stars, praised=False, rated=True, threshold=accepted_threshold(settings))


@dataclass(frozen=True)
class AcceptedAnswers:
    """How many of a program's answers are accepted, and at which threshold."""

    program: str
    attempt_ids: tuple[int, ...]
    threshold: int

    @property
    def count(self) -> int:
        return len(self.attempt_ids)

    def __str__(self) -> str:
        return describe_accepted(self.count, self.threshold)


def accepted_answers(
    store: Store, settings: Settings, program: str, threshold: int | None = None
) -> AcceptedAnswers:
    """``program``'s accepted answers (:func:`minetune.train.datasets.accepted_answer_ids`) at
    :func:`accepted_threshold`: the one count every command reports."""
    from minetune.train.datasets import accepted_answer_ids

    stars = accepted_threshold(settings, threshold)
    return AcceptedAnswers(program, tuple(accepted_answer_ids(store, program, stars)), stars)


def note_accepted(store: Store, settings: Settings, program: str) -> None:
    """An answer was accepted: with ``[continual] enabled``, let the adapter's buffer check run in
    the background (it never blocks the caller; its errors are kept, not raised)."""
    if not settings.continual.enabled:
        return
    from minetune.app import jobs

    jobs.note_accepted(store, settings, program)


# -- feedback -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One stored feedback event and what learning did with it."""

    feedback_id: int
    attempt_id: int
    program: str
    stars: int | None
    report: LearningReport | None = None  # when learning ran inline
    queued: bool = False  # when learning was handed to the background

    @property
    def learning(self) -> str:
        """'learned' (inline), 'queued' (background) or 'off'."""
        return "queued" if self.queued else "learned" if self.report is not None else "off"


def rate(
    store: Store, learning: Learning, attempt_id: int, stars: object, critique: str | None = None
) -> Recorded:
    """Rate an answer 1-5 with an optional critique (committed on return), then learn from it.

    FeedbackError for bad stars; NotFoundError for an attempt that is not this user's;
    UnfinishedAnswerError for one that is not complete (nothing is stored)."""
    value = parse_stars(stars)
    critique = critique.strip() if critique and critique.strip() else None
    if critique is not None:
        check_length(critique, "The critique")
    program = answer_program(store, attempt_id)
    feedback = store.add_feedback(attempt_id, "explicit", stars=value, critique=critique)
    return _learned(
        store, learning, program, feedback.id, attempt_id, value, is_accepted(learning.settings, value)
    )


def critique(store: Store, learning: Learning, attempt_id: int, text: str) -> Recorded:
    """Record a critique without stars (given with a retry), then learn from it."""
    text = text.strip()
    check_length(text, "The critique")
    program = answer_program(store, attempt_id)
    feedback = store.add_feedback(attempt_id, "explicit", critique=text)
    return _learned(store, learning, program, feedback.id, attempt_id, None, False)


def praise(
    store: Store, learning: Learning, detector: PraiseDetector, attempt_id: int, message: str
) -> tuple[str, Recorded] | None:
    """If ``message`` praises the answer ``attempt_id``, record it (5 stars unless the answer was
    rated explicitly) and learn from it; returns (the praise phrase found, the feedback). Praise
    of an attempt that is not complete is not recorded (None)."""
    matched = detector.detect(message)
    if matched is None:
        return None
    program, status = attempt_state(store, attempt_id)
    if status != COMPLETE:
        return None
    attempt = store.attempt(attempt_id)
    rated = any(fb.kind == "explicit" and fb.stars is not None for fb in attempt.feedback)
    stars = None if rated else 5
    feedback = store.add_feedback(attempt_id, "praise", stars=stars, text=message)
    return matched, _learned(store, learning, program, feedback.id, attempt_id, stars, True)


def _learned(
    store: Store,
    learning: Learning,
    program: str,
    feedback_id: int,
    attempt_id: int,
    stars: int | None,
    accepted: bool,
) -> Recorded:
    report, queued = learning.after_feedback(store, program, feedback_id, accepted)
    return Recorded(feedback_id, attempt_id, program, stars, report, queued)


# -- answers ------------------------------------------------------------------------------------


def attempt_fields(
    version: ProgramVersion,
    model_spec: str,
    messages: list[Message],
    completion: Completion,
    latency_ms: float,
    demos: list[Demo],
    critique_used: str | None = None,
) -> dict[str, Any]:
    """The stored record of one attempt: the exact messages sent and what came back."""
    return {
        "demo_attempt_ids": [d.attempt_id for d in demos],
        "version_id": version.id,
        "model_spec": model_spec,
        "messages": messages,
        "response": completion.text,
        "critique_used": critique_used,
        "latency_ms": round(latency_ms, 3),
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
    }


def record_answer(
    store: Store,
    settings: Settings,
    version: ProgramVersion,
    conversation_id: int | None,
    user_message: str,
    fields: dict[str, Any],
    *,
    title: str,
    source: str,
    embedding: np.ndarray | None,
) -> ExchangeIds:
    """Store a new turn's first answer with its conversation (continued, or new with ``title``) and
    the message's embedding, in one transaction."""
    stored = None
    if embedding is not None:
        stored = Embedding(to_bytes(embedding), settings.embedder, int(embedding.shape[-1]))
    return record_exchange(
        store,
        version.program_id,
        conversation_id,
        user_message,
        title=title,
        source=source,
        embedding=stored,
        **fields,
    )
