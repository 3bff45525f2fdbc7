"""Small helpers shared by the chat, dataset and metrics routes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException, Request

from minetune.errors import NotFoundError
from minetune.server.state import ServerState
from minetune.store import Store


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.minetune
    return state


def user_store(request: Request, user: str) -> Store:
    """The store bound to ``user``: every id another user owns is "not found" through it."""
    return server_state(request).store(user)


@contextmanager
def not_found_as_404() -> Iterator[None]:
    """Turn a NotFoundError (an unknown id, or another user's) into a 404 with its message."""
    try:
        yield
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
