"""The OpenAI Responses API over the chat-completions gateway: translate a request in, an answer out.

``POST /v1/responses`` (:mod:`minetune.server.responses`) turns a Responses request into the chat
request the gateway's pass-through answers (:meth:`~minetune.gateway.Gateway.chat_completion`,
so the program is rendered, the exchange is stored with its tool calls, and praise and feedback are
learned from exactly as for ``/v1/chat/completions``), and the upstream's ``chat.completion`` (or
its chunks) back into a ``response`` object (or the Responses streaming events).

- ``input`` is a string or a list of items: messages (``user``/``system``/``developer``/``assistant``,
  content a string or ``input_text``/``output_text``/``input_image`` parts), ``function_call`` items
  (an assistant message's ``tool_calls``) and ``function_call_output`` items (``tool`` messages);
  ``instructions`` becomes the leading system message.
- Function ``tools``, ``tool_choice``, ``parallel_tool_calls``, ``text.format`` (``json_object``,
  ``json_schema``: ``response_format``), ``temperature``, ``top_p`` and ``max_output_tokens``
  (``max_tokens``) go upstream as their chat-completions forms; the answer's tool calls are
  ``function_call`` output items (streamed as ``response.function_call_arguments.delta``/``.done``).
- ``previous_response_id`` (a minetune response id, ``mt-<attempt id>``) continues that stored
  exchange: its messages (without the system prompt, like OpenAI, which does not carry instructions
  over) and its answer (text and tool calls) come before the new input, so the turn joins that
  conversation and praise in the new input is recorded on that answer. An input list that sends
  back one of our ``function_call`` items (id ``fc_mt-<attempt id>_<n>``) joins that conversation too.
- The response id is the attempt's, ``mt-<attempt id>``: rate it with ``POST /v1/feedback``.

A field that cannot be honoured is a :class:`ResponsesError` (400), never silently dropped.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from minetune.errors import MinetuneError, NotFoundError
from minetune.gateway import INLINE_REF, ChunkAnswerStream, attempt_id_of
from minetune.store import Store
from minetune.store.schema import COMPLETE

__all__ = [
    "ResponsesError",
    "Translated",
    "chat_response_format",
    "chat_tool_choice",
    "chat_tools",
    "output_items",
    "response_events",
    "response_object",
    "tool_messages",
    "translate",
]

# Request fields honoured (or, for the advisory ones, echoed back in the response object).
SUPPORTED = frozenset(
    {
        "model", "input", "instructions", "stream", "stream_options", "temperature", "max_output_tokens",
        "previous_response_id", "store", "metadata", "user", "safety_identifier", "prompt_cache_key",
        "parallel_tool_calls", "truncation", "include", "background", "text", "tools", "tool_choice",
        "reasoning", "service_tier", "top_p",
    }
)  # fmt: skip
_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
_TEXT_PARTS = {"input_text", "output_text", "text"}
_OUR_CALL_ITEM = re.compile(r"fc_mt-(\d{1,10})_\d{1,6}")


class ResponsesError(MinetuneError):
    """A Responses request minetune cannot honour as sent (a 400 in OpenAI's error shape)."""


@dataclass(frozen=True)
class Translated:
    """A Responses request as a chat request for the gateway's pass-through, plus what the
    response echoes."""

    messages: list[dict[str, Any]]
    params: dict[str, Any]  # chat-completions request fields (temperature, max_tokens, tools, ...)
    stream: bool
    echo: dict[str, Any] = field(default_factory=dict)  # request fields shown in the response object
    continues: int | None = None  # the attempt whose conversation this input continues, when known


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    """ResponsesError naming the first field minetune would otherwise have to drop."""
    unknown = sorted(set(body) - SUPPORTED)
    if unknown:
        raise ResponsesError(
            f"Unsupported Responses API field(s): {', '.join(unknown)}. minetune's /v1/responses takes "
            "model, input, instructions, previous_response_id, temperature, top_p, max_output_tokens, "
            "stream, tools (function tools), tool_choice, parallel_tool_calls, text.format, metadata "
            "and user."
        )
    refusals = [
        ("store", body.get("store") is False,
         "store=false is not supported: minetune stores every exchange, to be rated and learned from."),
        ("background", bool(body.get("background")), "background responses are not supported."),
        ("include", bool(body.get("include")), "include is not supported (no extra output data)."),
        ("reasoning", body.get("reasoning") not in (None, {}), "reasoning options are not supported."),
        ("truncation", body.get("truncation") not in (None, "disabled"),
         "only truncation='disabled' is supported."),
        ("service_tier", body.get("service_tier") not in (None, "auto", "default"),
         "only service_tier 'auto' or 'default' is supported."),
        ("tool_choice", not body.get("tools") and body.get("tool_choice") not in (None, "auto", "none"),
         "a tool_choice other than auto or none needs tools."),
    ]  # fmt: skip
    for name, refused, why in refusals:
        if refused:
            raise ResponsesError(f"{name}: {why}")
    text = body.get("text")
    if text is not None and (not isinstance(text, Mapping) or set(text) - {"format"}):
        raise ResponsesError("text: only text.format (text, json_object or json_schema) is supported.")


def _part_text(part: Any, where: str) -> str:
    if isinstance(part, str):
        return part
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
        return str(part["text"])
    raise ResponsesError(f"{where} has a {kind or 'malformed'} content part; only input_text is supported.")


def _chat_part(part: Any, where: str) -> dict[str, Any]:
    """A user message's content part as a chat one: text, or an ``input_image`` as ``image_url``."""
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind != "input_image":
        return {"type": "text", "text": _part_text(part, where)}
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        raise ResponsesError(
            f"{where} has an input_image without image_url (file_id images are not supported); send "
            "image_url, a URL or a data: URL."
        )
    image: dict[str, Any] = {"url": url}
    if part.get("detail") in ("low", "high", "auto"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _input_messages(raw: Any, start: int = 1) -> list[dict[str, Any]]:
    """``input`` message items (a string, or a list of message items, the first numbered
    ``start`` in errors) as chat messages."""
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise ResponsesError("input must be a string or a non-empty list of input items.")
    messages: list[dict[str, Any]] = []
    for position, item in enumerate(raw, start=start):
        where = f"input item {position}"
        if not isinstance(item, Mapping):
            raise ResponsesError(f"{where} must be an object.")
        kind = item.get("type", "message")
        if kind != "message":
            raise ResponsesError(
                f"{where} has type {kind!r}; only message, function_call and function_call_output items "
                "are supported."
            )
        role = _ROLES.get(str(item.get("role")))
        if role is None:
            raise ResponsesError(
                f"{where} has role {item.get('role')!r}; expected user, system, developer or assistant."
            )
        content = item.get("content")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
        elif isinstance(content, list):
            images = any(isinstance(p, Mapping) and p.get("type") == "input_image" for p in content)
            if images and role != "user":
                raise ResponsesError(f"{where}: input_image parts are supported in user messages only.")
            if images:
                messages.append({"role": role, "content": [_chat_part(p, where) for p in content]})
            else:
                messages.append({"role": role, "content": "\n".join(_part_text(p, where) for p in content)})
        else:
            raise ResponsesError(f"{where} needs content: a string or a list of input_text parts.")
    return messages


def _has_inline_reference(message: Mapping[str, Any]) -> bool:
    return INLINE_REF in json.dumps(message.get("content"))


def _history(store: Store, previous_response_id: str) -> tuple[list[dict[str, Any]], int]:
    """The stored exchange a ``previous_response_id`` names: its messages after the system prompt,
    then its answer (text and tool calls); and the attempt id. NotFoundError for an id that is not
    one of this user's responses."""
    try:
        attempt = store.attempt(attempt_id_of(previous_response_id))
    except NotFoundError:
        shown = previous_response_id[:60]
        raise NotFoundError(
            f"previous_response_id {shown!r} is not one of your responses (expected mt-<number>)."
        ) from None
    if attempt.status != COMPLETE:
        raise ResponsesError(
            f"previous_response_id {previous_response_id} did not complete ({attempt.status}); "
            "send the conversation as input instead."
        )
    sent = [dict(m) for m in attempt.messages or []]
    while sent and sent[0].get("role") == "system":
        sent.pop(0)
    if any(_has_inline_reference(m) for m in sent):
        raise ResponsesError(
            f"previous_response_id {previous_response_id} continues an exchange with inline (data:) "
            "images or files, which minetune stores by hash only; send the conversation as input instead."
        )
    calls = (attempt.extra or {}).get("tool_calls")
    answer: dict[str, Any] = {"role": "assistant", "content": attempt.response or (None if calls else "")}
    if calls:
        answer["tool_calls"] = calls
    return sent + [answer], attempt.id


def _continued_attempt(store: Store, items: Sequence[Any]) -> int | None:
    """The attempt whose ``function_call`` items (ours: ``fc_mt-<id>_<n>``) the input sends back,
    when it is this user's."""
    for item in reversed(items):
        if not isinstance(item, Mapping) or item.get("type") != "function_call":
            continue
        match = _OUR_CALL_ITEM.fullmatch(str(item.get("id") or ""))
        if match is None:
            continue
        try:
            return store.attempt(int(match.group(1))).id
        except NotFoundError:
            return None
    return None


def _chat_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """The chat-completions request fields for a Responses request."""
    params: dict[str, Any] = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("max_output_tokens", "max_tokens"),
    ):
        if body.get(ours) is not None:
            params[theirs] = body[ours]
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools):
            raise ResponsesError("tools must be a list of tool objects.")
        params["tools"] = chat_tools(tools)
        if body.get("tool_choice") is not None:
            params["tool_choice"] = chat_tool_choice(body["tool_choice"])
        if body.get("parallel_tool_calls") is not None:
            params["parallel_tool_calls"] = bool(body["parallel_tool_calls"])
    text = body.get("text")
    if isinstance(text, Mapping):
        fmt = text.get("format")
        if fmt is not None and not isinstance(fmt, Mapping):
            raise ResponsesError("text.format must be an object: text, json_object or json_schema.")
        response_format = chat_response_format(text)
        if response_format is not None:
            params["response_format"] = response_format
    return params


def translate(store: Store, body: Mapping[str, Any]) -> Translated:
    """The chat request for a Responses request ``body`` (a decoded JSON object) of ``store``'s user."""
    _refuse_unsupported(body)
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions.strip():
        messages.append({"role": "system", "content": instructions})
    elif instructions is not None and not isinstance(instructions, str):
        raise ResponsesError("instructions must be a string.")
    continues = None
    previous = body.get("previous_response_id")
    if previous is not None:
        history, continues = _history(store, str(previous))
        messages += history
    raw = body.get("input")
    if isinstance(raw, list) and raw:
        for position, item in enumerate(raw, start=1):
            if not isinstance(item, Mapping):
                raise ResponsesError(f"input item {position} must be an object.")
        messages += tool_messages(raw)
        if continues is None:
            continues = _continued_attempt(store, raw)
    else:
        messages += _input_messages(raw)
    params = _chat_params(body)
    echo = {
        key: body.get(key)
        for key in ("instructions", "previous_response_id", "user", "safety_identifier", "prompt_cache_key")
    }
    echo["metadata"] = body.get("metadata") or {}
    echo["parallel_tool_calls"] = body.get("parallel_tool_calls", True)
    echo["tool_choice"] = body.get("tool_choice") or "auto"
    echo["tools"] = [dict(t) for t in body.get("tools") or []]
    echo["max_output_tokens"] = body.get("max_output_tokens")
    echo["temperature"] = body.get("temperature")
    echo["top_p"] = body.get("top_p")
    echo["text"] = {"format": dict((body.get("text") or {}).get("format") or {"type": "text"})}
    return Translated(messages=messages, params=params, stream=bool(body.get("stream")), echo=echo,
                      continues=continues)  # fmt: skip


def _usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _message_item(rid: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"id": f"msg_{rid}", "type": "message", "role": "assistant", "status": status, "content": content}


def _base(rid: str, model: str, created: float, echo: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "model": model,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "output": [],
        "tools": [],
        "top_p": None,
        "store": True,
        "background": False,
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "usage": None,
        **echo,
    }


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _finished(
    rid: str, model: str, created: float, echo: Mapping[str, Any], finish_reason: str | None,
    output: list[dict[str, Any]], usage: Mapping[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    reason = _INCOMPLETE.get(finish_reason or "")
    return _base(rid, model, created, echo) | {
        "status": "incomplete" if reason else "completed",
        "completed_at": time.time(),
        "incomplete_details": {"reason": reason} if reason else None,
        "output": output,
        "usage": _usage(usage),
    }


def response_object(
    rid: str, data: Mapping[str, Any], model: str, created: float, echo: Mapping[str, Any]
) -> dict[str, Any]:
    """The Responses API ``response`` object for the upstream's ``chat.completion`` ``data``
    (stored as ``rid``): its first choice's text and tool calls as output items (``finish_reason``
    length or content_filter: incomplete)."""
    choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
    choice = choices[0] if choices else {}
    finish = choice.get("finish_reason")
    status = "incomplete" if finish in _INCOMPLETE else "completed"
    output = output_items(rid, choice.get("message") or {}, status) or [_message_item(rid, "", status)]
    return _finished(rid, model, created, echo, finish, output, data.get("usage"))


class _Events:
    """The Responses SSE events of one streamed answer, numbered in order."""

    def __init__(self) -> None:
        self._numbers = count()

    def __call__(self, kind: str, **fields: Any) -> str:
        data = {"type": kind, "sequence_number": next(self._numbers), **fields}
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


def response_events(
    stream: ChunkAnswerStream, model: str, created: float, echo: Mapping[str, Any]
) -> Generator[str, None, None]:
    """The Responses streaming events (SSE) of a streamed pass-through answer: text as
    ``response.output_text.delta``, each tool call as a ``function_call`` item with
    ``response.function_call_arguments.delta`` events, then the ``.done`` events and
    ``response.completed`` (or ``response.incomplete`` when cut at max_output_tokens); an upstream
    failure mid-stream ends with ``response.failed`` and the attempt is stored interrupted.
    Closing it closes the stream."""
    rid = stream.response_id
    event = _Events()
    started = _base(rid, model, created, echo)
    items: list[dict[str, Any]] = []  # output items in order (message: its text parts in "parts")
    text_at: int | None = None
    calls: dict[int, int] = {}  # the chat tool call's index -> its output index
    finish: str | None = None
    usage: Mapping[str, Any] | None = None
    message_id = f"msg_{rid}"
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}

    def open_message() -> Generator[str, None, int]:
        at = len(items)
        items.append({"type": "message", "parts": []})
        yield event("response.output_item.added", output_index=at,
                    item=_message_item(rid, "", "in_progress") | {"content": []})  # fmt: skip
        yield event("response.content_part.added", item_id=message_id, output_index=at, content_index=0,
                    part=empty)  # fmt: skip
        return at

    try:
        yield event("response.created", response=started)
        yield event("response.in_progress", response=started)
        try:
            for chunk in stream:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    if int(choice.get("index", 0)) != 0:
                        continue
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if isinstance(content, str) and content:
                        if text_at is None:
                            text_at = yield from open_message()
                        items[text_at]["parts"].append(content)
                        yield event("response.output_text.delta", item_id=message_id, output_index=text_at,
                                    content_index=0, delta=content, logprobs=[])  # fmt: skip
                    for call in delta.get("tool_calls") or []:
                        index = int(call.get("index", 0))
                        function = call.get("function") or {}
                        if index not in calls:
                            calls[index] = len(items)
                            item = {
                                "id": f"fc_{rid}_{index}",
                                "type": "function_call",
                                "call_id": call.get("id") or f"call_{rid}_{index}",
                                "name": function.get("name") or "",
                                "arguments": "",
                                "status": "in_progress",
                            }
                            items.append(item)
                            yield event("response.output_item.added", output_index=calls[index], item=item)
                        item = items[calls[index]]
                        if function.get("name") and not item["name"]:
                            item["name"] = function["name"]
                        arguments = function.get("arguments") or ""
                        if arguments:
                            item["arguments"] += arguments
                            yield event("response.function_call_arguments.delta", item_id=item["id"],
                                        output_index=calls[index], delta=arguments)  # fmt: skip
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        except MinetuneError as exc:
            error = {"code": "server_error", "message": str(exc)}
            yield event("response.failed", response=started | {"status": "failed", "error": error})
            return
    finally:
        stream.close()  # a no-op once the answer is complete
    if not items:
        yield from open_message()
    status = "incomplete" if finish in _INCOMPLETE else "completed"
    output: list[dict[str, Any]] = []
    for at, item in enumerate(items):
        if item["type"] == "message":
            text = "".join(item["parts"])
            done = _message_item(rid, text, status)
            yield event("response.output_text.done", item_id=message_id, output_index=at, content_index=0,
                        text=text, logprobs=[])  # fmt: skip
            yield event("response.content_part.done", item_id=message_id, output_index=at, content_index=0,
                        part=done["content"][0])  # fmt: skip
        else:
            done = item | {"status": status}
            yield event("response.function_call_arguments.done", item_id=item["id"], output_index=at,
                        arguments=item["arguments"])  # fmt: skip
        yield event("response.output_item.done", output_index=at, item=done)
        output.append(done)
    final = _finished(rid, model, created, echo, finish, output, usage)
    kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
    yield event(kind, response=final)


# -- Function tools and JSON formats: their chat-completions forms ---------------------------------


def chat_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Responses function tools as chat-completions tools; ResponsesError for any other tool type."""
    converted = []
    for position, tool in enumerate(tools, start=1):
        if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            raise ResponsesError(
                f"tools item {position} has type {tool.get('type')!r}; only function tools (with a name) "
                "are supported."
            )
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
        converted.append({"type": "function", "function": function})
    return converted


def chat_tool_choice(choice: str | Mapping[str, Any]) -> str | dict[str, Any]:
    """A Responses ``tool_choice`` as the chat-completions one."""
    if choice in ("auto", "none", "required"):
        return str(choice)
    if (
        isinstance(choice, Mapping)
        and choice.get("type") == "function"
        and isinstance(choice.get("name"), str)
    ):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise ResponsesError("tool_choice must be auto, none, required or {'type': 'function', 'name': ...}.")


def chat_response_format(text: Mapping[str, Any]) -> dict[str, Any] | None:
    """``text.format`` as a chat ``response_format`` (None for plain text)."""
    fmt = text.get("format") or {"type": "text"}
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt.get("name"), str) and isinstance(fmt.get("schema"), Mapping):
        schema = {k: fmt[k] for k in ("name", "schema", "description", "strict") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise ResponsesError("text.format must be text, json_object or json_schema (with a name and a schema).")


def tool_messages(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Input items with ``function_call`` / ``function_call_output`` as chat messages: consecutive
    calls join one assistant message's ``tool_calls`` (after its text, if it has one); each output
    is a ``tool`` message."""
    messages: list[dict[str, Any]] = []
    for position, item in enumerate(items, start=1):
        kind = item.get("type", "message")
        if kind in ("function_call", "function_call_output") and not isinstance(item.get("call_id"), str):
            raise ResponsesError(f"input item {position} ({kind}) needs a call_id.")
        if kind == "function_call" and not isinstance(item.get("name"), str):
            raise ResponsesError(f"input item {position} (function_call) needs a name.")
        if kind == "function_call":
            call = {
                "id": str(item.get("call_id")),
                "type": "function",
                "function": {"name": str(item.get("name")), "arguments": str(item.get("arguments", ""))},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = (
                output
                if isinstance(output, str)
                else "\n".join(_part_text(p, f"input item {position}") for p in output or [])
            )
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id")), "content": text})
        else:
            messages += _input_messages([item], start=position)
    return messages


def output_items(rid: str, message: Mapping[str, Any], status: str = "completed") -> list[dict[str, Any]]:
    """A chat ``message`` (content and ``tool_calls``) as Responses output items: a ``message``
    item for its text, then one ``function_call`` item per tool call."""
    items = []
    if message.get("content"):
        items.append(_message_item(rid, str(message["content"]), status))
    elif isinstance(message.get("refusal"), str) and message["refusal"]:
        refusal = {"type": "refusal", "refusal": message["refusal"]}
        items.append(_message_item(rid, "", status) | {"content": [refusal]})
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        items.append(
            {
                "id": f"fc_{rid}_{index}",
                "type": "function_call",
                "call_id": call.get("id") or f"call_{rid}_{index}",
                "name": function.get("name", ""),
                "arguments": function.get("arguments") or "",
                "status": status,
            }
        )
    return items
