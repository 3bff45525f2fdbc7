"""The learning proxy's core: answer OpenAI-format chat requests with a program and capture them.

``minetune serve`` exposes this at ``/v1`` (:mod:`minetune.server.proxy`); nothing here knows
about HTTP. A request is handled like :meth:`minetune.loop.Session.send`:

- The program's active version is rendered (instructions, lessons and the demos retrieved for
  the new message, exactly as a Session does) into the system message; the client's own leading
  system messages follow it inside that message. The client owns the history: its earlier
  user/assistant messages are passed through as sent.
- The exact messages sent upstream are stored as a conversation, turn and attempt. When the
  client's last assistant message is the text of a stored attempt of this user's program, the
  turn continues that attempt's conversation; otherwise a new conversation starts.
- Praise in the new message (the :class:`~minetune.feedback.PraiseDetector` rules) about that
  previous answer is recorded on it: 5 stars unless the user rated it explicitly.

Response ids are ``mt-<attempt id>`` (for example ``mt-42``); :func:`record_feedback` takes one to
rate that answer. Praise, ratings and the learning after them go through :mod:`minetune.app.exchange`,
exactly as for :class:`~minetune.loop.Session`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from minetune.app import exchange
from minetune.app.exchange import Learning, MessageTooLongError, Recorded
from minetune.app.jobs import this_owner
from minetune.config import Settings
from minetune.errors import MinetuneError, NotFoundError
from minetune.feedback import PraiseDetector
from minetune.learn.demos import Demo
from minetune.learn.reoptimize import Learner
from minetune.models.base import ChatModel, Completion, CompletionStream, Message
from minetune.program import render_system_prompt
from minetune.store import DEFAULT_PROGRAM, Store
from minetune.store.exchanges import (
    STREAMING,
    ExchangeIds,
    find_answer,
    finish_attempt,
    interrupt_attempt,
)
from minetune.store.schema import ProgramVersion

__all__ = ["Answer", "AnswerStream", "Gateway", "MessageTooLongError", "Prepared", "record_feedback"]

log = logging.getLogger(__name__)

RESPONSE_ID_PREFIX = "mt-"
MODEL_PREFIX = "minetune/"
SOURCE = "proxy"  # conversations.source of what the proxy stores
_RESPONSE_ID = re.compile(r"mt-(\d{1,18})")
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def program_for_model(model: str | None) -> str:
    """``minetune/<program>`` names a program; ``minetune``, nothing or an upstream model name
    (``gpt-4o-mini``) means the ``default`` program."""
    name = (model or "").strip()
    if name.startswith(MODEL_PREFIX):
        return name[len(MODEL_PREFIX) :].strip() or DEFAULT_PROGRAM
    return DEFAULT_PROGRAM


def model_name(program: str) -> str:
    """The model name a client uses for ``program``: ``minetune/<program>``."""
    return MODEL_PREFIX + program


def response_id(attempt_id: int) -> str:
    """The response id of an attempt: ``mt-<attempt id>``."""
    return f"{RESPONSE_ID_PREFIX}{attempt_id}"


def _unknown_response(rid: str) -> NotFoundError:
    shown = rid if len(rid) <= 60 else rid[:59] + "…"
    return NotFoundError(
        f"Unknown response id {shown!r}: expected the id of one of your responses (mt-<number>)."
    )


def attempt_id_of(rid: str) -> int:
    """The attempt id inside a response id; NotFoundError when it is not one."""
    match = _RESPONSE_ID.fullmatch(rid.strip())
    if match is None:
        raise _unknown_response(rid)
    return int(match.group(1))


def _text(content: Any, position: int) -> str:
    """A message's content as text: a string, or the text parts of a content list joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            raise MinetuneError(
                f"Message {position} has a {kind or 'malformed'!s} content part; only text is supported."
            )
        texts.append(part["text"])
    return "\n".join(texts)


def normalize_messages(raw: Sequence[Mapping[str, Any]]) -> list[Message]:
    """Client messages as plain ``{"role", "content"}`` text messages (``developer`` counts as
    ``system``); raises a clear error for an unsupported role or part, or an over-long message."""
    messages: list[Message] = []
    for position, item in enumerate(raw, start=1):
        role = _ROLES.get(str(item.get("role")))
        if role is None:
            raise MinetuneError(
                f"Message {position} has role {item.get('role')!r}; expected system, user or assistant."
            )
        text = _text(item.get("content"), position)
        exchange.check_length(text, f"Message {position}")
        messages.append({"role": role, "content": text})
    if not messages or messages[-1]["role"] != "user":
        raise MinetuneError("The last message must be the user's message to answer.")
    if not messages[-1]["content"].strip():
        raise MinetuneError("The user's message is empty; send some text.")
    return messages


@dataclass(frozen=True)
class Prepared:
    """A request rendered for upstream, before the model is called."""

    program: str
    version: ProgramVersion
    messages: list[Message]  # exactly what goes upstream
    user_message: str
    title: str
    demos: list[Demo]
    embedding: np.ndarray | None
    conversation_id: int | None  # the stored conversation this turn continues, if any
    previous_attempt_id: int | None  # the stored answer the client quoted as its last assistant message
    praise: str | None = None  # the praise phrase found in the message, when it praised that answer
    praise_feedback: Recorded | None = None


@dataclass(frozen=True)
class Answer:
    """A stored answer."""

    attempt_id: int
    turn_id: int
    conversation_id: int
    text: str
    model_spec: str
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None

    @property
    def response_id(self) -> str:
        return response_id(self.attempt_id)


class Gateway:
    """Answers chat requests for any user's :class:`Store`; one per server (holds the praise rules)."""

    def __init__(self, settings: Settings, learning: Learning) -> None:
        self.settings = settings
        self.learning = learning
        self.praise = PraiseDetector(settings.praise)
        self.recent = RecentAnswers()

    def _find_answer(self, store: Store, program_id: int, text: str) -> tuple[int, int] | None:
        """The stored answer a client quotes: a recent one is checked by id, else the store is searched."""
        cached = self.recent.get(store.user_id, program_id, text)
        found = find_answer(store, program_id, text, cached) if cached is not None else None
        return found or find_answer(store, program_id, text)

    def remember(self, store: Store, program_id: int, answer: Answer) -> None:
        """Note an answer, so that the client quoting it back next turn is found by id."""
        self.recent.put(store.user_id, program_id, answer.text, answer.attempt_id)

    def prepare(self, store: Store, program: str, raw_messages: Sequence[Mapping[str, Any]]) -> Prepared:
        """Validate and render a request; records praise of the previous answer (nothing else is
        stored until the answer arrives). NotFoundError for an unknown program."""
        client = normalize_messages(raw_messages)
        version = store.active_version(program)
        user_message = client[-1]["content"]
        previous = None
        quoted = next((m["content"] for m in reversed(client) if m["role"] == "assistant"), "")
        if quoted.strip():
            previous = self._find_answer(store, version.program_id, quoted)
        praise, praise_feedback = None, None
        if previous is not None:
            found = exchange.praise(store, self.learning, self.praise, previous[0], user_message)
            if found is not None:
                praise, praise_feedback = found
        earlier_turns = store.conversation_turn_ids(previous[1]) if previous is not None else []
        demos, embedding = Learner(store, self.settings, program).demos_for(user_message, earlier_turns)
        first_user = next(m["content"] for m in client if m["role"] == "user")
        return Prepared(
            program=program,
            version=version,
            messages=_merge_system(render_system_prompt(version, demos), client),
            user_message=user_message,
            title=exchange.title_of(first_user),
            demos=demos,
            embedding=embedding,
            conversation_id=previous[1] if previous is not None else None,
            previous_attempt_id=previous[0] if previous is not None else None,
            praise=praise,
            praise_feedback=praise_feedback,
        )

    def complete(
        self,
        store: Store,
        prepared: Prepared,
        model: ChatModel,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Answer:
        """Ask ``model`` and store the answer; upstream errors (ModelError) store nothing."""
        start = time.perf_counter()
        completion = model.complete(prepared.messages, **self._sampling(temperature, max_tokens))
        latency = (time.perf_counter() - start) * 1000
        ids = _record(store, self.settings, prepared, model.spec, completion, latency)
        answer = _answer(ids, model.spec, completion, latency)
        self.remember(store, prepared.version.program_id, answer)
        return answer

    def stream(
        self,
        store: Store,
        prepared: Prepared,
        model: ChatModel,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AnswerStream:
        """Start streaming from ``model``; the attempt is stored (``streaming``, owned by this
        process) before the first delta so its id is known. Errors connecting upstream (ModelError)
        raise here and store nothing. Iterate the stream to the end, or close it."""
        start = time.perf_counter()
        upstream = model.stream(prepared.messages, **self._sampling(temperature, max_tokens))
        pending = Completion(text="", model=model.spec)
        try:
            ids = _record(
                store,
                self.settings,
                prepared,
                model.spec,
                pending,
                0.0,
                status=STREAMING,
                stream_owner=this_owner(),
            )
        except BaseException:
            upstream.close()
            raise
        return AnswerStream(self, store, prepared, ids, upstream, model.spec, start)

    def _sampling(self, temperature: float | None, max_tokens: int | None) -> dict[str, Any]:
        return {
            "temperature": self.settings.temperature if temperature is None else temperature,
            "max_tokens": self.settings.max_tokens if max_tokens is None else max_tokens,
        }


class RecentAnswers:
    """Attempt ids of recent answers by user, program and text (hashed): a bounded LRU, so the
    next turn of a conversation finds its previous answer without searching the store."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._ids: OrderedDict[tuple[int, int, bytes], int] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(user_id: int, program_id: int, text: str) -> tuple[int, int, bytes]:
        return user_id, program_id, hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

    def get(self, user_id: int, program_id: int, text: str) -> int | None:
        key = self._key(user_id, program_id, text)
        with self._lock:
            found = self._ids.get(key)
            if found is not None:
                self._ids.move_to_end(key)
            return found

    def put(self, user_id: int, program_id: int, text: str, attempt_id: int) -> None:
        key = self._key(user_id, program_id, text)
        with self._lock:
            self._ids[key] = attempt_id
            self._ids.move_to_end(key)
            while len(self._ids) > self.size:
                self._ids.popitem(last=False)


class AnswerStream:
    """Iterate for the text deltas of a streamed answer. Its attempt is already stored (see
    ``response_id``) as ``streaming``; it becomes ``complete`` only when upstream finished (a
    ModelError for a stream that ends early), and ``interrupted``, keeping the text that arrived,
    when the stream fails or is closed first (:meth:`close`: the client went away). Either way the
    attempt is settled exactly once; one left ``streaming`` by a killed process is marked
    ``interrupted`` at the next start-up (:func:`minetune.app.exchange.recover_streams`)."""

    def __init__(
        self,
        gateway: Gateway,
        store: Store,
        prepared: Prepared,
        ids: ExchangeIds,
        upstream: CompletionStream,
        model_spec: str,
        start: float,
    ) -> None:
        self._gateway = gateway
        self._store = store
        self._prepared = prepared
        self.ids = ids
        self._upstream = upstream
        self._model_spec = model_spec
        self._start = start
        self._parts: list[str] = []
        self._deltas: Iterator[str] | None = None
        self._settled = False
        self._lock = threading.Lock()
        self.answer: Answer | None = None
        self.interrupted = False

    @property
    def response_id(self) -> str:
        return response_id(self.ids.attempt_id)

    def __iter__(self) -> Iterator[str]:
        if self._deltas is None:
            self._deltas = self._run()
        return self._deltas

    def _run(self) -> Iterator[str]:
        try:
            for delta in self._upstream:
                self._parts.append(delta)
                yield delta
        except BaseException:  # upstream failed, or the generator was closed (GeneratorExit)
            self._interrupt()
            raise
        completion = self._upstream.completion
        assert completion is not None
        self._settle(completion)

    def close(self) -> None:
        """End the stream now, from any thread once no delta is being read: upstream is closed
        and the attempt, unless it completed, is stored ``interrupted``. Idempotent."""
        deltas = self._deltas
        if deltas is not None and hasattr(deltas, "close"):
            try:
                deltas.close()  # GeneratorExit inside _run: interrupts and closes upstream
            except ValueError:  # still executing in another thread; settle without it
                log.warning("Stream %s closed while reading upstream", self.response_id)
        self._interrupt()

    def _interrupt(self) -> None:
        try:
            self._upstream.close()
        except Exception:  # noqa: BLE001 - a backend failing to close must not hide the interruption
            log.debug("Closing upstream of %s failed", self.response_id, exc_info=True)
        self._settle(None)

    def _settle(self, completion: Completion | None) -> None:
        """Store the outcome once: complete with ``completion``, else interrupted with the text so far."""
        with self._lock:
            if self._settled:
                return
            self._settled = True
        latency = (time.perf_counter() - self._start) * 1000
        if completion is None:
            self.interrupted = True
            try:
                interrupt_attempt(
                    self._store,
                    self.ids.attempt_id,
                    response="".join(self._parts),
                    latency_ms=round(latency, 3),
                )
            except Exception:  # the row stays 'streaming': never an answer, recovered at start-up
                log.exception("Could not mark stream %s interrupted", self.response_id)
            return
        fields = _attempt_fields(self._prepared, self._model_spec, completion, latency)
        finish_attempt(
            self._store,
            self.ids.attempt_id,
            **{k: fields[k] for k in ("response", "latency_ms", "prompt_tokens", "completion_tokens")},
        )
        self.answer = _answer(self.ids, self._model_spec, completion, latency)
        self._gateway.remember(self._store, self._prepared.version.program_id, self.answer)


def record_feedback(
    store: Store, learning: Learning, rid: str, stars: object, critique: str | None = None
) -> Recorded:
    """Rate the answer with response id ``rid`` (1-5 stars, optional critique) through
    :func:`minetune.app.exchange.rate`: committed on return, then learned from as everywhere else.

    FeedbackError for bad stars; NotFoundError, with the same message, for an id that does not
    exist and for one that belongs to another user.
    """
    attempt_id = attempt_id_of(rid)
    try:
        return exchange.rate(store, learning, attempt_id, stars, critique)
    except NotFoundError:
        raise _unknown_response(rid) from None


def _merge_system(program_prompt: str, client: list[Message]) -> list[Message]:
    """The program prompt first, then the client's leading system messages, as one system
    message; the rest of the client's messages follow unchanged."""
    lead = 0
    while lead < len(client) and client[lead]["role"] == "system":
        lead += 1
    parts = [program_prompt] + [m["content"] for m in client[:lead]]
    system = "\n\n".join(p for p in parts if p.strip())
    head: list[Message] = [{"role": "system", "content": system}] if system else []
    return head + client[lead:]


def _record(
    store: Store,
    settings: Settings,
    prepared: Prepared,
    model_spec: str,
    completion: Completion,
    latency: float,
    **extra: Any,
) -> ExchangeIds:
    """Store the exchange (its conversation and turn as needed, and the message's embedding) with
    ``completion`` as the attempt (``extra``: more attempt columns), in one transaction."""
    return exchange.record_answer(
        store,
        settings,
        prepared.version,
        prepared.conversation_id,
        prepared.user_message,
        _attempt_fields(prepared, model_spec, completion, latency) | extra,
        title=prepared.title,
        source=SOURCE,
        embedding=prepared.embedding,
    )


def _attempt_fields(
    prepared: Prepared, model_spec: str, completion: Completion, latency: float
) -> dict[str, Any]:
    return exchange.attempt_fields(
        prepared.version, model_spec, prepared.messages, completion, latency, prepared.demos
    )


def _answer(ids: ExchangeIds, model_spec: str, completion: Completion, latency: float) -> Answer:
    return Answer(
        attempt_id=ids.attempt_id,
        turn_id=ids.turn_id,
        conversation_id=ids.conversation_id,
        text=completion.text,
        model_spec=model_spec,
        latency_ms=round(latency, 3),
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        finish_reason=completion.finish_reason,
    )
