"""Pages that need no model: setup (what was found and how to connect one), login and logout."""

from __future__ import annotations

from pathlib import Path
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


TEST_PROMPT = "Reply with the single word: ready"
TEST_MAX_TOKENS = 8


@router.get("/setup", response_class=HTMLResponse)
def setup_page(request: Request, user: str = Depends(current_user)) -> HTMLResponse:
    return _render_setup(request, user)


@router.post("/setup/test", response_class=HTMLResponse)  # the router checks the CSRF token
def setup_test(
    request: Request, spec: Annotated[str, AfterValidator(check_text), Form(max_length=500)] = "",
    user: str = Depends(current_user),
) -> HTMLResponse:
    """Send one tiny request to the model ``spec`` names and show the answer or the error."""
    import time

    from minetune.errors import MinetuneError
    from minetune.models import resolve_model

    spec = spec.strip()
    if not spec:
        return _render_setup(request, user, 400, tested=spec, test_error="Type or pick a model spec first.")
    start = time.perf_counter()
    try:
        model = resolve_model(request.app.state.minetune.settings, spec)
        reply = model.complete([{"role": "user", "content": TEST_PROMPT}], max_tokens=TEST_MAX_TOKENS)
    except MinetuneError as exc:
        return _render_setup(request, user, 200, tested=spec, test_error=str(exc))
    elapsed = time.perf_counter() - start
    answer = reply.text.strip()[:200]
    return _render_setup(request, user, tested=spec, test_reply=answer, test_seconds=elapsed)


@router.post("/setup/use", response_class=HTMLResponse)  # the router checks the CSRF token
def setup_use(
    request: Request,
    spec: Annotated[str, AfterValidator(check_text), Form(max_length=500)] = "",
    program: Annotated[str, AfterValidator(check_text), Form(max_length=200)] = "default",
    user: str = Depends(current_user),
) -> HTMLResponse:
    """Make ``spec`` the model of ``program``: a new version (everything learned is kept)."""
    from minetune.errors import MinetuneError
    from minetune.models import parse_spec

    spec, program = spec.strip(), program.strip() or "default"
    try:
        parse_spec(spec)
        version = request.app.state.minetune.store(user).add_version(
            program, note=f"model: {spec}", model_spec=spec
        )
    except MinetuneError as exc:
        return _render_setup(request, user, 400, tested=spec, test_error=str(exc))
    used = f"{program} now answers with {spec} (v{version.number})."
    return _render_setup(request, user, tested=spec, used=used)


@router.post("/setup/default", response_class=HTMLResponse)  # the router checks the CSRF token
def setup_default(
    request: Request,
    spec: Annotated[str, AfterValidator(check_text), Form(max_length=500)] = "",
    user: str = Depends(current_user),
) -> HTMLResponse:
    """Save ``spec`` as ``model`` in config.toml; this server uses it at once for every program
    without a model of its own."""
    import os

    from minetune.config import save_default_model
    from minetune.errors import MinetuneError
    from minetune.models import parse_spec

    state = request.app.state.minetune
    spec = spec.strip()
    try:
        parse_spec(spec)
        path = save_default_model(state.settings.home, spec)
    except MinetuneError as exc:
        return _render_setup(request, user, 400, tested=spec, test_error=str(exc))
    state.use_default_model(spec)
    saved = f"Saved {spec} as the default model in {path}; programs without their own model use it now."
    if os.environ.get("MINETUNE_MODEL", "").strip() not in ("", spec):
        saved += " MINETUNE_MODEL is set in this server's environment and wins at the next start."
    return _render_setup(request, user, tested=spec, saved=saved)


def local_model_folders(roots: tuple[Path, ...]) -> list[str]:
    """``hf:`` specs of the model folders (holding a config.json) one level under ``roots``."""
    found = []
    for root in roots:
        try:
            children = sorted(root.iterdir())
        except OSError:
            continue
        found += [f"hf:{child}" for child in children if (child / "config.json").is_file()]
    return found


def _render_setup(request: Request, user: str, status_code: int = 200, **test: object) -> HTMLResponse:
    from minetune.models.detect import HOW_TO_CONNECT, describe_detection, ollama_models

    state = request.app.state.minetune
    settings = state.settings
    spec = settings.model or (state.model_override.spec if state.model_override is not None else None)
    return render(
        request,
        "setup.html",
        status_code=status_code,
        user=user,
        model_spec=spec,
        detection=describe_detection(settings),
        ollama=[f"ollama:{name}" for name in ollama_models(settings) or []],
        local_models=local_model_folders(settings.model_roots),
        how_to_connect=HOW_TO_CONNECT,
        database=_redact(settings.resolved_database_url),
        **test,
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
