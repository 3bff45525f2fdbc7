"""The learning proxy's core: answer OpenAI-format chat requests with a program and capture them.

``minetune serve`` exposes this at ``/v1`` (:mod:`minetune.server.proxy`); nothing here knows
about HTTP. A request is handled like :meth:`minetune.loop.Session.send`:

- The program's active version is rendered (instructions, lessons and the demos retrieved for
  the new message, exactly as a Session does) into the system message; the client's own leading
  system messages follow it inside that message. The client owns the history: its earlier
  user/assistant messages are passed through as sent.
- The exact messages sent upstream are stored as a conversation, turn and attempt. When the
  client's last assistant message is the text of a stored attempt of this user's program, or
  carries that attempt's ``tool_calls`` (a tool-call follow-up: the ``tool`` results come after
  it), the turn continues that attempt's conversation; otherwise a new conversation starts.
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
from typing import TYPE_CHECKING, Any

from minetune.app import exchange
from minetune.app.exchange import Learning, MessageTooLongError, Recorded
from minetune.app.jobs import this_owner
from minetune.config import Settings
from minetune.errors import MinetuneError, ModelError, NotFoundError
from minetune.feedback import PraiseDetector
from minetune.learn.demos import Demo
from minetune.learn.reoptimize import Learner
from minetune.models.base import ChatModel, Completion, CompletionStream, Message, UnsupportedFieldError
from minetune.program import render_system_prompt
from minetune.store import DEFAULT_PROGRAM, Store
from minetune.store.exchanges import (
    STREAMING,
    ExchangeIds,
    find_answer,
    finish_attempt,
    interrupt_attempt,
)
from minetune.store.request_store import RequestStore
from minetune.store.schema import ProgramVersion
from minetune.store.tool_calls import call_signature, find_tool_call_answer

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ChunkAnswerStream",
    "Gateway",
    "MessageTooLongError",
    "Prepared",
    "ProxyAnswer",
    "client_messages",
    "record_feedback",
    "stored_message",
]

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


PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
_CLIENT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _text(content: Any, position: int) -> str:
    """A message's text: a string, or its text parts joined (image, audio and file parts are
    kept in the message for upstream, and have no text)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, Sequence):
        raise MinetuneError(f"Message {position} has content that is neither text nor a list of parts.")
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind not in PART_TYPES:
            raise MinetuneError(
                f"Message {position} has a {kind or 'malformed'!s} content part; expected one of "
                + ", ".join(sorted(PART_TYPES)) + "."
            )
        if kind in ("text", "refusal"):
            value = part.get(kind)
            if not isinstance(value, str):
                raise MinetuneError(f"Message {position} has a {kind} part without {kind}.")
            texts.append(value)
    return "\n".join(texts)


def _parts_summary(content: Any) -> str:
    """A user message with no text, described by its parts (``[image_url]``) for the turn's text."""
    if not isinstance(content, Sequence) or isinstance(content, str):
        return ""
    kinds = [str(p.get("type")) for p in content if isinstance(p, Mapping)]
    return " ".join(f"[{k}]" for k in kinds)


def client_messages(raw: Sequence[Mapping[str, Any]]) -> tuple[list[Message], list[dict[str, Any]]]:
    """Validate a client's messages: (their text, one ``{"role", "content"}`` per message, roles as
    sent; the messages themselves as plain dicts, every field kept for upstream). The last message
    is the user's (or a ``tool`` result the model is to answer); clear errors for the rest."""
    texts: list[Message] = []
    kept: list[dict[str, Any]] = []
    for position, item in enumerate(raw, start=1):
        role = str(item.get("role"))
        if role not in _CLIENT_ROLES:
            raise MinetuneError(
                f"Message {position} has role {item.get('role')!r}; expected system, developer, user, "
                "assistant or tool."
            )
        text = _text(item.get("content"), position)
        exchange.check_length(text, f"Message {position}")
        texts.append({"role": role, "content": text})
        kept.append({k: v for k, v in item.items() if v is not None or k == "content"})
    if not texts or texts[-1]["role"] not in ("user", "tool", "function"):
        raise MinetuneError("The last message must be the user's message (or a tool result) to answer.")
    last = raw[-1]
    if texts[-1]["role"] == "user" and not texts[-1]["content"].strip() and not _parts_summary(
        last.get("content")
    ):
        raise MinetuneError("The user's message is empty; send some text.")
    return texts, kept


def normalize_messages(raw: Sequence[Mapping[str, Any]]) -> list[Message]:
    """Client messages as plain ``{"role", "content"}`` text messages (``developer`` counts as
    ``system``); raises a clear error for an unsupported role or part, or an over-long message."""
    texts, _ = client_messages(raw)
    return [{"role": _ROLES.get(m["role"], m["role"]), "content": m["content"]} for m in texts]


INLINE_REF = "minetune:sha256:"


def _reference(data: str) -> str:
    """What is stored for inline base64 data: its SHA-256 and size, never the data."""
    digest = hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{INLINE_REF}{digest};chars={len(data)}"


def stored_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message as stored with its attempt: inline data (``data:`` image URLs, ``input_audio``
    data, ``file_data``) replaced by a reference (:data:`INLINE_REF` + SHA-256 and length) so that
    no base64 blob reaches the database; remote image URLs and everything else are kept as sent."""
    content = message.get("content")
    if not isinstance(content, list):
        return dict(message)
    parts: list[Any] = []
    for part in content:
        if not isinstance(part, Mapping):
            parts.append(part)
            continue
        part = dict(part)
        kind = part.get("type")
        if kind == "image_url" and isinstance(part.get("image_url"), Mapping):
            image = dict(part["image_url"])
            url = image.get("url")
            if isinstance(url, str) and url.startswith("data:"):
                head = url.split(",", 1)[0]
                image["url"] = f"{head},{_reference(url)}"
            part["image_url"] = image
        elif kind == "input_audio" and isinstance(part.get("input_audio"), Mapping):
            audio = dict(part["input_audio"])
            if isinstance(audio.get("data"), str):
                audio["data"] = _reference(audio["data"])
            part["input_audio"] = audio
        elif kind == "file" and isinstance(part.get("file"), Mapping):
            file = dict(part["file"])
            if isinstance(file.get("file_data"), str):
                file["file_data"] = _reference(file["file_data"])
            part["file"] = file
        parts.append(part)
    return dict(message) | {"content": parts}


@dataclass(frozen=True)
class Prepared:
    """A request rendered for upstream, before the model is called."""

    program: str
    version: ProgramVersion
    messages: list[Any]  # exactly what goes upstream (plain text messages, or the client's own shapes)
    user_message: str
    title: str
    demos: list[Demo]
    embedding: np.ndarray | None
    conversation_id: int | None  # the stored conversation this turn continues, if any
    previous_attempt_id: int | None  # the stored answer the client quoted as its last assistant message
    praise: str | None = None  # the praise phrase found in the message, when it praised that answer
    praise_feedback: Recorded | None = None
    plain: bool = True  # every message is plain text in system/user/assistant roles

    @property
    def stored_messages(self) -> list[Any]:
        """The messages as stored: inline data replaced by references (:func:`stored_message`)."""
        return self.messages if self.plain else [stored_message(m) for m in self.messages]


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

    def _find_tool_call_answer(
        self, store: Store, program_id: int, client: list[Message], kept: list[dict[str, Any]]
    ) -> tuple[int, int] | None:
        """The stored answer whose tool calls the client sends back (its last assistant message's
        ``tool_calls``): a recent one by its call ids, else the store is searched by the calls, the
        messages before them breaking ties."""
        index = next((i for i in range(len(kept) - 1, -1, -1) if kept[i].get("role") == "assistant"), None)
        if index is None or not kept[index].get("tool_calls"):
            return None
        calls = kept[index]["tool_calls"]
        lead = 0
        while lead < len(client) and client[lead]["role"] == "system":
            lead += 1
        history = [stored_message(m) for m in kept[lead:index]]
        key = _tool_calls_key(calls)
        cached = self.recent.get(store.user_id, program_id, key) if key else None
        found = find_tool_call_answer(store, program_id, calls, history, cached) if cached else None
        return found or find_tool_call_answer(store, program_id, calls, history)

    def remember(
        self, store: Store, prepared: Prepared, attempt_id: int, text: str, extra: Mapping[str, Any] | None
    ) -> None:
        """Note a completed answer in :attr:`recent`, by its text and by its tool calls' ids."""
        program_id = prepared.version.program_id
        if text:
            self.recent.put(store.user_id, program_id, text, attempt_id)
        key = _tool_calls_key((extra or {}).get("tool_calls"))
        if key:
            self.recent.put(store.user_id, program_id, key, attempt_id)

    def prepare(self, store: Store, program: str, raw_messages: Sequence[Mapping[str, Any]]) -> Prepared:
        """Validate and render a request; records praise of the previous answer (nothing else is
        stored until the answer arrives). NotFoundError for an unknown program."""
        texts, kept = client_messages(raw_messages)
        store = RequestStore(store)  # the program and its active version read once per request
        client: list[Message] = [
            {"role": _ROLES.get(m["role"], m["role"]), "content": m["content"]} for m in texts
        ]
        plain = all(
            m["role"] in _ROLES and set(k) <= {"role", "content"} and isinstance(k.get("content"), str)
            for m, k in zip(texts, kept, strict=True)
        )
        version = store.active_version(program)
        last_user = next((i for i in range(len(client) - 1, -1, -1) if client[i]["role"] == "user"), None)
        user_message = (
            (client[last_user]["content"] or _parts_summary(kept[last_user].get("content")))
            if last_user is not None
            else client[-1]["content"]
        )
        previous = None
        quoted = next((m["content"] for m in reversed(client) if m["role"] == "assistant"), "")
        if quoted.strip():
            previous = self._find_answer(store, version.program_id, quoted)
        if previous is None:
            previous = self._find_tool_call_answer(store, version.program_id, client, kept)
        praise, praise_feedback = None, None
        if previous is not None and client[-1]["role"] == "user":  # tool results are not the user's words
            found = exchange.praise(store, self.learning, self.praise, previous[0], user_message)
            if found is not None:
                praise, praise_feedback = found
        earlier_turns = store.conversation_turn_ids(previous[1]) if previous is not None else []
        demos, embedding = Learner(store, self.settings, program).demos_for(user_message, earlier_turns)
        first_user = next((m["content"] for m in client if m["role"] == "user"), user_message)
        prompt = render_system_prompt(version, demos)
        return Prepared(
            program=program,
            version=version,
            messages=_merge_system(prompt, client) if plain else _merge_system_raw(prompt, client, kept),
            user_message=user_message,
            title=exchange.title_of(first_user),
            demos=demos,
            embedding=embedding,
            conversation_id=previous[1] if previous is not None else None,
            previous_attempt_id=previous[0] if previous is not None else None,
            praise=praise,
            praise_feedback=praise_feedback,
            plain=plain,
        )

    def chat_completion(
        self, store: Store, prepared: Prepared, model: ChatModel, params: Mapping[str, Any]
    ) -> ProxyAnswer:
        """The raw pass-through: ``params`` (every request field but model/messages/stream) reach
        the upstream unchanged; the upstream's ``chat.completion`` comes back as sent, each of its
        choices stored as an attempt of one turn (one transaction)."""
        return _chat_completion(self, store, prepared, model, params)

    def chat_completion_stream(
        self, store: Store, prepared: Prepared, model: ChatModel, params: Mapping[str, Any]
    ) -> ChunkAnswerStream:
        """The raw pass-through, streamed: iterate the result for the upstream's chunk dicts."""
        return _chat_completion_stream(self, store, prepared, model, params)


def _tool_calls_key(calls: Any) -> str | None:
    """The :class:`RecentAnswers` key of an answer's tool calls (by their ids; None without ids)."""
    ids = [c[0] for c in call_signature(calls)]
    return "\x00tool_calls\x00" + "\x00".join(ids) if ids and all(ids) else None


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


def _merge_system_raw(
    program_prompt: str, client: list[Message], kept: list[dict[str, Any]]
) -> list[Any]:
    """Like :func:`_merge_system` for messages kept as the client sent them: the program prompt
    and the client's leading system/developer messages' text become one system message; every
    other message follows exactly as sent."""
    lead = 0
    while lead < len(client) and client[lead]["role"] == "system":
        lead += 1
    parts = [program_prompt] + [m["content"] for m in client[:lead]]
    system = "\n\n".join(p for p in parts if p.strip())
    head: list[Any] = [{"role": "system", "content": system}] if system else []
    return head + kept[lead:]


def _attempt_fields(
    prepared: Prepared, model_spec: str, completion: Completion, latency: float
) -> dict[str, Any]:
    return exchange.attempt_fields(
        prepared.version, model_spec, prepared.stored_messages, completion, latency, prepared.demos
    )


# -- raw pass-through (the /v1 proxy) -----------------------------------------------------------

# Request fields a backend without a raw chat completions API (a local hf: model) can honour.
PLAIN_FIELDS = frozenset({"temperature", "max_tokens", "max_completion_tokens", "n", "stream_options"})


@dataclass(frozen=True)
class ProxyAnswer:
    """A stored pass-through answer: the upstream's ``chat.completion`` as it came (``data``) and
    the attempts stored for it, one per choice in choice order (``attempt_ids``)."""

    data: dict[str, Any]
    attempt_ids: tuple[int, ...]
    turn_id: int
    conversation_id: int

    @property
    def response_id(self) -> str:
        return response_id(self.attempt_ids[0])


def _raw_capable(model: ChatModel) -> bool:
    return callable(getattr(model, "chat_completion", None)) and callable(
        getattr(model, "chat_completion_stream", None)
    )


def _check_plain(model: ChatModel, prepared: Prepared, params: Mapping[str, Any]) -> None:
    """A backend without a raw API gets only what it can honour; anything else is refused by name
    (never dropped silently)."""
    for field, value in params.items():
        if value is None:
            continue
        if field not in PLAIN_FIELDS or (field == "n" and value != 1):
            shown = f"{field}={value!r}" if field == "n" else field
            raise UnsupportedFieldError(
                f"The model {model.spec} (a local backend) cannot honour {shown!s}; leave it out or "
                "use an OpenAI-compatible model.",
                field,
            )
    if not prepared.plain:
        raise UnsupportedFieldError(
            f"The model {model.spec} (a local backend) takes only plain text messages in system, user "
            "and assistant roles (no tool messages, tool_calls, names or image/audio/file parts).",
            "messages",
        )


def _logprobs_summary(logprobs: Any) -> dict[str, Any] | None:
    """What is stored of a choice's logprobs: token count and summed log probability."""
    if not isinstance(logprobs, Mapping):
        return None
    tokens = [t for t in (logprobs.get("content") or []) if isinstance(t, Mapping)]
    total = sum(float(t.get("logprob") or 0.0) for t in tokens)
    return {"tokens": len(tokens), "logprob_sum": round(total, 6)}


def _extra(choice: Mapping[str, Any], message: Mapping[str, Any], n: int) -> dict[str, Any] | None:
    extra: dict[str, Any] = {}
    if choice.get("finish_reason"):
        extra["finish_reason"] = choice["finish_reason"]
    for key in ("tool_calls", "function_call", "refusal"):
        if message.get(key):
            extra[key] = message[key]
    summary = _logprobs_summary(choice.get("logprobs"))
    if summary is not None:
        extra["logprobs"] = summary
    if n > 1:
        extra["index"] = choice.get("index", 0)
    return extra or None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, Mapping))
    return ""


def _choice_fields(
    prepared: Prepared, model_spec: str, data: Mapping[str, Any], latency: float
) -> list[dict[str, Any]]:
    """One attempt's fields per choice of an upstream ``chat.completion``, in choice order."""
    choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
    usage = data.get("usage") or {}
    n = len(choices)
    fields = []
    for choice in choices:
        message = choice.get("message") or {}
        completion = Completion(
            text=_content_text(message.get("content")),
            model=str(data.get("model") or model_spec),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens") if n == 1 else None,
            finish_reason=choice.get("finish_reason"),
        )
        attempt = _attempt_fields(prepared, model_spec, completion, latency)
        fields.append(attempt | {"extra": _extra(choice, message, n)})
    return fields


def _as_completion_dict(completion: Completion) -> dict[str, Any]:
    """A plain backend's answer in the ``chat.completion`` shape."""
    prompt, out = completion.prompt_tokens or 0, completion.completion_tokens or 0
    return {
        "id": "minetune-local",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": completion.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "finish_reason": completion.finish_reason or "stop",
            }
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out},
    }


def _with_defaults(settings: Settings, params: Mapping[str, Any]) -> dict[str, Any]:
    """The request fields as sent, plus the configured temperature and token limit when the
    client gave none (so a program's settings apply to every client)."""
    out = {k: v for k, v in params.items() if v is not None}
    if "temperature" not in out and settings.temperature is not None:
        out["temperature"] = settings.temperature
    if "max_tokens" not in out and "max_completion_tokens" not in out and settings.max_tokens is not None:
        out["max_tokens"] = settings.max_tokens
    return out


def _chat_completion(self: Gateway, store: Store, prepared: Prepared, model: ChatModel,
                     params: Mapping[str, Any]) -> ProxyAnswer:
    """Ask ``model`` with the client's request fields ``params`` passed unchanged (a raw-capable
    backend; a local one refuses what it cannot honour) and store every choice as an attempt of
    one turn, in one transaction. Upstream errors (ModelError, UpstreamError) store nothing."""
    sent = _with_defaults(self.settings, params)
    start = time.perf_counter()
    if _raw_capable(model):
        data = model.chat_completion(prepared.messages, sent)  # type: ignore[attr-defined]
    else:
        _check_plain(model, prepared, params)
        limit = sent.get("max_completion_tokens", sent.get("max_tokens"))
        data = _as_completion_dict(
            model.complete(prepared.messages, temperature=sent.get("temperature"), max_tokens=limit)
        )
    latency = (time.perf_counter() - start) * 1000
    fields = _choice_fields(prepared, model.spec, data, latency)
    if not fields:
        raise ModelError(f"{model.spec} returned no choices.")
    ids = _record_fields(store, self.settings, prepared, fields)
    first = fields[0]
    self.remember(store, prepared, ids.attempt_id, first["response"], first["extra"])
    for attempt_id, more in zip((ids.attempt_ids or ())[1:], fields[1:], strict=False):
        self.remember(store, prepared, attempt_id, more["response"], more["extra"])
    return ProxyAnswer(data, ids.attempt_ids or (ids.attempt_id,), ids.turn_id, ids.conversation_id)


def _record_fields(
    store: Store, settings: Settings, prepared: Prepared, fields: list[dict[str, Any]]
) -> ExchangeIds:
    """Store the exchange with one attempt per entry of ``fields`` (numbered in order), in one
    transaction."""
    return exchange.record_answer(
        store,
        settings,
        prepared.version,
        prepared.conversation_id,
        prepared.user_message,
        fields[0] | ({"more_attempts": fields[1:]} if len(fields) > 1 else {}),
        title=prepared.title,
        source=SOURCE,
        embedding=prepared.embedding,
    )


def _plain_chunks(stream: CompletionStream, model_spec: str) -> Iterator[dict[str, Any]]:
    """A plain backend's text deltas as ``chat.completion.chunk`` dicts."""
    base = {"id": "minetune-local", "object": "chat.completion.chunk", "created": int(time.time())}
    try:
        for delta in stream:
            yield base | {"model": model_spec, "choices": [
                {"index": 0, "delta": {"content": delta}, "finish_reason": None}]}
        done = stream.completion
        assert done is not None
        yield base | {"model": model_spec, "choices": [
            {"index": 0, "delta": {}, "finish_reason": done.finish_reason or "stop"}]}
        prompt, out = done.prompt_tokens or 0, done.completion_tokens or 0
        yield base | {"model": model_spec, "choices": [], "usage": {
            "prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out}}
    finally:
        stream.close()


def _chat_completion_stream(self: Gateway, store: Store, prepared: Prepared, model: ChatModel,
                            params: Mapping[str, Any]) -> ChunkAnswerStream:
    """Start streaming with the client's request fields ``params``; one attempt per requested
    choice (``n``) is stored ``streaming`` before the first chunk. Without ``stream_options`` the
    upstream is asked for usage (to store it) and the usage-only chunk is not passed on."""
    sent = _with_defaults(self.settings, params)
    hide_usage = "stream_options" not in sent
    if hide_usage:
        sent["stream_options"] = {"include_usage": True}
    start = time.perf_counter()
    upstream: Any
    if _raw_capable(model):
        upstream = model.chat_completion_stream(prepared.messages, sent)  # type: ignore[attr-defined]
        closer = upstream.close
    else:
        _check_plain(model, prepared, params)
        limit = sent.get("max_completion_tokens", sent.get("max_tokens"))
        text_stream = model.stream(prepared.messages, temperature=sent.get("temperature"), max_tokens=limit)
        upstream, closer = _plain_chunks(text_stream, model.spec), text_stream.close
    n = int(sent.get("n") or 1)
    pending = Completion(text="", model=model.spec)
    one = _attempt_fields(prepared, model.spec, pending, 0.0) | {
        "status": STREAMING, "stream_owner": this_owner(), "extra": None}
    try:
        ids = _record_fields(store, self.settings, prepared, [dict(one) for _ in range(max(n, 1))])
    except BaseException:
        closer()
        raise
    return ChunkAnswerStream(self, store, prepared, ids, upstream, closer, model.spec, start, hide_usage)




class _Choice:
    """What arrived of one streamed choice."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.refusal: list[str] = []
        self.logprobs: list[Mapping[str, Any]] = []

    def add(self, choice: Mapping[str, Any]) -> None:
        delta = choice.get("delta") or {}
        if isinstance(delta.get("content"), str):
            self.parts.append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            self.refusal.append(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            slot = self.tool_calls.setdefault(int(call.get("index", 0)), {"function": {"arguments": ""}})
            for key in ("id", "type"):
                if call.get(key):
                    slot[key] = call[key]
            function = call.get("function") or {}
            if function.get("name"):
                slot["function"]["name"] = function["name"]
            slot["function"]["arguments"] += function.get("arguments") or ""
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, Mapping):
            self.logprobs.extend(t for t in logprobs.get("content") or [] if isinstance(t, Mapping))
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]

    def extra(self, index: int, n: int) -> dict[str, Any] | None:
        message: dict[str, Any] = {}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        choice: dict[str, Any] = {"index": index, "finish_reason": self.finish_reason}
        if self.logprobs:
            choice["logprobs"] = {"content": self.logprobs}
        return _extra(choice, message, n)


class ChunkAnswerStream:
    """Iterate for the upstream's ``chat.completion.chunk`` dicts of a pass-through stream (as
    sent; the caller rewrites ``id``/``model``). Its attempts (one per choice) are stored
    ``streaming``; each becomes ``complete`` when upstream finished it, else ``interrupted`` (what
    arrived kept) when the stream fails or is closed first. Settled exactly once."""

    def __init__(
        self,
        gateway: Gateway,
        store: Store,
        prepared: Prepared,
        ids: ExchangeIds,
        upstream: Iterator[dict[str, Any]],
        closer: Any,
        model_spec: str,
        start: float,
        hide_usage: bool,
    ) -> None:
        self._gateway = gateway
        self._store = store
        self._prepared = prepared
        self.ids = ids
        self.attempt_ids = ids.attempt_ids or (ids.attempt_id,)
        self._upstream = upstream
        self._closer = closer
        self._model_spec = model_spec
        self._start = start
        self._hide_usage = hide_usage
        self._choices = [_Choice() for _ in self.attempt_ids]
        self._usage: dict[str, Any] = {}
        self._chunks: Iterator[dict[str, Any]] | None = None
        self._settled = False
        self._lock = threading.Lock()
        self.finished = False
        self.interrupted = False

    @property
    def response_id(self) -> str:
        return response_id(self.attempt_ids[0])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._chunks is None:
            self._chunks = self._run()
        return self._chunks

    def _run(self) -> Iterator[dict[str, Any]]:
        try:
            for chunk in self._upstream:
                if chunk.get("usage"):
                    self._usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    index = int(choice.get("index", 0))
                    if 0 <= index < len(self._choices):
                        self._choices[index].add(choice)
                if self._hide_usage and not chunk.get("choices") and chunk.get("usage"):
                    continue
                if self._hide_usage and chunk.get("usage"):
                    chunk = {k: v for k, v in chunk.items() if k != "usage"}
                yield chunk
        except BaseException:
            self._interrupt()
            raise
        self._settle(True)

    def close(self) -> None:
        """End the stream now (the client went away): upstream is closed and the attempts, unless
        they completed, are stored ``interrupted``. Idempotent."""
        chunks = self._chunks
        if chunks is not None and hasattr(chunks, "close"):
            try:
                chunks.close()
            except ValueError:
                log.warning("Stream %s closed while reading upstream", self.response_id)
        self._interrupt()

    def _interrupt(self) -> None:
        try:
            self._closer()
        except Exception:  # noqa: BLE001 - a backend failing to close must not hide the interruption
            log.debug("Closing upstream of %s failed", self.response_id, exc_info=True)
        self._settle(False)

    def _settle(self, complete: bool) -> None:
        """Store each choice's outcome once: ``complete`` when the upstream finished it (it sent
        the choice's ``finish_reason``, or the whole stream ended well), else ``interrupted`` with
        what arrived. A cut n>1 stream keeps the choices that had already finished."""
        with self._lock:
            if self._settled:
                return
            self._settled = True
        latency = round((time.perf_counter() - self._start) * 1000, 3)
        n = len(self.attempt_ids)
        for index, (attempt_id, choice) in enumerate(zip(self.attempt_ids, self._choices, strict=True)):
            text = "".join(choice.parts)
            extra = choice.extra(index, n)
            if not complete and choice.finish_reason is None:
                self.interrupted = True
                try:
                    interrupt_attempt(self._store, attempt_id, response=text, latency_ms=latency, extra=extra)
                except Exception:  # the row stays 'streaming': never an answer, recovered at start-up
                    log.exception("Could not mark stream %s interrupted", response_id(attempt_id))
                continue
            try:
                finish_attempt(
                    self._store,
                    attempt_id,
                    response=text,
                    latency_ms=latency,
                    prompt_tokens=self._usage.get("prompt_tokens"),
                    completion_tokens=self._usage.get("completion_tokens") if n == 1 else None,
                    extra=extra,
                )
            except Exception:
                if complete:
                    raise
                log.exception("Could not store finished choice %s", response_id(attempt_id))
                continue
            self._gateway.remember(self._store, self._prepared, attempt_id, text, extra)
        self.finished = complete
