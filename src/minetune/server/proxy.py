"""The OpenAI-compatible learning proxy at ``/v1``: point any OpenAI client at ``<server>/v1``.

- ``GET /v1/models``: one model per program of the caller, ``minetune/<program>``.
- ``POST /v1/chat/completions``: answered by the program named in ``model`` (``minetune/<program>``;
  ``minetune`` or any upstream model name means ``default``), streamed (SSE) or not; every answer
  is stored with the exact prompt sent upstream. The response ``id`` (also sent as the
  ``X-Minetune-Response-Id`` header) is ``mt-<attempt id>``.
- ``POST /v1/feedback`` ``{"response_id", "stars", "critique"?}``: rate an answer; learning runs in
  the background.

Each route parses, makes one :mod:`minetune.gateway` call with the caller's store, and renders.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Generator
from typing import Any, Literal, TypeVar

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from minetune.app.exchange import MAX_MESSAGE_CHARS, MessageTooLongError
from minetune.errors import MinetuneError, ModelError, NotFoundError
from minetune.gateway import AnswerStream, Gateway, model_name, program_for_model, record_feedback
from minetune.server.auth import current_user
from minetune.server.learning import server_learning
from minetune.server.limits import UpstreamPool
from minetune.server.state import ServerState
from minetune.server.validation import InputModel, json_body_doc
from minetune.store import DEFAULT_PROGRAM

router = APIRouter(prefix="/v1", tags=["proxy"])
log = logging.getLogger(__name__)
_gateway_lock = threading.Lock()

RESPONSE_ID_HEADER = "X-Minetune-Response-Id"


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = Field(max_length=50)
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id, ...: accepted and ignored
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(InputModel):
    """An OpenAI chat completions request; other OpenAI parameters are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(default="minetune", max_length=300)
    messages: list[ChatMessage] = Field(min_length=1, max_length=5000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)


class FeedbackRequest(InputModel):
    model_config = ConfigDict(extra="forbid")
    response_id: str = Field(max_length=100)
    stars: int = Field(strict=True)
    critique: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)


Body = TypeVar("Body", bound=BaseModel)


async def raw_body(request: Request) -> bytes:
    """The request body, read without parsing: parsing happens in the route's worker thread."""
    return await request.body()


def _parse(model: type[Body], raw: bytes) -> Body | JSONResponse:
    """Parse a JSON object body into ``model``: 400 for what is not a JSON object, 422 (through the
    app's validation handler) for fields that do not fit."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return _error(400, f"The request body is not valid JSON ({exc}).")
    if not isinstance(data, dict):
        return _error(400, f"The request body must be a JSON object, not {type(data).__name__}.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.minetune
    return state


def _gateway(request: Request) -> Gateway:
    """The app's one Gateway (built on first use)."""
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    if gateway is None:
        with _gateway_lock:
            gateway = getattr(request.app.state, "gateway", None)
            if gateway is None:
                state = _state(request)
                gateway = request.app.state.gateway = Gateway(state.settings, server_learning(state))
    return gateway


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def _failure(exc: MinetuneError) -> JSONResponse:
    """The status for a library error: unknown records 404, too long 413, upstream 502, else 400."""
    if isinstance(exc, NotFoundError):
        return _error(404, str(exc))
    if isinstance(exc, MessageTooLongError):
        return _error(413, str(exc))
    if isinstance(exc, ModelError):
        return _error(502, str(exc), "upstream_error")
    return _error(400, str(exc))


@router.get("/models")
def list_models(request: Request, user: str = Depends(current_user)) -> dict[str, Any]:
    """The caller's programs as OpenAI models, ``minetune/default`` first, then by name."""
    programs = sorted(
        _state(request).store(user).programs(), key=lambda p: (p.name != DEFAULT_PROGRAM, p.name)
    )
    return {
        "object": "list",
        "data": [
            {
                "id": model_name(p.name),
                "object": "model",
                "created": int(p.created_at.timestamp()),
                "owned_by": "minetune",
            }
            for p in programs
        ],
    }


@router.post("/chat/completions", response_model=None, openapi_extra=json_body_doc(ChatRequest))
async def chat_completions(
    request: Request, raw: bytes = Depends(raw_body), user: str = Depends(current_user)
) -> Response:
    """Answer with the program named by ``model`` (a :class:`ChatRequest`); store the exchange;
    learn from praise. Runs on the upstream pool under one of the user's slots (server/limits.py):
    a slow model never holds the threads that serve pages and feedback."""
    response: Response = await _state(request).upstream.respond(user, _chat_completions, request, raw, user)
    return response


def _chat_completions(request: Request, raw: bytes, user: str) -> JSONResponse | StreamingResponse:
    body = _parse(ChatRequest, raw)
    if isinstance(body, JSONResponse):
        return body
    state = _state(request)
    store = state.store(user)
    gateway = _gateway(request)
    program = program_for_model(body.model)
    max_tokens = body.max_completion_tokens or body.max_tokens
    try:
        prepared = gateway.prepare(store, program, [m.model_dump() for m in body.messages])
        model = state.model(prepared.version.model_spec, store, program)
        if body.stream:
            stream = gateway.stream(
                store, prepared, model, temperature=body.temperature, max_tokens=max_tokens
            )
        else:
            answer = gateway.complete(
                store, prepared, model, temperature=body.temperature, max_tokens=max_tokens
            )
    except MinetuneError as exc:
        return _failure(exc)
    name = model_name(prepared.program)
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _closing(_sse(stream, name, created, include_usage), state.upstream),
            media_type="text/event-stream",
            headers={RESPONSE_ID_HEADER: stream.response_id, "Cache-Control": "no-cache"},
        )
    prompt, completion = answer.prompt_tokens or 0, answer.completion_tokens or 0
    payload = {
        "id": answer.response_id,
        "object": "chat.completion",
        "created": created,
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": answer.finish_reason or "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
    return JSONResponse(payload, headers={RESPONSE_ID_HEADER: answer.response_id})


async def _closing(events: Generator[str, None, None], pool: UpstreamPool) -> AsyncIterator[str]:
    """Iterate a sync event generator on the upstream pool (upstream reads never block the event
    loop, nor the pages' threads) and close it when the response ends for any reason: a client
    that goes away cancels the response, and the stream's attempt is settled (interrupted) now,
    not by the garbage collector. The close waits for a read in progress to return."""
    body = pool.iterate(events)
    try:
        async for event in body:
            yield event
    finally:
        with anyio.CancelScope(shield=True):
            await body.aclose()


def _sse(
    stream: AnswerStream, model: str, created: int, include_usage: bool
) -> Generator[str, None, None]:
    """OpenAI ``chat.completion.chunk`` events, ending with ``data: [DONE]``; a stream that fails
    or ends early (ModelError) ends with an ``error`` event instead, without a finish_reason or
    ``[DONE]``, and its attempt is stored interrupted. Closing it closes the stream."""
    base = {"id": stream.response_id, "object": "chat.completion.chunk", "created": created, "model": model}

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        return f"data: {json.dumps(base | {'choices': choices} | extra)}\n\n"

    try:
        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        try:
            for delta in stream:
                yield event([{"index": 0, "delta": {"content": delta}, "finish_reason": None}])
        except MinetuneError as exc:
            error = {"message": str(exc), "type": "upstream_error", "code": "stream_interrupted"}
            yield f"data: {json.dumps({'error': error})}\n\n"
            return
    finally:
        stream.close()  # a no-op once the answer is complete
    answer = stream.answer
    assert answer is not None
    yield event([{"index": 0, "delta": {}, "finish_reason": answer.finish_reason or "stop"}])
    if include_usage:
        prompt, completion = answer.prompt_tokens or 0, answer.completion_tokens or 0
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        yield event([], usage=usage)
    yield "data: [DONE]\n\n"


@router.post("/feedback", response_model=None, openapi_extra=json_body_doc(FeedbackRequest))
def feedback(
    request: Request, raw: bytes = Depends(raw_body), user: str = Depends(current_user)
) -> dict[str, Any] | JSONResponse:
    """Rate a response by its id (a :class:`FeedbackRequest`: 1-5 stars, optional critique);
    learning runs in the background."""
    body = _parse(FeedbackRequest, raw)
    if isinstance(body, JSONResponse):
        return body
    store = _state(request).store(user)
    try:
        recorded = record_feedback(
            store, _gateway(request).learning, body.response_id, body.stars, body.critique
        )
    except MinetuneError as exc:
        return _failure(exc)
    return {"ok": True, "feedback_id": recorded.feedback_id}
