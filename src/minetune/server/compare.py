"""The blind A/B page: pick two arms and a prompt, read answers A and B without knowing which arm
wrote which, pick the better one (or a tie), and see win rates with 95% Wilson intervals."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from minetune.learn import abtest
from minetune.loop import MAX_MESSAGE_CHARS
from minetune.server.auth import current_user
from minetune.server.templating import render
from minetune.server.validation import FormId, FormText, PathId, ProgramForm, ProgramQuery
from minetune.server.webutil import (
    bad_request,
    checked_text,
    done,
    not_found_as_404,
    page_url,
    program_page,
    server_state,
    user_program,
    user_store,
)
from minetune.store import comparisons as comparisons_db

router = APIRouter()

RECENT_PROMPTS = 20
HISTORY_ROWS = 30

OptionalNumber = FormId


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request, program: ProgramQuery = "default", user: str = Depends(current_user)
) -> Response:
    store, program = user_program(request, user, program)
    versions = store.versions(program)
    active = store.active_version(program)
    parent = next((v for v in versions if v.id == active.parent_id), None)
    rows = comparisons_db.list_comparisons(store, program)
    return program_page(
        request,
        "compare.html",
        store,
        user,
        program,
        versions=list(reversed(versions)),
        first=active.number,
        second=(parent or versions[0]).number,
        adapter_problem=abtest.adapter_unavailable(store, program),
        recent=comparisons_db.recent_messages(store, program, RECENT_PROMPTS),
        matchups=abtest.matchups(rows),
        history=rows[:HISTORY_ROWS],
        max_prompt=MAX_MESSAGE_CHARS,
    )


@router.post("/compare")
async def start_comparison(
    request: Request,
    program: ProgramForm = "default",
    mode: Annotated[Literal["versions", "adapter"], Form()] = "versions",
    first: OptionalNumber = None,
    second: OptionalNumber = None,
    prompt: FormText = "",
    turn_id: OptionalNumber = None,
    user: str = Depends(current_user),
) -> Response:
    """Answer the prompt with both arms and store an undecided comparison. The reply names no arm.
    The model calls run on the upstream pool under one of the user's slots (server/limits.py)."""
    arguments = (request, user, program, mode, first, second, prompt, turn_id)
    response: Response = await server_state(request).upstream.respond(user, _start_comparison, *arguments)
    return response


def _start_comparison(
    request: Request,
    user: str,
    program: str,
    mode: str,
    first: int | None,
    second: int | None,
    prompt: str,
    turn_id: int | None,
) -> Response:
    state = server_state(request)
    store, program = user_program(request, user, program)
    with not_found_as_404():
        if turn_id is not None:
            text = comparisons_db.turn_message(store, program, turn_id)
        else:
            text = checked_text(prompt, "prompt", MAX_MESSAGE_CHARS)
        if mode == "adapter":
            arms = abtest.adapter_arms(store, program)
        elif first is None or second is None:
            raise bad_request("Pick the two versions to compare.")
        else:
            arms = abtest.version_arms(store, program, first, second)
        row = abtest.compare(store, state.settings, program, arms, text, state.model, turn_id=turn_id)
    url = f"/compare/{row.id}"
    return done(request, url, {"id": row.id, "url": url}, status=201)


@router.get("/compare/{comparison_id}", response_class=HTMLResponse)
def comparison_page(request: Request, comparison_id: PathId, user: str = Depends(current_user)) -> Response:
    store = user_store(request, user)
    with not_found_as_404():
        row = comparisons_db.get_comparison(store, comparison_id)
        program = comparisons_db.comparison_program(store, comparison_id)
    matchup = None
    if row.winner is not None:  # only once picked: until then the page must not tell the arms apart
        pair = {row.arm_a, row.arm_b}
        decided = [r for r in comparisons_db.list_comparisons(store, program) if {r.arm_a, r.arm_b} == pair]
        matchup = next(iter(abtest.matchups(decided)), None)
    return render(request, "comparison.html", user=user, program=program, row=row, matchup=matchup)


@router.post("/compare/{comparison_id}/pick")
def pick(
    request: Request,
    comparison_id: PathId,
    choice: Annotated[Literal["a", "b", "tie"], Form()],
    user: str = Depends(current_user),
) -> Response:
    store = user_store(request, user)
    with not_found_as_404():
        before = comparisons_db.get_comparison(store, comparison_id)
    if before.winner is not None:
        raise bad_request(f"Comparison {comparison_id} is already decided.", status=409)
    row = comparisons_db.record_pick(store, comparison_id, choice)
    payload = {"id": row.id, "winner": row.winner, "arm_a": row.arm_a, "arm_b": row.arm_b}
    return done(request, page_url(f"/compare/{row.id}"), payload)
