"""Server-rendered pages: Jinja2 templates in ``templates/`` and the shared page context."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates

TEMPLATES_DIR = Path(__file__).parent / "templates"

NAV = [
    ("/", "Chat"),
    ("/dataset", "Dataset"),
    ("/rules", "Rules"),
    ("/versions", "Versions"),
    ("/training", "Training"),
    ("/compare", "A/B"),
    ("/metrics", "Metrics"),
    ("/setup", "Setup"),
]


@functools.cache
def templates() -> Jinja2Templates:
    """The template environment, built on the first page rendered: importing Jinja2 takes about
    0.1 s, which ``minetune serve`` should not spend before it answers its first request."""
    from fastapi.templating import Jinja2Templates

    return Jinja2Templates(directory=TEMPLATES_DIR)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` inside the base layout (nav, user, active page), with ``csrf_field``
    (the hidden CSRF input every POST form includes) and the CSRF cookie set when new."""
    from minetune.server.guards import csrf_for, csrf_hidden_field, set_csrf_cookie

    state = request.app.state.minetune
    token, new_cookie = csrf_for(request)
    context.setdefault("user", getattr(request.state, "user", None))
    context.update(
        nav=NAV, path=request.url.path, auth_required=state.auth_required, csrf_field=csrf_hidden_field(token)
    )
    response = templates().TemplateResponse(request, template, context, status_code=status_code)
    if new_cookie is not None:
        set_csrf_cookie(response, new_cookie)
    return response
