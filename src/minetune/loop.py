"""The mine-tuning loop: respond, rate, retry with the critique folded in, notice praise.

``Session`` is the library entry point::

    from minetune import Session
    with Session.open(program="default", model="ollama:llama3.2") as chat:
        answer = chat.send("What's my cat's name?")
        chat.rate(2, "too long, keep it to one sentence")
        better = chat.retry()
        chat.rate(5)

Everything is stored as it happens: each attempt with the exact messages sent, each rating
committed before ``rate`` returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from threading import Event
from types import TracebackType
from typing import Any

from minetune.app import exchange
from minetune.app.exchange import MAX_MESSAGE_CHARS, Learning, Recorded
from minetune.config import Settings, load_settings
from minetune.errors import FeedbackError, MinetuneError, ModelError, NotFoundError
from minetune.feedback import PraiseDetector
from minetune.learn.reoptimize import Learner, LearningReport
from minetune.models import ChatModel, resolve_model
from minetune.models.base import Completion, Message
from minetune.models.spec import is_routed
from minetune.program import PriorAttempt, render_messages
from minetune.store import DEFAULT_PROGRAM, Store, effective_ratings
from minetune.store.browse import conversation_program
from minetune.store.schema import COMPLETE, Attempt, ProgramVersion

__all__ = ["MAX_MESSAGE_CHARS", "Response", "Session"]

DeltaCallback = Callable[[str], None]
# finish_reason of an answer the user stopped mid-stream (Session.send/retry with ``stop``).
STOPPED = "stopped"


@dataclass(frozen=True)
class Response:
    """One stored attempt at answering the user."""

    attempt_id: int
    turn_id: int
    number: int
    text: str
    model: str
    version: int
    latency_ms: float
    messages: list[Message]
    note: str | None = None  # e.g. how best-of-N picked this answer


class Session:
    """A conversation with one program, recording everything in the store."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        program: str = DEFAULT_PROGRAM,
        model: str | ChatModel | None = None,
        learning: Learning | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.program = store.program(program).name
        self.praise = PraiseDetector(settings.praise)
        self._model_arg = model
        self._model: ChatModel | None = model if model is not None and not isinstance(model, str) else None
        self._model_key: str | None = None  # the spec self._model was built from (None: given as is)
        self.conversation_id: int | None = None
        self.last: Response | None = None
        self.last_praise: str | None = None
        self.last_learning: LearningReport | None = None
        self.last_feedback: Recorded | None = None  # the newest feedback this session recorded
        self.learner = Learner(store, settings, self.program)
        # Inline by default; a server passes its own, which hands learning to its job runner.
        self.learning = learning or Learning(settings, self._reflector)

    @classmethod
    def open(
        cls,
        program: str = DEFAULT_PROGRAM,
        model: str | ChatModel | None = None,
        home: str | Path | None = None,
        **settings_overrides: object,
    ) -> Session:
        """Open the store under ``home`` (or MINETUNE_HOME) and start a session."""
        settings = load_settings(home, **settings_overrides)
        return cls(Store.open(settings), settings, program, model)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # -- model --------------------------------------------------------------------------

    @property
    def version(self) -> ProgramVersion:
        return self.store.active_version(self.program)

    def model(self, version: ProgramVersion | None = None) -> ChatModel:
        """The backend: an explicit model, else the version's spec, else MINETUNE_MODEL / auto-detect.
        Built again when the active version's spec changes (an adapter activated by a continual
        update or from another process is served from the next message on)."""
        if self._model is not None and self._model_key is None:
            return self._model  # a ChatModel given to the session
        version = version or self.version
        spec = self._model_arg if isinstance(self._model_arg, str) else version.model_spec
        chosen = spec or self.settings.model
        if self._model is not None and self._model_key == (chosen or ""):
            return self._model
        if chosen and is_routed(chosen):  # hf:DIR?route: each message goes to its domain's adapter
            from minetune.train.adapters import routed_model

            self._model = routed_model(self.store, self.settings, self.program, chosen)
        else:
            self._model = resolve_model(self.settings, spec)
        self._model_key = chosen or ""
        return self._model

    def _generate(
        self,
        version: ProgramVersion,
        messages: list[Message],
        on_delta: DeltaCallback | None,
        stop: Event | None = None,
    ) -> tuple[Completion, float]:
        """The model's answer to ``messages`` (streamed to ``on_delta`` when given). When ``stop``
        is set mid-stream the stream is closed and the text so far is the answer, with
        ``finish_reason`` :data:`STOPPED`: the user chose to stop there, so it is a complete
        answer that can be rated (unlike a stream cut by a failure, which is ``interrupted``)."""
        model = self.model(version)
        start = time.perf_counter()
        temperature, max_tokens = self.settings.temperature, self.settings.max_tokens
        if on_delta is None:
            completion = model.complete(messages, temperature=temperature, max_tokens=max_tokens)
        else:
            stream = model.stream(messages, temperature=temperature, max_tokens=max_tokens)
            parts: list[str] = []
            for delta in stream:
                parts.append(delta)
                on_delta(delta)
                if stop is not None and stop.is_set():
                    stream.close()
                    break
            if stream.completion is None:  # stopped before the end
                completion = Completion(text="".join(parts), model=model.spec, finish_reason=STOPPED)
            else:
                completion = stream.completion
        return completion, (time.perf_counter() - start) * 1000

    @staticmethod
    def _fields(completion: Completion, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` of a stored attempt, marked ``extra.stopped`` when the user stopped it."""
        if completion.finish_reason == STOPPED:
            fields["extra"] = {"finish_reason": STOPPED}
        return fields

    def _response(self, attempt: Attempt, version: ProgramVersion, note: str | None = None) -> Response:
        self.last = Response(
            attempt_id=attempt.id,
            turn_id=attempt.turn_id,
            number=attempt.number,
            text=attempt.response,
            model=attempt.model_spec,
            version=version.number,
            latency_ms=attempt.latency_ms,
            messages=list(attempt.messages),
            note=note,
        )
        return self.last

    def new_conversation(self) -> None:
        """Start a new conversation; the next message has no history."""
        self.conversation_id = None
        self.last = None

    def resume(self, conversation_id: int, attempt_id: int | None = None) -> None:
        """Continue a stored conversation of this program: the next message gets its history, and
        praise, ``rate`` and ``retry`` apply to ``attempt_id`` (default: its latest answer)."""
        if conversation_program(self.store, conversation_id) != self.program:
            raise NotFoundError(f"Program {self.program!r} has no conversation {conversation_id}.")
        turn_ids = self.store.conversation_turn_ids(conversation_id)
        self.conversation_id, self.last = conversation_id, None
        if attempt_id is None:
            attempts = self.store.turn(max(turn_ids)).attempts if turn_ids else []
            if not attempts:
                return
            attempt = attempts[-1]
        else:
            attempt = self.store.attempt(attempt_id)
            if attempt.turn_id not in turn_ids:
                raise NotFoundError(f"Conversation {conversation_id} has no attempt {attempt_id}.")
        numbers = {v.id: v.number for v in self.store.versions(self.program)}
        self.last = Response(
            attempt_id=attempt.id,
            turn_id=attempt.turn_id,
            number=attempt.number,
            text=attempt.response,
            model=attempt.model_spec,
            version=numbers.get(attempt.version_id or 0, 0),
            latency_ms=attempt.latency_ms,
            messages=list(attempt.messages),
        )

    # -- the loop -----------------------------------------------------------------------

    def send(
        self,
        message: str,
        on_delta: DeltaCallback | None = None,
        best_of: int = 1,
        stop: Event | None = None,
    ) -> Response:
        """Answer a new user message. Praise in it is recorded on the previous answer first.
        Setting ``stop`` while the answer streams keeps the text so far as the answer.

        With ``best_of`` > 1, that many answers are sampled and the personal judge picks one
        (the first sample while the judge has too little data); the note says which.
        """
        if not message or not message.strip():
            raise MinetuneError("The message is empty; type something to send.")
        if len(message) > MAX_MESSAGE_CHARS:
            raise MinetuneError(
                f"The message is {len(message):,} characters; the limit is {MAX_MESSAGE_CHARS:,}."
            )
        self.last_praise = self._note_praise(message)
        version = self.version
        history: list[tuple[str, str]] = []
        earlier_turns: list[int] = []
        if self.conversation_id is not None:
            history = self.store.history(self.conversation_id)
            earlier_turns = self.store.conversation_turn_ids(self.conversation_id)
        demos, embedding = self.learner.demos_for(message, earlier_turns)
        messages = render_messages(version, message, history, demos=demos)
        note = None
        if best_of > 1:
            completion, latency, note = self._best_of(version, message, messages, best_of)
            if on_delta is not None:
                on_delta(completion.text)
        else:
            completion, latency = self._generate(version, messages, on_delta, stop)
        spec = self.model(version).spec
        fields = self._fields(
            completion, exchange.attempt_fields(version, spec, messages, completion, latency, demos)
        )
        ids = exchange.record_answer(
            self.store,
            self.settings,
            version,
            self.conversation_id,
            message,
            fields,
            title=exchange.title_of(message),
            source="chat",
            embedding=embedding,
        )
        self.conversation_id = ids.conversation_id
        return self._response(self.store.attempt(ids.attempt_id), version, note)

    def _best_of(
        self, version: ProgramVersion, message: str, messages: list[Message], n: int
    ) -> tuple[Completion, float, str]:
        samples = [self._generate(version, messages, None) for _ in range(n)]
        order, judged = self.learner.rank(message, [c.text for c, _ in samples])
        completion, _ = samples[order[0]]
        latency = sum(ms for _, ms in samples)
        return completion, latency, f"best of {n}: picked sample {order[0] + 1} · {judged}"

    def _note_praise(self, message: str) -> str | None:
        """If ``message`` praises the previous answer, record it (see :func:`exchange.praise`)."""
        if self.last is None:
            return None
        found = exchange.praise(self.store, self.learning, self.praise, self.last.attempt_id, message)
        if found is None:
            return None
        self._recorded(found[1])
        return found[0]

    def _reflector(self, _store: Store, _program: str) -> ChatModel | None:
        """The model that distils critiques into rules: ``reflection_model``, else this session's;
        None when neither can be reached (the demos are still updated)."""
        spec = self.settings.reflection_model
        try:
            return resolve_model(self.settings, spec) if spec else self.model()
        except ModelError:
            return None

    def _recorded(self, recorded: Recorded) -> Recorded:
        self.last_feedback = recorded
        if recorded.report is not None:
            self.last_learning = recorded.report
        return recorded

    def learn(self, feedback_id: int) -> LearningReport | None:
        """Re-optimize after one stored feedback event (demos; a critique becomes a lesson)."""
        return exchange.learn(
            self.store, self.settings, self.program, feedback_id, self._reflector(self.store, self.program)
        )

    def _target(self, attempt_id: int | None) -> int:
        if attempt_id is not None:
            return attempt_id
        if self.last is None:
            raise FeedbackError("There is no response to rate yet; send a message first.")
        return self.last.attempt_id

    def rate(self, stars: int | str, critique: str | None = None, attempt_id: int | None = None) -> int:
        """Rate an answer (default: the latest) 1-5 with an optional critique; returns the stars."""
        recorded = exchange.rate(self.store, self.learning, self._target(attempt_id), stars, critique)
        self._recorded(recorded)
        assert recorded.stars is not None
        return recorded.stars

    def retry(
        self, critique: str | None = None, on_delta: DeltaCallback | None = None, stop: Event | None = None
    ) -> Response:
        """Answer the latest message again with every earlier attempt's rating and critique folded in.

        A critique given here is recorded on the latest answer first. Each retry is a fresh sample.
        """
        if self.last is None:
            raise FeedbackError("There is nothing to retry yet; send a message first.")
        turn = self.store.turn(self.last.turn_id)
        if len(turn.attempts) >= self.settings.retry_limit:
            raise MinetuneError(
                f"This message already has {len(turn.attempts)} attempts, the retry limit "
                f"(set retry_limit in config.toml or MINETUNE_RETRY_LIMIT to allow more)."
            )
        if critique and critique.strip():
            self._recorded(exchange.critique(self.store, self.learning, self.last.attempt_id, critique))
            turn = self.store.turn(self.last.turn_id)
        priors = _prior_attempts(turn.attempts)
        version = self.version
        history = self.store.history(turn.conversation_id, before_turn=turn.id)
        turns = self.store.conversation_turn_ids(turn.conversation_id)
        demos, _ = self.learner.demos_for(turn.user_message, turns)
        messages = render_messages(version, turn.user_message, history, priors, demos)
        completion, latency = self._generate(version, messages, on_delta, stop)
        latest_critique = priors[-1].critique if priors else None
        spec = self.model(version).spec
        fields = self._fields(
            completion,
            exchange.attempt_fields(version, spec, messages, completion, latency, demos, latest_critique),
        )
        attempt = self.store.add_attempt(turn.id, **fields)
        return self._response(attempt, version)

    def until_five(
        self,
        message: str,
        judge: Callable[[Response], tuple[int, str | None]],
        on_delta: DeltaCallback | None = None,
    ) -> list[Response]:
        """Send ``message`` and retry until ``judge`` gives 5 stars or the retry limit is reached."""
        responses = [self.send(message, on_delta)]
        while True:
            stars, critique = judge(responses[-1])
            if self.rate(stars, critique) == 5 or len(responses) >= self.settings.retry_limit:
                return responses
            responses.append(self.retry(on_delta=on_delta))


def _prior_attempts(attempts: list[Attempt]) -> list[PriorAttempt]:
    """Each earlier complete attempt with its effective stars and the critiques it received (a
    half answer, streaming or interrupted, is not shown to the model as an answer)."""
    priors = []
    for attempt in attempts:
        if attempt.status != COMPLETE:
            continue
        stars = effective_ratings((fb.attempt_id, fb.kind, fb.stars) for fb in attempt.feedback)
        critiques = [fb.critique for fb in attempt.feedback if fb.critique]
        priors.append(PriorAttempt(attempt.response, stars.get(attempt.id), "; ".join(critiques) or None))
    return priors
