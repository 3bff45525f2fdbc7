"""Small helpers shared by the rules, versions, training and A/B pages.

Pages post plain HTML forms. A browser (or ``static/pageforms.js``) gets a 303 back to the page
on success; a client that asks for JSON gets the result as JSON. Errors always use the app's
JSON error shape with a 4xx status, so the script can show the message next to the form.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from minetune.errors import NotFoundError
from minetune.server.state import ServerState
from minetune.store import Store

MAX_PROGRAM_NAME = 200


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.minetune
    return state


def user_store(request: Request, user: str) -> Store:
    """The Store of ``user`` (every query scoped to that user)."""
    return server_state(request).store(user)


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def done(request: Request, page: str, payload: dict[str, Any], status: int = 200) -> Response:
    """JSON for clients that ask for it, else a 303 back to ``page``."""
    if wants_json(request):
        return JSONResponse(payload | {"redirect": page}, status_code=status)
    return RedirectResponse(page, status_code=303)


def page_url(path: str, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{path}?{query}" if query else path


@contextmanager
def found() -> Iterator[None]:
    """Turn a missing (or someone else's) record into a 404 with the library's message."""
    try:
        yield
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


def bad_request(message: str, status: int = 400) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def checked_program(store: Store, name: str) -> str:
    """The program name if this user has it (``default`` always exists), else 404."""
    name = name.strip()
    if not name or len(name) > MAX_PROGRAM_NAME:
        raise bad_request(f"A program name has 1-{MAX_PROGRAM_NAME} characters.")
    with found():
        return store.program(name).name


def checked_text(value: str, what: str, limit: int) -> str:
    """Stripped ``value``; empty or longer than ``limit`` characters is a 400."""
    text = value.strip()
    if not text:
        raise bad_request(f"The {what} is empty.")
    if len(text) > limit:
        raise bad_request(f"The {what} is {len(text):,} characters; the limit is {limit:,}.")
    return text
