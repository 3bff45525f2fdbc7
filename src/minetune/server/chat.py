"""The chat page and its JSON API: conversations, streaming answers, ratings, retries, and why an
answer came out as it did.

Answers stream as NDJSON (one JSON object per line: ``delta`` events, then ``done`` or
``error``). The model runs on the upstream pool (server/limits.py), under one of the user's
slots, and hands its deltas to the event loop, so neither the loop nor the threads that serve
pages wait on the model. Errors before the
first event (unknown ids, no model, the retry limit) are plain JSON errors with a 4xx/5xx status.
Learning from feedback (demo sync, critique → lesson) runs in the background after the response
has been written, one job at a time per program (:mod:`minetune.server.learning`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import Field

from minetune import review
from minetune.errors import MinetuneError, ModelError, NotFoundError
from minetune.loop import MAX_MESSAGE_CHARS, DeltaCallback, Session
from minetune.server.auth import current_user
from minetune.server.learning import server_learning
from minetune.server.state import ServerState
from minetune.server.validation import MAX_ID, MAX_PROGRAM_NAME, BodyId, InputModel, PathId, ProgramQuery
from minetune.server.webutil import not_found_as_404, program_page, server_state, user_store
from minetune.store import DEFAULT_PROGRAM, Store, browse

router = APIRouter()
log = logging.getLogger("minetune.server")

MAX_CRITIQUE_CHARS = 20_000


class SendBody(InputModel):
    message: str
    program: str = Field(default=DEFAULT_PROGRAM, max_length=MAX_PROGRAM_NAME)
    conversation_id: BodyId | None = None


class RateBody(InputModel):
    # parsed by minetune.feedback.parse_stars: 1-5, "4", "4/5", "★★★★"
    stars: int | Annotated[str, Field(max_length=50)]
    critique: str | None = None


class RetryBody(InputModel):
    critique: str | None = None


# -- models and sessions ---------------------------------------------------------------------------


def model_status(state: ServerState, store: Store, program: str) -> tuple[str | None, str | None]:
    """(model spec, None) when the program has a model to talk to, else (None, why not)."""
    if state.model_override is not None:
        return state.model_override.spec, None
    spec = store.active_version(program).model_spec or state.settings.model
    if spec:
        return spec, None
    from minetune.models.detect import detect_spec

    try:
        return detect_spec(state.settings), None
    except ModelError as exc:
        return None, str(exc)


def _session(state: ServerState, store: Store, program: str, need_model: bool = True) -> Session:
    """A Session on ``program`` whose learning runs in the background (see ``server_learning``)."""
    spec = store.active_version(program).model_spec  # an unknown program is a NotFoundError (404)
    model = None
    try:
        model = state.model(spec, store, program)
    except MinetuneError as exc:
        if need_model:
            raise HTTPException(status_code=503, detail=str(exc)) from exc
    return Session(store, state.settings, program, model=model, learning=server_learning(state))


def _learning(session: Session) -> str:
    """What happened to learning from the feedback this request recorded: 'queued', 'none' or 'off'."""
    if not session.settings.reoptimize:
        return "off"
    recorded = session.last_feedback  # a Session lives for one request
    return "queued" if recorded is not None and recorded.queued else "none"


# -- streaming -------------------------------------------------------------------------------------


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, ensure_ascii=False) + "\n").encode()


def _status(exc: BaseException) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ModelError):
        return 502
    return 400 if isinstance(exc, MinetuneError) else 500


def _message(exc: BaseException) -> str:
    if isinstance(exc, MinetuneError):
        return str(exc)
    log.error("Chat request failed", exc_info=exc)
    return f"Internal error ({type(exc).__name__}); see the server log."


Work = Callable[[DeltaCallback], dict[str, Any]]


async def _stream(request: Request, user: str, prepare: Callable[[], Work]) -> StreamingResponse:
    """Run ``prepare()`` and then the work it returns on the upstream pool, under one of ``user``'s
    slots (server/limits.py), and stream the work's deltas, then its result, as NDJSON. The
    event loop awaits the events: no thread of the pages' pool waits on the model."""
    pool = server_state(request).upstream
    slot = pool.admit(user)  # 429 when the user has too many answers in flight
    try:
        work = await pool.run(prepare)
    except BaseException:
        slot.release()
        raise
    events = pool.start(work, slot)  # the slot is released when the work ends
    first = await events.next()
    if first[0] == "error":
        raise HTTPException(status_code=_status(first[1]), detail=_message(first[1]))

    async def lines() -> AsyncIterator[bytes]:
        kind, payload = first
        while True:
            if kind == "delta":
                yield _line({"type": "delta", "text": payload})
            elif kind == "done":
                yield _line({"type": "done", **payload})
                return
            else:
                yield _line({"type": "error", "message": _message(payload)})
                return
            kind, payload = await events.next()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)


def _check_critique(critique: str | None) -> str | None:
    if critique is not None and len(critique) > MAX_CRITIQUE_CHARS:
        raise MinetuneError(
            f"The critique is {len(critique):,} characters; the limit is {MAX_CRITIQUE_CHARS:,}."
        )
    return critique


def _answer(store: Store, session: Session, turn_id: int, attempt_id: int) -> dict[str, Any]:
    return {
        "program": session.program,
        "conversation_id": session.conversation_id,
        "attempt_id": attempt_id,
        "turn": review.turn(store, turn_id).as_dict(),
        "learning": _learning(session),
    }


# -- pages -----------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def chat_page(
    request: Request,
    program: ProgramQuery = DEFAULT_PROGRAM,
    c: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    user: str = Depends(current_user),
) -> HTMLResponse:
    state = server_state(request)
    store = user_store(request, user)
    with not_found_as_404():
        store.program(program)
        if c is not None and browse.conversation_program(store, c) != program:
            raise NotFoundError(f"Program {program!r} has no conversation {c}.")
    spec, problem = model_status(state, store, program)
    return program_page(
        request,
        "chat.html",
        store,
        user,
        program,
        conversation_id=c,
        conversations=browse.conversations(store, program),
        model_spec=spec,
        model_problem=problem,
    )


# -- JSON API --------------------------------------------------------------------------------------


@router.get("/api/programs")
def list_programs(request: Request, user: str = Depends(current_user)) -> dict[str, Any]:
    store = user_store(request, user)
    return {"programs": [{"name": p.name, "description": p.description} for p in store.programs()]}


@router.get("/api/conversations")
def list_conversations(
    request: Request, program: ProgramQuery = DEFAULT_PROGRAM, user: str = Depends(current_user)
) -> dict[str, Any]:
    store = user_store(request, user)
    with not_found_as_404():
        rows = browse.conversations(store, program)
    return {
        "program": program,
        "conversations": [
            {
                "id": r.id,
                "title": r.title,
                "turns": r.turns,
                "created_at": r.created_at.isoformat(timespec="seconds"),
            }
            for r in rows
        ],
    }


@router.get("/api/conversations/{conversation_id}")
def get_conversation(
    request: Request, conversation_id: PathId, user: str = Depends(current_user)
) -> dict[str, Any]:
    store = user_store(request, user)
    with not_found_as_404():
        head, turns = review.conversation(store, conversation_id)
    return {"conversation": head, "turns": [t.as_dict() for t in turns]}


@router.post("/api/chat")
async def send_message(
    request: Request, body: SendBody, user: str = Depends(current_user)
) -> StreamingResponse:
    """Send a message (to a conversation, or a new one) and stream the answer as NDJSON."""
    return await _stream(request, user, lambda: _send(request, body, user))


def _send(request: Request, body: SendBody, user: str) -> Work:
    state = server_state(request)
    store = user_store(request, user)
    message = body.message
    if not message.strip():
        raise MinetuneError("The message is empty; type something to send.")
    if len(message) > MAX_MESSAGE_CHARS:
        raise MinetuneError(
            f"The message is {len(message):,} characters; the limit is {MAX_MESSAGE_CHARS:,}."
        )
    with not_found_as_404():
        session = _session(state, store, body.program)
        if body.conversation_id is not None:
            session.resume(body.conversation_id)

    def work(on_delta: DeltaCallback) -> dict[str, Any]:
        previous = session.last.attempt_id if session.last is not None else None
        response = session.send(message, on_delta=on_delta)
        result = _answer(store, session, response.turn_id, response.attempt_id)
        result["praise"] = None
        if session.last_praise and previous is not None:
            praised = review.attempt(store, previous)
            result["praise"] = {"phrase": session.last_praise, "attempt": praised.as_dict()}
        return result

    return work


@router.post("/api/attempts/{attempt_id}/rate")
def rate_attempt(
    request: Request, attempt_id: PathId, body: RateBody, user: str = Depends(current_user)
) -> dict[str, Any]:
    """Rate an answer 1-5 with an optional critique; learning from it runs in the background."""
    state = server_state(request)
    store = user_store(request, user)
    critique = _check_critique(body.critique)
    with not_found_as_404():
        program, _conversation, _turn = browse.attempt_location(store, attempt_id)
        session = _session(state, store, program, need_model=False)
        stars = session.rate(body.stars, critique, attempt_id=attempt_id)
        view = review.attempt(store, attempt_id)
    return {"stars": stars, "attempt": view.as_dict(), "learning": _learning(session)}


@router.post("/api/attempts/{attempt_id}/retry")
async def retry_attempt(
    request: Request, attempt_id: PathId, body: RetryBody | None = None, user: str = Depends(current_user)
) -> StreamingResponse:
    """Answer the attempt's message again with every earlier rating and critique folded in; a
    critique given here is recorded on this attempt first. Streams like ``/api/chat``."""
    return await _stream(request, user, lambda: _retry(request, attempt_id, body, user))


def _retry(request: Request, attempt_id: int, body: RetryBody | None, user: str) -> Work:
    state = server_state(request)
    store = user_store(request, user)
    critique = _check_critique(body.critique if body else None)
    with not_found_as_404():
        program, conversation_id, _turn = browse.attempt_location(store, attempt_id)
        session = _session(state, store, program)
        session.resume(conversation_id, attempt_id)

    def work(on_delta: DeltaCallback) -> dict[str, Any]:
        response = session.retry(critique, on_delta=on_delta)
        return _answer(store, session, response.turn_id, response.attempt_id) | {"praise": None}

    return work


@router.get("/api/attempts/{attempt_id}/why")
def why_attempt(request: Request, attempt_id: PathId, user: str = Depends(current_user)) -> dict[str, Any]:
    """What produced this answer: version, rules, demos, model and adapter, the system prompt."""
    store = user_store(request, user)
    with not_found_as_404():
        return review.explain(store, attempt_id).as_dict()
