"""``POST /v1/responses``: the OpenAI Responses API, answered by the program like chat completions.

The request is translated (:mod:`minetune.responses_api`) into the chat exchange the gateway
answers, stored and learned from exactly as ``/v1/chat/completions`` is; the response ``id`` (also
the ``X-Minetune-Response-Id`` header) is ``mt-<attempt id>``, rateable with ``POST /v1/feedback``
and usable as ``previous_response_id``. Streaming sends the Responses SSE events.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ConfigDict, Field

from minetune.errors import MinetuneError
from minetune.gateway import model_name, program_for_model
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
        prepared = gateway.prepare(store, program, call.messages)
        model = state.model(prepared.version.model_spec, store, program)
        if call.stream:
            stream = gateway.stream(
                store, prepared, model, temperature=call.temperature, max_tokens=call.max_tokens
            )
        else:
            answer = gateway.complete(
                store, prepared, model, temperature=call.temperature, max_tokens=call.max_tokens
            )
    except MinetuneError as exc:
        return _failure(exc)
    name = model_name(prepared.program)
    if call.stream:
        return StreamingResponse(
            _closing(response_events(stream, name, created, call.echo), state.upstream),
            media_type="text/event-stream",
            headers={RESPONSE_ID_HEADER: stream.response_id, "Cache-Control": "no-cache"},
        )
    payload = response_object(answer, name, created, call.echo)
    return JSONResponse(payload, headers={RESPONSE_ID_HEADER: answer.response_id})
