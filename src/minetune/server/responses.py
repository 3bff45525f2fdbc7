"""``POST /v1/responses``: the OpenAI Responses API, answered by the program like chat completions.

The request is translated (:mod:`minetune.responses_api`) into the chat request the gateway's
pass-through answers (function tools, tool_choice, text.format, top_p and images included), stored
(with its tool calls) and learned from exactly as ``/v1/chat/completions`` is; the response ``id``
(also the ``X-Minetune-Response-Id`` header) is ``mt-<attempt id>``, rateable with
``POST /v1/feedback`` and usable as ``previous_response_id``. Streaming sends the Responses SSE
events (``response.function_call_arguments.delta``/``.done`` for tool calls).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ConfigDict, Field

from minetune.errors import MinetuneError
from minetune.gateway import Prepared, model_name, program_for_model
from minetune.responses_api import response_events, response_object, translate
from minetune.server.auth import current_user
from minetune.server.proxy import (
    RESPONSE_ID_HEADER,
    _closing,
    _failure,
    _gateway,
    _parse,
    _state,
    raw_body,
)
from minetune.server.validation import InputModel, json_body_doc
from minetune.store import Store

router = APIRouter(prefix="/v1", tags=["proxy"])


class ResponsesRequest(InputModel):
    """An OpenAI Responses API request; fields minetune cannot honour are refused with a 400."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(default="minetune", max_length=300)
    input: str | list[dict[str, Any]] = Field(max_length=5000)
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, max_length=100)
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    store: bool | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    user: str | None = Field(default=None, max_length=300)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=500)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None


@router.post("/responses", response_model=None, openapi_extra=json_body_doc(ResponsesRequest))
async def responses(
    request: Request, raw: bytes = Depends(raw_body), user: str = Depends(current_user)
) -> Response:
    """Answer a Responses API request (a :class:`ResponsesRequest`) with the program named by
    ``model``; store the exchange; learn from praise. Runs on the upstream pool like chat completions."""
    response: Response = await _state(request).upstream.respond(user, _responses, request, raw, user)
    return response


def _responses(request: Request, raw: bytes, user: str) -> JSONResponse | StreamingResponse:
    body = _parse(ResponsesRequest, raw)
    if isinstance(body, JSONResponse):
        return body
    state = _state(request)
    store = state.store(user)
    gateway = _gateway(request)
    program = program_for_model(body.model)
    created = time.time()
    try:
        call = translate(store, body.model_dump(exclude_unset=True))
        prepared = _continuing(store, gateway.prepare(store, program, call.messages), call.continues)
        model = state.model(prepared.version.model_spec, store, program)
        if call.stream:
            # Usage comes as the last chunk, for the stored attempt and response.completed.
            params = call.params | {"stream_options": {"include_usage": True}}
            stream = gateway.chat_completion_stream(store, prepared, model, params)
        else:
            answer = gateway.chat_completion(store, prepared, model, call.params)
    except MinetuneError as exc:
        return _failure(exc)
    name = model_name(prepared.program)
    if call.stream:
        return StreamingResponse(
            _closing(response_events(stream, name, created, call.echo), state.upstream),
            media_type="text/event-stream",
            headers={RESPONSE_ID_HEADER: stream.response_id, "Cache-Control": "no-cache"},
        )
    payload = response_object(answer.response_id, answer.data, name, created, call.echo)
    return JSONResponse(payload, headers={RESPONSE_ID_HEADER: answer.response_id})


def _continuing(store: Store, prepared: Prepared, attempt_id: int | None) -> Prepared:
    """``prepared`` joined to the conversation of the answer the input continues (named by
    ``previous_response_id`` or by one of our function_call items), when the quoted text did not
    find it (an answer that was only tool calls has no text to find)."""
    if attempt_id is None or prepared.conversation_id is not None:
        return prepared
    conversation = store.turn(store.attempt(attempt_id).turn_id).conversation_id
    return dataclasses.replace(prepared, conversation_id=conversation, previous_attempt_id=attempt_id)
