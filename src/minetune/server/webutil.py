"""Small helpers shared by the server's routes: the state and the user's store, turning "not found"
into a 404, checked program names and texts, and replying to form posts.

Form pages (rules, versions, training, A/B) post plain HTML forms. A browser (or
``static/pageforms.js``) gets a 303 back to the page on success; a client that asks for JSON gets
the result as JSON. Errors always use the app's JSON error shape with a 4xx status, so the script
can show the message next to the form.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from minetune.errors import NotFoundError
from minetune.server.state import ServerState
from minetune.server.templating import render
from minetune.server.validation import MAX_PROGRAM_NAME
from minetune.store import Store


def server_state(request: Request) -> ServerState:
    """The :class:`ServerState` of the app serving ``request``."""
    state: ServerState = request.app.state.minetune
    return state


def user_store(request: Request, user: str) -> Store:
    """The store bound to ``user``: every id another user owns is "not found" through it."""
    return server_state(request).store(user)


def user_program(request: Request, user: str, program: str) -> tuple[Store, str]:
    """``user``'s store and the checked name of their ``program`` (see :func:`checked_program`)."""
    store = user_store(request, user)
    return store, checked_program(store, program)


def program_page(
    request: Request, template: str, store: Store, user: str, program: str, **context: Any
) -> HTMLResponse:
    """Render a page about ``user``'s ``program``, with every program of theirs to pick from."""
    programs = [p.name for p in store.programs()]
    return render(request, template, user=user, program=program, programs=programs, **context)


@contextmanager
def not_found_as_404() -> Iterator[None]:
    """Turn a NotFoundError (an unknown id, or another user's) into a 404 with its message."""
    try:
        yield
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


def bad_request(message: str, status: int = 400) -> HTTPException:
    """An HTTPException with ``message`` as the error message (400 unless told)."""
    return HTTPException(status_code=status, detail=message)


def checked_program(store: Store, name: str) -> str:
    """The program name if this user has it (``default`` always exists), else 404."""
    name = name.strip()
    if not name or len(name) > MAX_PROGRAM_NAME:
        raise bad_request(f"A program name has 1-{MAX_PROGRAM_NAME} characters.")
    with not_found_as_404():
        return store.program(name).name


def checked_text(value: str, what: str, limit: int) -> str:
    """Stripped ``value``; empty or longer than ``limit`` characters is a 400."""
    text = value.strip()
    if not text:
        raise bad_request(f"The {what} is empty.")
    if len(text) > limit:
        raise bad_request(f"The {what} is {len(text):,} characters; the limit is {limit:,}.")
    return text


def wants_json(request: Request) -> bool:
    """Whether the client asked for JSON (``Accept: application/json``)."""
    return "application/json" in request.headers.get("accept", "")


def done(request: Request, page: str, payload: dict[str, Any], status: int = 200) -> Response:
    """JSON for clients that ask for it, else a 303 back to ``page``."""
    if wants_json(request):
        return JSONResponse(payload | {"redirect": page}, status_code=status)
    return RedirectResponse(page, status_code=303)


def page_url(path: str, **params: Any) -> str:
    """``path`` with the given query parameters (None values left out)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{path}?{query}" if query else path
