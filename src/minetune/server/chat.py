"""The chat page and its JSON API: conversations, streaming answers, ratings, retries, and why an
answer came out as it did.

Answers stream as NDJSON (one JSON object per line: a ``start`` event with the stream's stop
token, ``delta`` events, then ``done`` or ``error``). Answers are Markdown: every attempt in a
reply carries ``html``, rendered and sanitised on the server (:mod:`minetune.server.markdown`), and
while an answer streams a ``delta`` carries a fresh ``html`` snapshot of the text so far at most
every :data:`SNAPSHOT_SECONDS`, so the page never parses HTML of its own making. ``POST
/api/streams/{token}/stop`` stops an answer: the text so far is stored as the answer (rateable)
and the stream ends with ``done`` as usual. Stop tokens live in this process (one server process
per store, as ``minetune serve`` runs it).

The model runs on the upstream pool (server/limits.py), under one of the user's slots, and hands
its deltas to the event loop, so neither the loop nor the threads that serve pages wait on the
model. Errors before the first event (unknown ids, no model, the retry limit) are plain JSON
errors with a 4xx/5xx status. Learning from feedback (demo sync, critique → lesson) runs in the
background after the response has been written, one job at a time per program
(:mod:`minetune.server.learning`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import Field

from minetune import review
from minetune.app import conversations as conversations_core
from minetune.app.learning_status import learning_status
from minetune.errors import MinetuneError, ModelError, NotFoundError
from minetune.loop import MAX_MESSAGE_CHARS, DeltaCallback, Session
from minetune.server.auth import current_user
from minetune.server.learning import server_learning
from minetune.server.markdown import render_markdown
from minetune.server.state import ServerState
from minetune.server.validation import MAX_ID, MAX_PROGRAM_NAME, BodyId, InputModel, PathId, ProgramQuery
from minetune.server.webutil import not_found_as_404, program_page, server_state, user_store
from minetune.store import DEFAULT_PROGRAM, Store, browse

router = APIRouter()
log = logging.getLogger("minetune.server")

MAX_CRITIQUE_CHARS = 20_000
SNAPSHOT_SECONDS = 0.2  # at most this often a streamed delta carries the rendered answer so far


class SendBody(InputModel):
    message: str
    program: str = Field(default=DEFAULT_PROGRAM, max_length=MAX_PROGRAM_NAME)
    conversation_id: BodyId | None = None
    # Edit and resend: the turn whose message this replaces; the answer goes to a new branch.
    edit_of: BodyId | None = None


class RenameBody(InputModel):
    title: Annotated[str, Field(max_length=1000)]


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

# Stop token -> (user, event) of each answer streaming in this process.
_stops: dict[str, tuple[str, threading.Event]] = {}
_stops_lock = threading.Lock()


def _register_stop(user: str) -> tuple[str, threading.Event]:
    token, event = secrets.token_urlsafe(16), threading.Event()
    with _stops_lock:
        _stops[token] = (user, event)
    return token, event


def _unregister_stop(token: str) -> None:
    with _stops_lock:
        _stops.pop(token, None)


async def _stream(
    request: Request, user: str, prepare: Callable[[threading.Event], Work]
) -> StreamingResponse:
    """Run ``prepare(stop)`` and then the work it returns on the upstream pool, under one of
    ``user``'s slots (server/limits.py), and stream the work's deltas, then its result, as NDJSON.
    The event loop awaits the events: no thread of the pages' pool waits on the model. Setting
    ``stop`` (``POST /api/streams/{token}/stop``) ends the answer where it is."""
    pool = server_state(request).upstream
    slot = pool.admit(user)  # 429 when the user has too many answers in flight
    token, stop = _register_stop(user)
    try:
        work = await pool.run(prepare, stop)
    except BaseException:
        slot.release()
        _unregister_stop(token)
        raise
    events = pool.start(work, slot)  # the slot is released when the work ends
    first = await events.next()
    if first[0] == "error":
        _unregister_stop(token)
        raise HTTPException(status_code=_status(first[1]), detail=_message(first[1]))

    async def lines() -> AsyncIterator[bytes]:
        kind, payload = first
        text, rendered_at = "", 0.0
        try:
            yield _line({"type": "start", "stream": token})
            while True:
                if kind == "delta":
                    text += payload
                    event = {"type": "delta", "text": payload}
                    if time.monotonic() - rendered_at >= SNAPSHOT_SECONDS:
                        event["html"] = await asyncio.to_thread(render_markdown, text)
                        rendered_at = time.monotonic()
                    yield _line(event)
                elif kind == "done":
                    yield _line({"type": "done", **payload})
                    return
                else:
                    yield _line({"type": "error", "message": _message(payload)})
                    return
                kind, payload = await events.next()
        finally:
            _unregister_stop(token)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)


def _check_critique(critique: str | None) -> str | None:
    if critique is not None and len(critique) > MAX_CRITIQUE_CHARS:
        raise MinetuneError(
            f"The critique is {len(critique):,} characters; the limit is {MAX_CRITIQUE_CHARS:,}."
        )
    return critique


def _attempt_dict(view: review.AttemptView) -> dict[str, Any]:
    """An attempt for the page: its fields plus ``html``, the answer rendered and sanitised."""
    return view.as_dict() | {"html": render_markdown(view.text)}


def _turn_dict(view: review.TurnView) -> dict[str, Any]:
    return view.as_dict() | {"attempts": [_attempt_dict(a) for a in view.attempts]}


def _answer(store: Store, session: Session, turn_id: int, attempt_id: int) -> dict[str, Any]:
    return {
        "program": session.program,
        "conversation_id": session.conversation_id,
        "attempt_id": attempt_id,
        "turn": _turn_dict(review.turn(store, turn_id)),
        "learning": _learning(session),
    }


def _summary(row: browse.ConversationSummary) -> dict[str, Any]:
    return {
        "id": row.id,
        "title": row.title,
        "turns": row.turns,
        "created_at": row.created_at.isoformat(timespec="seconds"),
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
        root = conversations_core.thread(store, c).root.id if c is not None else None
    spec, problem = model_status(state, store, program)
    return program_page(
        request,
        "chat.html",
        store,
        user,
        program,
        conversation_id=c,
        root_id=root,
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
    request: Request,
    program: ProgramQuery = DEFAULT_PROGRAM,
    q: Annotated[str, Query(max_length=conversations_core.MAX_QUERY_CHARS)] = "",
    user: str = Depends(current_user),
) -> dict[str, Any]:
    """The program's conversations, newest first; with ``q``, those whose title, messages or
    answers contain it."""
    store = user_store(request, user)
    with not_found_as_404():
        rows = conversations_core.search(store, program, q)
    return {"program": program, "query": q, "conversations": [_summary(r) for r in rows]}


@router.get("/api/conversations/{conversation_id}")
def get_conversation(
    request: Request, conversation_id: PathId, user: str = Depends(current_user)
) -> dict[str, Any]:
    """A conversation or branch as the chat shows it: its chain of turns (a branch's starts with
    its parent's turns before the fork), each turn at a fork point with ``branch``: the
    conversation ids to switch between and which one is shown."""
    store = user_store(request, user)
    with not_found_as_404():
        program = browse.conversation_program(store, conversation_id)
        thread = conversations_core.thread(store, conversation_id)
    conv, root = thread.conversation, thread.root
    head = {
        "id": conv.id,
        "title": root.title,
        "program": program,
        "root_id": root.id,
        "parent_id": conv.parent_id,
        "created_at": conv.created_at.isoformat(timespec="seconds"),
    }
    turns = []
    for turn in thread.turns:
        item = _turn_dict(review.turn_view(turn))
        if turn.id in thread.branches:
            options, shown = thread.branches[turn.id]
            item["branch"] = {"conversations": options, "shown": shown}
        turns.append(item)
    return {"conversation": head, "turns": turns}


@router.post("/api/conversations/{conversation_id}/rename")
def rename_conversation(
    request: Request, conversation_id: PathId, body: RenameBody, user: str = Depends(current_user)
) -> dict[str, Any]:
    """Give a conversation (and its branches) a new title."""
    store = user_store(request, user)
    with not_found_as_404():
        title = conversations_core.rename(store, conversation_id, body.title)
    return {"id": conversation_id, "title": title}


@router.delete("/api/conversations/{conversation_id}")
def delete_conversation(
    request: Request, conversation_id: PathId, user: str = Depends(current_user)
) -> dict[str, Any]:
    """Forget a conversation with every branch of it (as ``minetune forget --conversation``)."""
    store = user_store(request, user)
    with not_found_as_404():
        report = conversations_core.delete(store, server_state(request).settings, conversation_id)
    return {"deleted": report.conversation_ids, "turns": report.turns, "limits": report.limits}


@router.post("/api/streams/{token}/stop")
def stop_stream(
    token: Annotated[str, Path(max_length=64)], user: str = Depends(current_user)
) -> dict[str, Any]:
    """Stop an answer streaming in this process: the text so far becomes the stored answer."""
    with _stops_lock:
        found = _stops.get(token)
    if found is None or found[0] != user:
        raise HTTPException(
            status_code=404, detail="No answer is streaming with that token (it may have ended)."
        )
    found[1].set()
    return {"stopped": True}


@router.get("/api/programs/{program}/learning")
def program_learning(
    request: Request,
    program: Annotated[str, Path(max_length=MAX_PROGRAM_NAME)],
    user: str = Depends(current_user),
) -> dict[str, Any]:
    """The program's active version, rule count and whether background learning is running (the
    chat polls it after feedback to say "learned a rule · now v7")."""
    store = user_store(request, user)
    with not_found_as_404():
        return learning_status(store, program).as_dict()


@router.post("/api/chat")
async def send_message(
    request: Request, body: SendBody, user: str = Depends(current_user)
) -> StreamingResponse:
    """Send a message (to a conversation, or a new one) and stream the answer as NDJSON."""
    return await _stream(request, user, lambda stop: _send(request, body, user, stop))


def _send(request: Request, body: SendBody, user: str, stop: threading.Event) -> Work:
    state = server_state(request)
    store = user_store(request, user)
    message = body.message
    if not message.strip():
        raise MinetuneError("The message is empty; type something to send.")
    if len(message) > MAX_MESSAGE_CHARS:
        raise MinetuneError(
            f"The message is {len(message):,} characters; the limit is {MAX_MESSAGE_CHARS:,}."
        )
    branch = None
    with not_found_as_404():
        session = _session(state, store, body.program)
        if body.edit_of is not None:
            if browse.turn_location(store, body.edit_of)[0] != body.program:
                raise NotFoundError(f"Program {body.program!r} has no turn {body.edit_of}.")
            branch = conversations_core.fork(store, body.edit_of)
            session.resume(branch)
        elif body.conversation_id is not None:
            session.resume(body.conversation_id)

    def work(on_delta: DeltaCallback) -> dict[str, Any]:
        previous = session.last.attempt_id if session.last is not None else None
        try:
            response = session.send(message, on_delta=on_delta, stop=stop)
        except BaseException:
            if branch is not None:  # no empty branch is left behind by a failed answer
                conversations_core.discard_fork(store, state.settings, branch)
            raise
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
    return {"stars": stars, "attempt": _attempt_dict(view), "learning": _learning(session)}


@router.post("/api/attempts/{attempt_id}/retry")
async def retry_attempt(
    request: Request, attempt_id: PathId, body: RetryBody | None = None, user: str = Depends(current_user)
) -> StreamingResponse:
    """Answer the attempt's message again with every earlier rating and critique folded in; a
    critique given here is recorded on this attempt first. Streams like ``/api/chat``."""
    return await _stream(request, user, lambda stop: _retry(request, attempt_id, body, user, stop))


def _retry(
    request: Request, attempt_id: int, body: RetryBody | None, user: str, stop: threading.Event
) -> Work:
    state = server_state(request)
    store = user_store(request, user)
    critique = _check_critique(body.critique if body else None)
    with not_found_as_404():
        program, conversation_id, _turn = browse.attempt_location(store, attempt_id)
        session = _session(state, store, program)
        session.resume(conversation_id, attempt_id)

    def work(on_delta: DeltaCallback) -> dict[str, Any]:
        response = session.retry(critique, on_delta=on_delta, stop=stop)
        return _answer(store, session, response.turn_id, response.attempt_id) | {"praise": None}

    return work


@router.get("/api/attempts/{attempt_id}/why")
def why_attempt(request: Request, attempt_id: PathId, user: str = Depends(current_user)) -> dict[str, Any]:
    """What produced this answer: version, rules, demos, model and adapter, the system prompt."""
    store = user_store(request, user)
    with not_found_as_404():
        return review.explain(store, attempt_id).as_dict()
