"""The OpenAI Responses API over the chat-completions gateway: translate a request in, an answer out.

``POST /v1/responses`` (:mod:`minetune.server.responses`) turns a Responses request into the chat
messages :class:`~minetune.gateway.Gateway` answers (so the program is rendered, the exchange is
stored, and praise and feedback are learned from exactly as for ``/v1/chat/completions``), and the
stored answer back into a ``response`` object or the Responses streaming events.

- ``input`` is a string or a list of items: messages (``user``/``system``/``developer``/``assistant``,
  content a string or ``input_text``/``output_text`` parts); ``instructions`` becomes the leading
  system message.
- ``previous_response_id`` (a minetune response id, ``mt-<attempt id>``) continues that stored
  exchange: its messages (without the system prompt, like OpenAI, which does not carry instructions
  over) and its answer come before the new input, so the turn joins that conversation and praise in
  the new input is recorded on that answer.
- The response id is the attempt's, ``mt-<attempt id>``: rate it with ``POST /v1/feedback``.

A field that cannot be honoured is a :class:`ResponsesError` (400), never silently dropped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from minetune.errors import MinetuneError, NotFoundError
from minetune.gateway import Answer, AnswerStream, attempt_id_of
from minetune.store import Store
from minetune.store.schema import COMPLETE

__all__ = ["ResponsesError", "Translated", "response_events", "response_object", "translate"]

# Request fields honoured (or, for the advisory ones, echoed back in the response object).
SUPPORTED = frozenset(
    {
        "model", "input", "instructions", "stream", "stream_options", "temperature", "max_output_tokens",
        "previous_response_id", "store", "metadata", "user", "safety_identifier", "prompt_cache_key",
        "parallel_tool_calls", "truncation", "include", "background", "text", "tools", "tool_choice",
        "reasoning", "service_tier",
    }
)  # fmt: skip
_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
_TEXT_PARTS = {"input_text", "output_text", "text"}


class ResponsesError(MinetuneError):
    """A Responses request minetune cannot honour as sent (a 400 in OpenAI's error shape)."""


@dataclass(frozen=True)
class Translated:
    """A Responses request as a chat exchange for the gateway, plus what the response echoes."""

    messages: list[dict[str, Any]]
    temperature: float | None
    max_tokens: int | None
    stream: bool
    echo: dict[str, Any] = field(default_factory=dict)  # request fields shown in the response object


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    """ResponsesError naming the first field minetune would otherwise have to drop."""
    unknown = sorted(set(body) - SUPPORTED)
    if unknown:
        raise ResponsesError(
            f"Unsupported Responses API field(s): {', '.join(unknown)}. minetune's /v1/responses takes "
            "model, input, instructions, previous_response_id, temperature, max_output_tokens, stream, "
            "metadata and user."
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
        ("tools", bool(body.get("tools")), "tools are not supported yet."),
        ("tool_choice", body.get("tool_choice") not in (None, "auto", "none"),
         "tool_choice is not supported without tools."),
    ]  # fmt: skip
    for name, refused, why in refusals:
        if refused:
            raise ResponsesError(f"{name}: {why}")
    text = body.get("text")
    if text is not None:
        fmt = text.get("format") if isinstance(text, Mapping) else None
        extra = set(text) - {"format"} if isinstance(text, Mapping) else {"?"}
        if extra or (fmt is not None and (not isinstance(fmt, Mapping) or fmt.get("type") != "text")):
            raise ResponsesError(
                "text: only the plain text format ({'format': {'type': 'text'}}) is supported."
            )


def _part_text(part: Any, where: str) -> str:
    if isinstance(part, str):
        return part
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
        return str(part["text"])
    raise ResponsesError(f"{where} has a {kind or 'malformed'} content part; only input_text is supported.")


def _input_messages(raw: Any) -> list[dict[str, Any]]:
    """``input`` (a string or a list of items) as chat messages."""
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise ResponsesError("input must be a string or a non-empty list of input items.")
    messages: list[dict[str, Any]] = []
    for position, item in enumerate(raw, start=1):
        where = f"input item {position}"
        if not isinstance(item, Mapping):
            raise ResponsesError(f"{where} must be an object.")
        kind = item.get("type", "message")
        if kind != "message":
            raise ResponsesError(f"{where} has type {kind!r}; only message items are supported.")
        role = _ROLES.get(str(item.get("role")))
        if role is None:
            raise ResponsesError(
                f"{where} has role {item.get('role')!r}; expected user, system, developer or assistant."
            )
        content = item.get("content")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = "\n".join(_part_text(part, where) for part in content)
        else:
            raise ResponsesError(f"{where} needs content: a string or a list of input_text parts.")
        messages.append({"role": role, "content": text})
    return messages


def _history(store: Store, previous_response_id: str) -> list[dict[str, Any]]:
    """The stored exchange a ``previous_response_id`` names: its messages after the system prompt,
    then its answer. NotFoundError for an id that is not one of this user's responses."""
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
    return sent + [{"role": "assistant", "content": attempt.response or ""}]


def translate(store: Store, body: Mapping[str, Any]) -> Translated:
    """The chat exchange for a Responses request ``body`` (a decoded JSON object) of ``store``'s user."""
    _refuse_unsupported(body)
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions.strip():
        messages.append({"role": "system", "content": instructions})
    elif instructions is not None and not isinstance(instructions, str):
        raise ResponsesError("instructions must be a string.")
    previous = body.get("previous_response_id")
    if previous is not None:
        messages += _history(store, str(previous))
    messages += _input_messages(body.get("input"))
    echo = {
        key: body.get(key)
        for key in ("instructions", "previous_response_id", "user", "safety_identifier", "prompt_cache_key")
    }
    echo["metadata"] = body.get("metadata") or {}
    echo["parallel_tool_calls"] = body.get("parallel_tool_calls", True)
    echo["tool_choice"] = body.get("tool_choice") or "auto"
    echo["max_output_tokens"] = body.get("max_output_tokens")
    echo["temperature"] = body.get("temperature")
    return Translated(
        messages=messages,
        temperature=body.get("temperature"),
        max_tokens=body.get("max_output_tokens"),
        stream=bool(body.get("stream")),
        echo=echo,
    )


def _usage(prompt: int | None, completion: int | None) -> dict[str, Any]:
    prompt, completion = prompt or 0, completion or 0
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


def response_object(answer: Answer, model: str, created: float, echo: Mapping[str, Any]) -> dict[str, Any]:
    """The Responses API ``response`` object for a stored answer (``finish_reason`` length: incomplete)."""
    cut = answer.finish_reason == "length"
    status = "incomplete" if cut else "completed"
    return _base(answer.response_id, model, created, echo) | {
        "status": status,
        "completed_at": time.time(),
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "output": [_message_item(answer.response_id, answer.text, status)],
        "usage": _usage(answer.prompt_tokens, answer.completion_tokens),
    }


def response_events(
    stream: AnswerStream, model: str, created: float, echo: Mapping[str, Any]
) -> Generator[str, None, None]:
    """The Responses streaming events (SSE) of a streamed answer, ending with ``response.completed``
    (or ``response.incomplete`` when cut at max_output_tokens); an upstream failure mid-stream ends
    with ``response.failed`` and the attempt is stored interrupted. Closing it closes the stream."""
    rid = stream.response_id
    numbers = count()
    item_id = f"msg_{rid}"
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}

    def event(kind: str, **fields: Any) -> str:
        data = {"type": kind, "sequence_number": next(numbers), **fields}
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n"

    started = _base(rid, model, created, echo)
    parts: list[str] = []
    try:
        yield event("response.created", response=started)
        yield event("response.in_progress", response=started)
        yield event(
            "response.output_item.added",
            output_index=0,
            item=_message_item(rid, "", "in_progress") | {"content": []},
        )
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield event("response.content_part.added", **where, part=empty)
        try:
            for delta in stream:
                parts.append(delta)
                yield event("response.output_text.delta", **where, delta=delta, logprobs=[])
        except MinetuneError as exc:
            error = {"code": "server_error", "message": str(exc)}
            yield event("response.failed", response=started | {"status": "failed", "error": error})
            return
    finally:
        stream.close()  # a no-op once the answer is complete
    answer = stream.answer
    assert answer is not None
    final = response_object(answer, model, created, echo)
    item = final["output"][0]
    yield event("response.output_text.done", **where, text=answer.text, logprobs=[])
    yield event("response.content_part.done", **where, part=item["content"][0])
    yield event("response.output_item.done", output_index=0, item=item)
    done = "response.completed" if final["status"] == "completed" else "response.incomplete"
    yield event(done, response=final)


# -- Function tools and JSON formats: the translation, ready for the gateway's chat pass-through ----
# (not wired yet: /v1/responses refuses tools, function_call items and text.format json_schema
# until the gateway forwards tools/response_format upstream and stores tool calls with the attempt).


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
            messages += _input_messages([item])
    return messages


def output_items(rid: str, message: Mapping[str, Any], status: str = "completed") -> list[dict[str, Any]]:
    """A chat ``message`` (content and ``tool_calls``) as Responses output items: a ``message``
    item for its text, then one ``function_call`` item per tool call."""
    items = []
    if message.get("content"):
        items.append(_message_item(rid, str(message["content"]), status))
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
