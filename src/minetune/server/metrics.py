"""The metrics page (server-rendered SVG plots, the latest ``minetune eval`` runs) and the same
numbers as JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from minetune import progress
from minetune.app import evaluate
from minetune.server.auth import current_user
from minetune.server.charts import bar_chart, line_chart
from minetune.server.validation import ProgramQuery
from minetune.server.webutil import not_found_as_404, program_page, user_store
from minetune.store import DEFAULT_PROGRAM

router = APIRouter()

EVAL_RUNS = 5  # latest evaluation runs shown per program


def _points(series: progress.Series) -> list[tuple[str, float]]:
    return [(p.label, p.value) for p in series.points]


@router.get("/metrics", response_class=HTMLResponse)
def metrics_page(
    request: Request, program: ProgramQuery = DEFAULT_PROGRAM, user: str = Depends(current_user)
) -> HTMLResponse:
    store = user_store(request, user)
    with not_found_as_404():
        m = progress.metrics(store, program)
        evals = evaluate.latest_runs(store, program, EVAL_RUNS)
    charts = {
        "stars": line_chart(
            "chart-stars", f"Mean stars ({m.stars.bucket})", _points(m.stars), (0, 5), "No ratings yet."
        ),
        "attempts": line_chart(
            "chart-attempts",
            f"Attempts to 5 stars ({m.attempts_to_5.bucket})",
            _points(m.attempts_to_5),
            empty="No answer has earned 5 stars yet.",
        ),
        "examples": bar_chart(
            "chart-examples",
            "Training examples per method",
            [(method.upper(), float(n)) for method, n in m.examples.items()],
            [("minimum", float(m.minimum)), ("recommended", float(m.recommended))],
        ),
        "tokens": line_chart(
            "chart-tokens", f"Tokens ({m.tokens.bucket})", _points(m.tokens), empty="No token counts yet."
        ),
    }
    return program_page(
        request,
        "metrics.html",
        store,
        user,
        program,
        metrics=m,
        charts=charts,
        evals=evals,
    )


@router.get("/api/metrics")
def metrics_json(
    request: Request, program: ProgramQuery = DEFAULT_PROGRAM, user: str = Depends(current_user)
) -> dict[str, Any]:
    store = user_store(request, user)
    with not_found_as_404():
        m = progress.metrics(store, program)
        evals = evaluate.latest_runs(store, program, EVAL_RUNS)
    return asdict(m) | {"total_cost": m.total_cost, "evals": [run.as_dict() for run in evals]}
