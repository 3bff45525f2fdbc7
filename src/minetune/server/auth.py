"""Who is asking. Loopback with no tokens issued: the single local user. Otherwise a bearer token
(``Authorization: Bearer …`` or the ``minetune_token`` cookie the login page sets) is required."""

from __future__ import annotations

from fastapi import HTTPException, Request

from minetune.store.repo import DEFAULT_USER
from minetune.store.users import user_for_token

COOKIE = "minetune_token"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def request_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE, "")


def current_user(request: Request) -> str:
    """FastAPI dependency: the user name the request acts as, or 401."""
    state = request.app.state.minetune
    if not state.auth_required:
        return DEFAULT_USER
    token = request_token(request)
    user = user_for_token(state.db, token) if token else None
    if user is None:
        detail = "Invalid token." if token else "Authentication required: send 'Authorization: Bearer TOKEN'."
        raise HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})
    return user
