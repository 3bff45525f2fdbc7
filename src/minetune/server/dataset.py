"""The dataset review page and its JSON API: every turn with its attempts and stars, a star
filter, editing an answer (the edit becomes the preferred answer), excluding a turn from demos and
training (and bringing it back), and forgetting a turn (as ``minetune forget`` does)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from minetune import review
from minetune.learn.reoptimize import Learner
from minetune.server.auth import current_user
from minetune.server.validation import InputModel, PathId, ProgramQuery
from minetune.server.webutil import not_found_as_404, program_page, server_state, user_store
from minetune.store import DEFAULT_PROGRAM, browse

router = APIRouter()


class EditBody(InputModel):
    text: str


class ExcludeBody(InputModel):
    excluded: bool = True


StarsQuery = Annotated[str | None, Query(max_length=50)]


@dataclass
class Filtered:
    """The turns of ``program`` whose stars are within ``low``..``high`` (None: no bound)."""

    program: str
    low: int | None
    high: int | None
    exact: bool  # one star count was asked for (``stars=``) rather than a range
    turns: list[review.TurnView]


def filtered_turns(
    request: Request,
    program: ProgramQuery = DEFAULT_PROGRAM,
    stars: StarsQuery = None,
    min_stars: StarsQuery = None,
    max_stars: StarsQuery = None,
    user: str = Depends(current_user),
) -> Filtered:
    """The dataset's query (a program and a star filter) and the turns it selects."""
    store = user_store(request, user)
    low, high = review.star_range(stars, min_stars, max_stars)
    with not_found_as_404():
        turns = review.dataset(store, program, low, high)
    return Filtered(program, low, high, bool(stars and stars.strip()), turns)


DatasetQuery = Annotated[Filtered, Depends(filtered_turns)]


@router.get("/dataset", response_class=HTMLResponse)
def dataset_page(request: Request, view: DatasetQuery, user: str = Depends(current_user)) -> HTMLResponse:
    exact = view.low if view.exact else None
    return program_page(
        request,
        "dataset.html",
        user_store(request, user),
        user,
        view.program,
        turns=view.turns,
        stars=exact,
        min_stars=None if exact else view.low,
        max_stars=None if exact else view.high,
    )


@router.get("/api/dataset")
def dataset_json(view: DatasetQuery, user: str = Depends(current_user)) -> dict[str, Any]:
    turns = [t.as_dict() for t in view.turns]
    return {"program": view.program, "min_stars": view.low, "max_stars": view.high, "turns": turns}


@router.post("/api/turns/{turn_id}/edit")
def edit_turn(
    request: Request, turn_id: PathId, body: EditBody, user: str = Depends(current_user)
) -> dict[str, Any]:
    """Store an edited answer as the turn's preferred answer (a 5-star ``user-edit`` attempt)."""
    store = user_store(request, user)
    with not_found_as_404():
        attempt = review.edit_answer(store, turn_id, body.text)
        return {"attempt": attempt.as_dict(), "turn": review.turn(store, turn_id).as_dict()}


@router.post("/api/turns/{turn_id}/exclude")
def exclude_turn(
    request: Request, turn_id: PathId, body: ExcludeBody | None = None, user: str = Depends(current_user)
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
def forget_turn(request: Request, turn_id: PathId, user: str = Depends(current_user)) -> dict[str, Any]:
    """Forget a turn as ``minetune forget TURN`` does: its data, demo links, lessons learned from
    it and judge ratings are deleted; adapters trained on it are marked tainted."""
    from minetune.app.forget import forget

    store = user_store(request, user)
    with not_found_as_404():
        result = forget(store, server_state(request).settings, turns=[turn_id])
    return {"forgotten": asdict(result)}
