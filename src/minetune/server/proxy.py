"""The OpenAI-compatible learning proxy at ``/v1``: point any OpenAI client at ``<server>/v1``.

- ``GET /v1/models``: one model per program of the caller, ``minetune/<program>``.
- ``POST /v1/chat/completions``: answered by the program named in ``model`` (``minetune/<program>``;
  ``minetune`` or any upstream model name means ``default``), streamed (SSE) or not; every answer
  is stored with the exact prompt sent upstream. The response ``id`` (also sent as the
  ``X-Minetune-Response-Id`` header) is ``mt-<attempt id>``. Every other request field and every
  message shape pass through to the upstream unchanged, and its answer comes back as sent
  (:meth:`minetune.gateway.Gateway.chat_completion`); each of ``n`` choices is an attempt
  (``X-Minetune-Response-Ids``); an upstream refusal of the request keeps its status and error.
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
from minetune.gateway import (
    ChunkAnswerStream,
    Gateway,
    model_name,
    program_for_model,
    record_feedback,
    response_id,
)
from minetune.models.base import UnsupportedFieldError, UpstreamError
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
RESPONSE_IDS_HEADER = "X-Minetune-Response-Ids"  # one per choice (n>1), comma-separated


class ChatMessage(BaseModel):
    """One message, in any of the Chat Completions shapes: system, developer, user, assistant
    (``tool_calls``, ``refusal``, ``audio``), tool (``tool_call_id``) and legacy function roles;
    content a string or a list of parts (text, image_url, input_audio, file). Every field is
    passed upstream as sent."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(InputModel):
    """An OpenAI chat completions request. Every field besides ``model`` and ``messages`` (tools,
    tool_choice, response_format, n, stop, seed, logprobs, ...) reaches the upstream unchanged;
    the upstream judges them (its error comes back with its status)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(default="minetune", max_length=300)
    messages: list[ChatMessage] = Field(min_length=1, max_length=5000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=16)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)

    def upstream_params(self) -> dict[str, Any]:
        """The request fields for upstream, as sent (unset ones left out)."""
        return self.model_dump(exclude={"model", "messages", "stream"}, exclude_unset=True)


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


# Upstream statuses about the request itself, passed on to the client with the upstream's error
# (auth, missing model and server errors are minetune's configuration or the upstream's: 502).
CLIENT_STATUSES = frozenset({400, 409, 413, 415, 422, 429})


def _failure(exc: MinetuneError) -> JSONResponse:
    """The status for a library error: unknown records 404, too long 413, a field the backend
    cannot honour 400 (naming it), an upstream refusal of the request its own status and error,
    other upstream failures 502, else 400."""
    if isinstance(exc, UpstreamError) and exc.status in CLIENT_STATUSES:
        error = dict(exc.error or {"message": str(exc)})
        error.setdefault("type", "invalid_request_error")
        error.setdefault("message", str(exc))
        return JSONResponse({"error": error}, status_code=exc.status)
    if isinstance(exc, UnsupportedFieldError):
        body = {"error": {"message": str(exc), "type": "invalid_request_error", "param": exc.field}}
        return JSONResponse(body, status_code=400)
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
    params = body.upstream_params()
    try:
        prepared = gateway.prepare(store, program, [m.model_dump(exclude_unset=True) for m in body.messages])
        model = state.model(prepared.version.model_spec, store, program)
        if body.stream:
            stream = gateway.chat_completion_stream(store, prepared, model, params)
        else:
            answer = gateway.chat_completion(store, prepared, model, params)
    except MinetuneError as exc:
        return _failure(exc)
    name = model_name(prepared.program)
    if body.stream:
        return StreamingResponse(
            _closing(_sse(stream, name), state.upstream),
            media_type="text/event-stream",
            headers={
                RESPONSE_ID_HEADER: stream.response_id,
                RESPONSE_IDS_HEADER: ",".join(response_id(a) for a in stream.attempt_ids),
                "Cache-Control": "no-cache",
            },
        )
    ids = [response_id(a) for a in answer.attempt_ids]
    payload = dict(answer.data) | {"id": answer.response_id, "model": name}
    payload.setdefault("object", "chat.completion")
    payload.setdefault("created", int(time.time()))
    if not payload.get("usage"):
        payload["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    payload["minetune"] = {"response_ids": ids}
    headers = {RESPONSE_ID_HEADER: answer.response_id, RESPONSE_IDS_HEADER: ",".join(ids)}
    return JSONResponse(payload, headers=headers)


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


def _sse(stream: ChunkAnswerStream, model: str) -> Generator[str, None, None]:
    """The upstream's ``chat.completion.chunk`` events as they come (``id`` the response id,
    ``model`` the program's), ending with ``data: [DONE]``; a stream that fails or ends early
    (ModelError) ends with an ``error`` event instead, without ``[DONE]``, and its attempts are
    stored interrupted. Closing it closes the stream."""
    rewrite = {"id": stream.response_id, "model": model}
    try:
        try:
            for chunk in stream:
                yield f"data: {json.dumps(chunk | rewrite)}\n\n"
        except MinetuneError as exc:
            error = {"message": str(exc), "type": "upstream_error", "code": "stream_interrupted"}
            yield f"data: {json.dumps({'error': error})}\n\n"
            return
    finally:
        stream.close()  # a no-op once the answer is complete
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
