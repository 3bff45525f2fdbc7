"""Pages that need no model: setup (what was found and how to connect one), login and logout."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import AfterValidator

from minetune.server.auth import COOKIE, current_user
from minetune.server.templating import render
from minetune.server.validation import FormText, check_text
from minetune.store.db import _redact
from minetune.store.users import user_for_token

router = APIRouter()


@router.get("/setup", response_class=HTMLResponse)
def setup_page(request: Request, user: str = Depends(current_user)) -> HTMLResponse:
    from minetune.models.detect import HOW_TO_CONNECT, describe_detection

    state = request.app.state.minetune
    settings = state.settings
    spec = settings.model or (state.model_override.spec if state.model_override is not None else None)
    return render(
        request,
        "setup.html",
        user=user,
        model_spec=spec,
        detection=describe_detection(settings),
        how_to_connect=HOW_TO_CONNECT,
        database=_redact(settings.resolved_database_url),
    )


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request, next: Annotated[str, AfterValidator(check_text), Query(max_length=2000)] = "/"
) -> HTMLResponse:
    return render(request, "login.html", next=_safe_next(next))


@router.post("/login", response_model=None)
def login(
    request: Request,
    token: Annotated[str, AfterValidator(check_text), Form(max_length=1000)] = "",
    next: FormText = "/",
) -> HTMLResponse | RedirectResponse:
    state = request.app.state.minetune
    if user_for_token(state.db, token.strip()) is None:
        return render(request, "login.html", status_code=401, next=_safe_next(next), error="Unknown token.")
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict")
    return response


@router.get("/logout")
def logout() -> RedirectResponse:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


def _safe_next(target: str) -> str:
    # Only same-site paths: never redirect a login to another host.
    return target if target.startswith("/") and not target.startswith("//") else "/"
