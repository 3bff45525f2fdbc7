"""Who is asking, decided per request so that tokens added or revoked while the server runs count at
once (``minetune user add`` / ``user revoke`` in another process need no restart).

The server's auth mode (:attr:`ServerState.auth_mode`) is ``True`` (tokens always required: asked
for, or a non-loopback bind), ``False`` (``--no-auth`` on loopback: the single local user) or
``None`` (loopback, the default: tokens are required as soon as any token exists). A bearer token
(``Authorization: Bearer …`` or the ``minetune_token`` cookie the login page sets) is looked up
in the token table on every request, so a revoked token is refused by the next request."""

from __future__ import annotations

from fastapi import HTTPException, Request

from minetune.store.repo import DEFAULT_USER
from minetune.store.users import any_tokens, user_for_token

COOKIE = "minetune_token"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
_REQUEST_FLAG = "minetune_auth_required"


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def request_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE, "")


def tokens_required(request: Request) -> bool:
    """Whether this request must carry a valid token: the server's fixed mode, or (by default on
    loopback) whether any token exists right now. Asked once per request (one indexed query)."""
    cached = getattr(request.state, _REQUEST_FLAG, None)
    if cached is None:
        state = request.app.state.minetune
        cached = state.auth_mode if state.auth_mode is not None else any_tokens(state.db)
        setattr(request.state, _REQUEST_FLAG, cached)
    return bool(cached)


def current_user(request: Request) -> str:
    """FastAPI dependency: the user name the request acts as, or 401."""
    state = request.app.state.minetune
    if state.auth_mode is False:
        return DEFAULT_USER
    token = request_token(request)
    user = user_for_token(state.db, token) if token else None
    if user is not None:
        return user
    if not tokens_required(request):
        return DEFAULT_USER  # no token exists yet: a client's placeholder API key is not an error
    detail = "Invalid token." if token else "Authentication required: send 'Authorization: Bearer TOKEN'."
    raise HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})
