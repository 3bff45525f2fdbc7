"""The training page over real HTTP: clear refusals, a real tiny LoRA run in the background with
live progress and a loss curve, a hosted job against the loopback fake fine-tuning API, one run
at a time, and isolation between users."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fake_finetune import FakeFineTune
from minetune.config import load_settings
from minetune.server.charts import curve_series, loss_chart
from minetune.store import training as jobs_db
from test_datasets import chain_turns
from test_train import seed_program
from test_web_metrics import chart_points
from webusers import TwoUsers, error, rows_unchanged, two_users

BASE = "gpt-4.1-mini-2025-04-14"


@pytest.fixture(autouse=True)
def model_roots(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Web training takes base models only from the model roots: here, the tiny model's folder."""
    monkeypatch.setenv("MINETUNE_MODEL_ROOTS", str(tiny_model_dir))


@pytest.fixture
def web() -> Iterator[TwoUsers]:
    with two_users() as users:
        yield users


def follow(client: httpx.Client, run: str, timeout: float = 180) -> list[dict[str, Any]]:
    """Poll a run's progress until it is done; every answer, in order."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/training/runs/{run}")
        assert response.status_code == 200, response.text
        seen.append(response.json())
        if seen[-1]["done"]:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"run {run} did not finish: {seen[-1]}")


# -- refusals ----------------------------------------------------------------------------------------


def test_too_few_examples_no_base_model_and_bad_settings_are_clear_4xx(
    web: TwoUsers, ft: FakeFineTune
) -> None:
    web.store_a.create_program("small", "You help.", "hf:./nowhere")
    chain_turns(web.store_a, "small", 3)
    with rows_unchanged(web.store_a):
        few = web.a.post("/training/local", data={"program": "small", "method": "sft"})
        assert few.status_code == 400
        assert error(few).startswith("Too few SFT examples to train on: 3, at least 10 needed.")
        hosted = web.a.post("/training/hosted", data={"program": "small", "method": "sft", "model": BASE})
        assert hosted.status_code == 400 and "Not enough data for hosted SFT fine-tuning" in error(hosted)
        assert ft.uploads == [] and ft.create_bodies == []

    # Enough examples, but the program has no model spec and no MINETUNE_MODEL is set.
    chain_turns(web.store_a, "default", 12)
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("/training/local", {"method": "xyz"}, 422, "method"),
        ("/training/local", {"steps": "0"}, 422, "steps"),
        ("/training/local", {"lr": "-1"}, 422, "lr"),
        (
            "/training/local",
            {"method": "kto", "batch_size": "1", "base": "hf:x"},
            400,
            "Invalid training settings",
        ),
        ("/training/local", {"program": "nope"}, 404, "No program named 'nope'"),
        ("/training/hosted", {"method": "sft", "model": "  "}, 400, "Name the base model"),
        ("/training/hosted", {"method": "kto", "model": BASE}, 422, "method"),
    ]
    with rows_unchanged(web.store_a):
        no_base = web.a.post("/training/local", data={"method": "sft"})
        assert no_base.status_code == 400 and error(no_base).startswith("No base model to train on")
        missing = web.a.post("/training/local", data={"method": "sft", "base": "hf:./no/such/dir"})
        assert missing.status_code == 400 and "not a model folder under the configured model roots" in error(
            missing
        )
        for path, data, status, message in cases:
            response = web.a.post(path, data=data)
            assert response.status_code == status, (data, response.text)
            assert message in error(response), (data, error(response))
    assert jobs_db.list_jobs(web.store_a) == []
    page = web.a.get("/training").text
    assert "No base model to train on" in page and "No training jobs for default yet." in page


def test_empty_number_fields_from_a_browser_form_mean_defaults(web: TwoUsers) -> None:
    response = web.a.post(
        "/training/local", data={"method": "sft", "steps": "", "epochs": "", "lr": "", "threads": ""}
    )
    assert response.status_code == 400 and error(response).startswith("Too few SFT examples")


# -- a real local run ------------------------------------------------------------------------------


@pytest.fixture
def restore_torch_threads() -> Iterator[None]:
    """The run below sets torch to one thread (fastest for the tiny model); put it back after."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_local_lora_run_in_the_background_with_progress_and_loss_curve(
    web: TwoUsers, tiny_model_dir: Path, restore_torch_threads: None
) -> None:
    seed_program(web.store_a, tiny_model_dir)
    form = {
        "program": "p",
        "method": "sft",
        "steps": "6",
        "lr": "5e-3",
        "batch_size": "4",
        "rank": "8",
        "max_length": "96",
        "threads": "1",
        "activate": "true",
    }
    started = web.a.post("/training/local", data=form)
    assert started.status_code == 202, started.text
    run = started.json()
    assert run["status"] in ("queued", "running") and run["progress"] == f"/training/runs/{run['run']}"

    # One local run at a time per user.
    again = web.a.post("/training/local", data=form)
    assert again.status_code == 409 and "already running" in error(again)

    seen = follow(web.a, run["run"])
    final = seen[-1]
    assert final["status"] == "succeeded", final
    assert final["step"] == final["total"] == 6 and final["points"] == 6 and final["loss"] is not None
    job_id = final["job"]
    assert job_id is not None and final["version"] == 2
    assert {s["phase"] for s in seen} <= {
        "queued",
        "loading",
        "training",
        "evaluating",
        "saving",
        "done",
        "succeeded",
    }

    job = jobs_db.get_job(web.store_a, job_id)
    assert (job.kind, job.method, job.status) == ("local", "sft", "succeeded")
    assert [p["step"] for p in job.loss_curve] == [1, 2, 3, 4, 5, 6]
    active = web.store_a.active_version("p")
    assert active.number == 2 and active.adapter and f"?adapter={active.adapter}" in (active.model_spec or "")
    # alice's adapter is in her own folder, private although this process's umask is the usual 022
    adapter = Path(active.adapter)
    assert adapter.parent == load_settings().home.resolve() / "adapters" / "alice" / "p"
    assert adapter.stat().st_mode & 0o777 == 0o700
    assert {f.stat().st_mode & 0o777 for f in adapter.rglob("*") if f.is_file()} == {0o600}

    svg = web.a.get(f"/training/jobs/{job_id}/loss.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.startswith("<svg") and svg.text.count("<polyline") == 1 and "train loss" in svg.text
    assert web.a.get(f"/training/runs/{run['run']}/loss.svg").text.count("<polyline") == 1
    page = web.a.get(f"/training/jobs/{job_id}").text
    assert "succeeded" in page and "<polyline" in page and "v2" in page
    history = web.a.get("/training", params={"program": "p"}).text
    assert f'data-job="{job_id}"' in history and "(active)" in history

    # Bob can see none of it.
    for path in (
        f"/training/runs/{run['run']}",
        f"/training/runs/{run['run']}/loss.svg",
        f"/training/jobs/{job_id}",
        f"/training/jobs/{job_id}/loss.svg",
    ):
        assert web.b.get(path).status_code == 404, path
    assert web.b.post(f"/training/runs/{run['run']}/cancel").status_code == 404
    assert web.b.get("/training", params={"program": "p"}).status_code == 404
    assert f'data-job="{job_id}"' not in web.b.get("/training").text


# -- hosted ----------------------------------------------------------------------------------------


def test_hosted_job_from_the_web_succeeds_and_registers_a_version(web: TwoUsers, ft: FakeFineTune) -> None:
    web.store_a.create_program("writer", "You write crisp prose.")
    chain_turns(web.store_a, "writer", 14)
    started = web.a.post(
        "/training/hosted", data={"program": "writer", "method": "sft", "model": BASE, "activate": "true"}
    )
    assert started.status_code == 202, started.text
    run = started.json()
    assert run["job"] is not None and run["kind"] == "hosted"
    assert len(ft.uploads) == 2 and ft.create_bodies[0]["model"] == BASE

    seen = follow(web.a, run["run"], timeout=60)
    final = seen[-1]
    assert final["status"] == "succeeded" and final["version"] == 2, final
    assert final["step"] == final["total"] == 4 and final["points"] == 4
    assert any(s["phase"] in ("validating_files", "queued", "running") for s in seen)
    active = web.store_a.active_version("writer")
    assert active.number == 2 and active.model_spec and active.model_spec.startswith("openai-compatible:ft:")

    svg = web.a.get(f"/training/jobs/{run['job']}/loss.svg").text
    assert svg.count("<polyline") == 1
    page = web.a.get("/training", params={"program": "writer"}).text
    assert f'data-job="{run["job"]}"' in page and "hosted" in page
    assert ft.api_key not in page


def test_one_run_at_a_time_cancel_and_isolation(web: TwoUsers, ft: FakeFineTune) -> None:
    ft.script("hang")
    web.store_a.create_program("writer", "You write crisp prose.")
    chain_turns(web.store_a, "writer", 14)
    run = web.a.post("/training/hosted", data={"program": "writer", "model": BASE}).json()
    job_id = run["job"]
    busy = web.a.post("/training/hosted", data={"program": "writer", "model": BASE})
    assert busy.status_code == 409
    assert error(busy) == (
        f"A hosted training job is already running (job {job_id}, program 'writer'); "
        "wait for it to finish or cancel it first."
    )
    assert len(jobs_db.list_jobs(web.store_a)) == 1

    # Bob: not his run, not his job; his own runs are independent of alice's.
    before = jobs_db.get_job(web.store_a, job_id)
    for path in (
        f"/training/runs/{run['run']}",
        f"/training/jobs/{job_id}",
        f"/training/jobs/{job_id}/loss.svg",
    ):
        assert web.b.get(path).status_code == 404, path
    for path in (f"/training/runs/{run['run']}/cancel", f"/training/jobs/{job_id}/refresh"):
        assert web.b.post(path).status_code == 404, path
    assert web.b.get("/training/runs/not-a-run").status_code == 404
    assert web.b.get("/training/jobs/0").status_code == 422
    bob = web.b.post("/training/hosted", data={"model": BASE})
    assert bob.status_code == 400 and "Not enough data" in error(bob)
    after = jobs_db.get_job(web.store_a, job_id)
    assert (after.status, after.error, after.metrics) == (before.status, before.error, before.metrics)

    progress = web.a.get(f"/training/runs/{run['run']}").json()
    assert progress["status"] == "running" and not progress["done"]
    cancelled = web.a.post(f"/training/runs/{run['run']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert jobs_db.get_job(web.store_a, job_id).status == "cancelled"
    assert web.a.post(f"/training/runs/{run['run']}/cancel").status_code == 409
    again = web.a.post("/training/hosted", data={"program": "writer", "model": BASE})
    assert again.status_code == 202


# -- the chart -------------------------------------------------------------------------------------


def test_loss_chart_draws_each_series_and_escapes_text() -> None:
    points = [{"step": 1, "train_loss": 2.0, "valid_loss": 2.5}, {"step": 2, "train_loss": 1.0}, {"bad": 1}]
    series = curve_series(points)
    assert series == {"train loss": [(1.0, 2.0), (2.0, 1.0)], "validation loss": [(1.0, 2.5)]}
    svg = str(loss_chart("loss", "<job>", points))
    assert svg.count("<polyline") == 2 and "&lt;job&gt;" in svg and "<job>" not in svg
    assert 'data-series="validation loss"' in svg
    assert chart_points(svg, "loss") == [
        {"series": "train loss", "x": 1.0, "value": 2.0},
        {"series": "train loss", "x": 2.0, "value": 1.0},
        {"series": "validation loss", "x": 1.0, "value": 2.5},
    ]
    assert "No loss values yet." in loss_chart("loss", "Loss", [])
