"""The FastAPI application: auth, error shapes, and the routers for pages, the JSON API and the proxy."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minetune.config import Settings
from minetune.errors import MinetuneError
from minetune.models.base import ChatModel
from minetune.server.limits import BodyLimit
from minetune.server.state import ServerState
from minetune.store.users import any_tokens

# Larger bodies are refused as they arrive (server/limits.py); a single message is capped lower by the loop.
MAX_BODY_BYTES = 4 * 1024 * 1024
STATIC_DIR = Path(__file__).parent / "static"
# The embedder warm-up waits for the first answer, or this long when no request comes.
WARM_UP_AFTER_S = 2.0


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    # The OpenAI error shape, so OpenAI clients show the message; the web UI reads the same field.
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def create_app(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    require_auth: bool | None = None,
    model: ChatModel | None = None,
    warm_up: bool = False,
    allowed_hosts: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
) -> FastAPI:
    """Build the app. Auth is on when asked or on a non-loopback host; on loopback by default it is
    on while any token exists (checked per request, so new and revoked tokens count at once).
    Turning it off on a non-loopback host is refused.

    ``allowed_hosts`` / ``allowed_origins`` add to the settings' (see :mod:`minetune.server.guards`).
    ``warm_up`` loads the demo embedder in the background once the server has answered its first
    request, so the first request that retrieves demos does not pay for it and the load does not
    slow start-up (``minetune serve`` sets it)."""
    from minetune.server.auth import is_loopback
    from minetune.server.guards import GuardMiddleware, Guards

    if require_auth is False and not is_loopback(host):
        raise MinetuneError(
            f"Refusing --no-auth on {host}: anyone who can reach it could read and change everything. "
            "Bind to 127.0.0.1, or create a token with `minetune user add NAME`."
        )
    guards = Guards.for_bind(
        host,
        (*settings.allowed_hosts, *allowed_hosts),
        (*settings.allowed_origins, *allowed_origins),
    )
    state = ServerState.open(settings, auth_required=None, model=model)
    # On loopback by default (require_auth None) auth follows the token table per request, so
    # `minetune user add` / `user revoke` take effect at once; asked for, or off loopback, it is on.
    forced = require_auth if require_auth is not None else (True if not is_loopback(host) else None)
    if forced and not any_tokens(state.db):
        state.close()
        raise MinetuneError(
            f"Refusing to serve on {host} without authentication: no user tokens exist. "
            "Create one with `minetune user add NAME`, or bind to 127.0.0.1."
        )
    state.auth_mode = forced

    warm = EmbedderWarmUp(settings.embedder, settings.home) if warm_up and settings.reoptimize else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if warm is not None:
            state.submit(warm.run)
        yield
        if warm is not None:
            warm.cancel()
        state.close()

    app = FastAPI(
        title="minetune", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
        openapi_url=None,  # both served behind auth by _api_docs
    )
    app.state.minetune = state
    app.state.guards = guards
    if warm is not None:
        app.add_middleware(FirstAnswer, on_answer=warm.start)
    app.add_middleware(GuardMiddleware, guards=guards)
    _api_docs(app)

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)  # outermost: counts bytes before anything reads

    @app.exception_handler(MinetuneError)
    async def minetune_error(_request: Request, exc: MinetuneError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for problem in exc.errors():
            where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body")
            parts.append(f"{where}: {problem.get('msg')}" if where else str(problem.get("msg")))
        return _error(422, "Invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        kind = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        response = _error(exc.status_code, str(exc.detail), kind)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    from minetune.server.guards import csrf_required, csrf_unless_anonymous

    form_guard = [Depends(csrf_unless_anonymous)]  # form posts of the pages need a CSRF token
    from minetune.server import pages

    app.include_router(pages.router, dependencies=[Depends(csrf_required)])
    from minetune.server import chat, dataset, metrics

    app.include_router(chat.router)
    app.include_router(dataset.router)
    app.include_router(metrics.router)
    from minetune.server import learned

    app.include_router(learned.router, dependencies=form_guard)
    from minetune.server import training

    app.include_router(training.router, dependencies=form_guard)
    from minetune.server import compare

    app.include_router(compare.router, dependencies=form_guard)
    from minetune.server import proxy

    app.include_router(proxy.router)
    from minetune.server import responses

    app.include_router(responses.router)
    from minetune.server import health

    app.include_router(health.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _api_docs(app: FastAPI) -> None:
    """``/openapi.json`` and ``/api/docs`` (Swagger UI), for signed-in users only when auth is on."""
    from fastapi.openapi.docs import get_swagger_ui_html

    from minetune.server.auth import current_user

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(current_user)])
    def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/api/docs", include_in_schema=False, dependencies=[Depends(current_user)])
    def api_docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="minetune API")


class EmbedderWarmUp:
    """Loads the demo embedder in a background thread once :meth:`start` is called (the first
    answer) or after ``WARM_UP_AFTER_S``: the load (onnxruntime and numpy, about a second of CPU)
    would otherwise compete with start-up for the interpreter and the cores."""

    def __init__(self, name: str, home: Path) -> None:
        self.name, self.home = name, home
        self._go = threading.Event()
        self._cancelled = False

    def start(self) -> None:
        self._go.set()

    def cancel(self) -> None:
        """The server is stopping: a warm-up still waiting does nothing."""
        self._cancelled = True
        self._go.set()

    def run(self) -> None:
        import logging

        self._go.wait(WARM_UP_AFTER_S)
        if self._cancelled:
            return
        try:
            from minetune.learn.embed import load_embedder

            load_embedder(self.name, self.home)
        except Exception as exc:  # the first request that needs it will report the problem
            log = logging.getLogger("minetune.server")
            log.warning("Could not preload the embedder %s: %s", self.name, exc)


class FirstAnswer:
    """ASGI middleware that calls ``on_answer`` once, when the first HTTP response has been sent
    in full; after that it only passes requests through."""

    def __init__(self, app: ASGIApp, on_answer: Callable[[], None]) -> None:
        self.app = app
        self.on_answer = on_answer
        self.answered = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.answered or scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_and_note(message: Message) -> None:
            await send(message)
            finished = message["type"] == "http.response.body" and not message.get("more_body", False)
            if finished and not self.answered:
                self.answered = True
                self.on_answer()

        await self.app(scope, receive, send_and_note)


def _version() -> str:
    from minetune import __version__

    return __version__
