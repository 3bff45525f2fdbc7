"""The training page: start a local LoRA run or a hosted fine-tuning job in the background, follow
its progress, and browse the job history with loss curves (server-side SVG)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Form, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import AfterValidator

from minetune.app.exchange import accepted_threshold
from minetune.errors import MinetuneError
from minetune.server import training_runs as runs_of
from minetune.server.auth import current_user
from minetune.server.charts import loss_chart
from minetune.server.templating import render
from minetune.server.validation import PathId, ProgramForm, ProgramQuery, check_text
from minetune.server.webutil import (
    bad_request,
    checked_program,
    done,
    not_found_as_404,
    page_url,
    program_page,
    server_state,
    user_program,
    user_store,
)
from minetune.store import Store
from minetune.store import training as jobs_db
from minetune.store.schema import TrainingJob

MAX_SPEC = 1000
HIDDEN_HYPERPARAMETERS = ("examples", "eval")


async def _lifespan(app: FastAPI) -> Any:
    yield
    # This process's local runs stop after their current step, keeping a checkpoint.
    from minetune.app.jobs import runner

    runner().cancel_all(kinds=runs_of.LOCAL_KINDS)


router = APIRouter(lifespan=_lifespan)

RunId = Annotated[str, AfterValidator(check_text), Path(max_length=64)]


def _hosted_config(request: Request) -> Any:
    from minetune.train.hosted import load_config

    return load_config(server_state(request).settings)


def _base_model(request: Request, store: Store, program: str) -> tuple[str | None, str | None]:
    """(the base model local training would use, or why there is none)."""
    from minetune.train.base import resolve_base

    settings = server_state(request).settings
    try:
        return resolve_base(store, settings, program).name, None
    except MinetuneError:  # its message speaks of CLI flags; the page speaks of its own fields
        spec = store.active_version(program).model_spec or settings.model
        field = "type one (hf:DIR, a folder with config.json and weights) in the Base model field below"
        if spec:
            return None, f"{program} answers with {spec}, not a local model; to train, {field}."
        return None, f"No base model to train on: {field}, or pick a local model for {program} on Setup."


def _job_row(job: TrainingJob, program: str) -> dict[str, Any]:
    metrics = dict(job.metrics or {})
    first, final = metrics.get("first_loss"), metrics.get("final_loss")
    curve = [
        p
        for p in job.loss_curve or []
        if isinstance(p, dict) and isinstance(p.get("train_loss"), int | float)
    ]
    if first is None and curve:
        first, final = curve[0]["train_loss"], curve[-1]["train_loss"]
    return {
        "job": job,
        "program": program,
        "examples": len(job.example_attempt_ids or []),
        "loss": f"{first:.3g} → {final:.3g}" if first is not None and final is not None else None,
        "version": metrics.get("version"),
        "activated": metrics.get("activated"),
    }


@router.get("/training", response_class=HTMLResponse)
def training_page(
    request: Request, program: ProgramQuery = "default", user: str = Depends(current_user)
) -> Response:
    from minetune.store.adapters import active_adapter
    from minetune.train.datasets import eligibility_report

    store, program = user_program(request, user, program)
    base, base_problem = _base_model(request, store, program)
    try:
        config = _hosted_config(request)
        hosted = {"base_url": config.base_url, "key": bool(config.api_key), "problem": None}
    except MinetuneError as exc:
        hosted = {"base_url": None, "key": False, "problem": str(exc)}
    return program_page(
        request,
        "training.html",
        store,
        user,
        program,
        eligibility=eligibility_report(store, program),
        base=base,
        base_problem=base_problem,
        adapter=active_adapter(store, program),
        hosted=hosted,
        live=runs_of.live(store, program),
        jobs=[_job_row(job, name) for job, name in jobs_db.list_jobs(store, program)],
    )


def _launch(
    request: Request,
    user: str,
    program: str,
    kind: str,
    method: str,
    work: Callable[[Any], Any] | None,
    payload: dict[str, Any] | None = None,
) -> Response:
    """Start ``work`` (or the kind's stored handler on ``payload``) as a ``kind`` job (409 while
    one of its kind is active) and reply 202 with the run and where to follow its progress."""
    state = server_state(request)
    run = runs_of.start(user_store(request, user), state.settings, program, kind, work, method, payload)
    payload = run.as_dict() | {"progress": f"/training/runs/{run.id}"}
    return done(request, page_url("/training", program=run.record.program), payload, status=202)


@router.post("/training/local")
def start_local(
    request: Request,
    program: ProgramForm = "default",
    method: Annotated[Literal["auto", "sft", "dpo", "kto"], Form()] = "auto",
    base: Annotated[str, AfterValidator(check_text), Form(max_length=MAX_SPEC)] = "",
    steps: Annotated[int | None, Form(ge=1, le=1_000_000)] = None,
    epochs: Annotated[float | None, Form(gt=0, le=1000)] = None,
    lr: Annotated[float | None, Form(gt=0, le=1)] = None,
    batch_size: Annotated[int | None, Form(ge=1, le=4096)] = None,
    rank: Annotated[int | None, Form(ge=1, le=4096)] = None,
    max_length: Annotated[int | None, Form(ge=16, le=1_000_000)] = None,
    threads: Annotated[int | None, Form(ge=1, le=1024)] = None,
    threshold: Annotated[int | None, Form(ge=1, le=5)] = None,
    activate: Annotated[bool, Form()] = False,
    user: str = Depends(current_user),
) -> Response:
    from minetune.train.config import TrainConfig

    program = checked_program(user_store(request, user), program)
    fields: dict[str, Any] = {
        "max_steps": steps,
        "epochs": epochs,
        "learning_rate": lr,
        "batch_size": batch_size,
        "rank": rank,
        "max_length": max_length,
        "threads": threads,
    }
    config = TrainConfig(**{k: v for k, v in fields.items() if v is not None})
    options = {
        "method": method,
        "base": base.strip() or None,
        "config": config.to_dict(),
        "activate": activate,
        "threshold": accepted_threshold(server_state(request).settings, threshold),
    }
    # A web user names server paths: only model folders under the roots.
    stored = {"options": options, "model_roots_only": True}
    return _launch(request, user, program, "train", method, None, stored)


@router.post("/training/hosted")
def start_hosted(
    request: Request,
    program: ProgramForm = "default",
    method: Annotated[Literal["sft", "dpo"], Form()] = "sft",
    model: Annotated[str, AfterValidator(check_text), Form(max_length=MAX_SPEC)] = "",
    epochs: Annotated[int | None, Form(ge=1, le=50)] = None,
    threshold: Annotated[int | None, Form(ge=1, le=5)] = None,
    activate: Annotated[bool, Form()] = False,
    user: str = Depends(current_user),
) -> Response:
    program = checked_program(user_store(request, user), program)
    if not model.strip():
        raise bad_request("Name the base model to fine-tune (for example gpt-4.1-mini-2025-04-14).")
    _hosted_config(request)  # no provider configured (or no key): a 400 here, before any job
    options = {
        "method": method,
        "model": model.strip(),
        "activate": activate,
        "n_epochs": epochs,
        "threshold": accepted_threshold(server_state(request).settings, threshold),
    }
    return _launch(request, user, program, "hosted", method, None, {"options": options})


@router.get("/training/runs/{run_id}")
def run_progress(request: Request, run_id: RunId, user: str = Depends(current_user)) -> JSONResponse:
    return JSONResponse(runs_of.get(user_store(request, user), run_id).as_dict())


@router.post("/training/runs/{run_id}/cancel")
def cancel_run(request: Request, run_id: RunId, user: str = Depends(current_user)) -> Response:
    store = user_store(request, user)
    run = runs_of.get(store, run_id)
    run = runs_of.cancel(store, server_state(request).settings, run, lambda: _hosted_config(request))
    return done(request, page_url("/training", program=run.record.program), run.as_dict())


def _svg(svg: str) -> Response:
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.get("/training/runs/{run_id}/loss.svg")
def run_loss_chart(request: Request, run_id: RunId, user: str = Depends(current_user)) -> Response:
    store = user_store(request, user)
    run = runs_of.get(store, run_id)
    points: list[Any] = run.curve
    if not run.active and run.record.training_job_id is not None:
        with not_found_as_404():
            points = list(jobs_db.get_job(store, run.record.training_job_id).loss_curve or []) or points
    return _svg(loss_chart("chart-loss", f"Loss · {run.kind} {run.method.upper()}", points))


def _shown(value: Any) -> str:
    """A setting or metric as short text (nested values as compact JSON)."""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": "), default=str)
    if isinstance(value, float):
        return f"{value:.6g}"
    return "—" if value is None else str(value)


def _job(request: Request, user: str, job_id: int) -> tuple[TrainingJob, str]:
    store = user_store(request, user)
    with not_found_as_404():
        return jobs_db.get_job(store, job_id), jobs_db.job_program_name(store, job_id)


@router.get("/training/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: PathId, user: str = Depends(current_user)) -> Response:
    job, program = _job(request, user, job_id)
    hyper = {k: _shown(v) for k, v in (job.hyperparameters or {}).items() if k not in HIDDEN_HYPERPARAMETERS}
    store = user_store(request, user)
    live = next(
        (r for r in runs_of.runs(store, program) if r.record.training_job_id == job.id and r.active), None
    )
    return render(
        request,
        "training_job.html",
        user=user,
        program=program,
        row=_job_row(job, program),
        hyperparameters=hyper,
        metrics={k: _shown(v) for k, v in (job.metrics or {}).items()},
        chart=loss_chart("chart-loss", f"Loss · job {job.id}", job.loss_curve or []),
        live=live,
    )


@router.get("/training/jobs/{job_id}/loss.svg")
def job_loss_chart(request: Request, job_id: PathId, user: str = Depends(current_user)) -> Response:
    job, _ = _job(request, user, job_id)
    return _svg(loss_chart("chart-loss", f"Loss · job {job.id}", job.loss_curve or []))


@router.post("/training/jobs/{job_id}/refresh")
def refresh_job(request: Request, job_id: PathId, user: str = Depends(current_user)) -> Response:
    """Fetch a hosted job's status from its provider (registers the model as a version on success)."""
    from minetune.train import hosted

    job, _ = _job(request, user, job_id)
    if job.kind != "hosted":
        raise bad_request(f"Job {job_id} is a local training run; only hosted jobs are refreshed.")
    view = hosted.refresh(user_store(request, user), job_id, _hosted_config(request))
    payload = {"job": view.id, "status": view.status, "version": view.version, "error": view.error}
    return done(request, f"/training/jobs/{job_id}", payload)
