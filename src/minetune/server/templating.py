"""Server-rendered pages: Jinja2 templates in ``templates/`` and the shared page context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

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


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` inside the base layout (nav, user, active page)."""
    state = request.app.state.minetune
    context.setdefault("user", getattr(request.state, "user", None))
    context.update(nav=NAV, path=request.url.path, auth_required=state.auth_required)
    return templates.TemplateResponse(request, template, context, status_code=status_code)
