"""The dataset review page and its JSON API: every turn with its attempts and stars, a star
filter, editing an answer (the edit becomes the preferred answer), excluding a turn from demos and
training (and bringing it back), and forgetting a turn (as ``minetune forget`` does)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from minetune import review
from minetune.learn.reoptimize import Learner
from minetune.server.auth import current_user
from minetune.server.templating import render
from minetune.server.webutil import not_found_as_404, server_state, user_store
from minetune.store import DEFAULT_PROGRAM, browse

router = APIRouter()


class EditBody(BaseModel):
    text: str


class ExcludeBody(BaseModel):
    excluded: bool = True


def _filtered(
    request: Request, user: str, program: str, stars: str | None, min_stars: str | None, max_stars: str | None
) -> tuple[tuple[int | None, int | None], list[review.TurnView]]:
    store = user_store(request, user)
    low, high = review.star_range(stars, min_stars, max_stars)
    with not_found_as_404():
        return (low, high), review.dataset(store, program, low, high)


@router.get("/dataset", response_class=HTMLResponse)
def dataset_page(
    request: Request,
    program: str = DEFAULT_PROGRAM,
    stars: str | None = None,
    min_stars: str | None = None,
    max_stars: str | None = None,
    user: str = Depends(current_user),
) -> HTMLResponse:
    (low, high), turns = _filtered(request, user, program, stars, min_stars, max_stars)
    store = user_store(request, user)
    exact = low if stars and stars.strip() else None
    return render(
        request,
        "dataset.html",
        user=user,
        programs=[p.name for p in store.programs()],
        program=program,
        turns=turns,
        stars=exact,
        min_stars=None if exact else low,
        max_stars=None if exact else high,
    )


@router.get("/api/dataset")
def dataset_json(
    request: Request,
    program: str = DEFAULT_PROGRAM,
    stars: str | None = None,
    min_stars: str | None = None,
    max_stars: str | None = None,
    user: str = Depends(current_user),
) -> dict[str, Any]:
    (low, high), turns = _filtered(request, user, program, stars, min_stars, max_stars)
    return {"program": program, "min_stars": low, "max_stars": high, "turns": [t.as_dict() for t in turns]}


@router.post("/api/turns/{turn_id}/edit")
def edit_turn(
    request: Request, turn_id: int, body: EditBody, user: str = Depends(current_user)
) -> dict[str, Any]:
    """Store an edited answer as the turn's preferred answer (a 5-star ``user-edit`` attempt)."""
    store = user_store(request, user)
    with not_found_as_404():
        attempt = review.edit_answer(store, turn_id, body.text)
        return {"attempt": attempt.as_dict(), "turn": review.turn(store, turn_id).as_dict()}


@router.post("/api/turns/{turn_id}/exclude")
def exclude_turn(
    request: Request, turn_id: int, body: ExcludeBody | None = None, user: str = Depends(current_user)
) -> dict[str, Any]:
    """Exclude a turn from demos and training data (``{"excluded": false}`` brings it back)."""
    state = server_state(request)
    store = user_store(request, user)
    excluded = body.excluded if body is not None else True
    with not_found_as_404():
        program, _conversation = browse.turn_location(store, turn_id)
        Learner(store, state.settings, program).exclude_turn(turn_id, excluded)
        return {"turn": review.turn(store, turn_id).as_dict()}


@router.delete("/api/turns/{turn_id}")
def forget_turn(request: Request, turn_id: int, user: str = Depends(current_user)) -> dict[str, Any]:
    """Forget a turn as ``minetune forget TURN`` does: its data, demo links, lessons learned from
    it and judge ratings are deleted; adapters trained on it are marked tainted."""
    from minetune.train.adapters import forget

    store = user_store(request, user)
    with not_found_as_404():
        result = forget(store, turns=[turn_id])
    return {"forgotten": asdict(result)}
