"""Hosted fine-tuning against a loopback fake of the OpenAI files and fine-tuning jobs API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from fake_finetune import FakeFineTune
from minetune.cli import app
from minetune.config import load_settings
from minetune.models import parse_spec
from minetune.store import Store
from minetune.store import training as jobs_db
from minetune.train import hosted
from minetune.train.datasets import build_dataset, to_jsonl
from minetune.train.hosted import FineTuneError, HostedConfig, approx_tokens, load_config
from test_datasets import chain_turns

BASE = "gpt-4.1-mini-2025-04-14"


@pytest.fixture
def store() -> Iterator[Store]:
    """Program "writer" with 14 retry chains (tests that also want PostgreSQL ask for database_url first)."""
    s = Store.open(load_settings())
    s.create_program("writer", "You write crisp prose.")
    chain_turns(s, "writer", 14)
    yield s
    s.close()


def config() -> HostedConfig:
    return load_config(load_settings())


def stored_text(store: Store) -> str:
    """Every stored job and version, as text (to prove the API key is never written)."""
    jobs = [(vars(job), name) for job, name in jobs_db.list_jobs(store)]
    versions = [vars(v) for p in store.programs() for v in store.versions(p.name)]
    return json.dumps([jobs, versions], default=str)


# -- success, failure, cancel, list ----------------------------------------------------------------


def test_sft_job_succeeds_and_registers_an_inactive_version(
    database_url: str, store: Store, ft: FakeFineTune
) -> None:
    cfg = config()
    seen: list[Any] = []
    job = hosted.start(
        store, "writer", method="sft", model=BASE, config=cfg, confirm=lambda c: seen.append(c) or True
    )
    assert job is not None and job.status == "validating_files" and job.provider_job_id in ft.jobs
    estimate = seen[0]
    assert (estimate.train_examples, estimate.valid_examples) == (13, 1)
    assert estimate.price_per_million == 5.0 and estimate.usd == pytest.approx(estimate.billed_tokens * 5e-6)

    dataset = build_dataset(store, "writer", "sft")
    train_file, valid_file = ft.uploads
    assert (train_file.format, valid_file.format) == ("chat", "chat")
    assert train_file.purpose == "fine-tune" and train_file.filename.endswith("-train.jsonl")
    assert train_file.raw == to_jsonl(dataset.train, "openai-chat")
    assert valid_file.raw == to_jsonl(dataset.valid, "openai-chat")
    assert ft.create_bodies == [
        {
            "model": BASE,
            "training_file": train_file.id,
            "validation_file": valid_file.id,
            "method": {"type": "supervised", "supervised": {}},
            "suffix": "writer",
        }
    ]
    row = jobs_db.get_job(store, job.id)
    assert (row.kind, row.method, row.provider) == ("hosted", "sft", ft.base_url)
    assert row.example_attempt_ids == dataset.attempt_ids and len(row.example_attempt_ids) == 28

    updates: list[tuple[str, list[str]]] = []
    final = hosted.follow(
        store, job.id, cfg, lambda j, ev: updates.append((j.status, [e["message"] for e in ev]))
    )
    assert (
        final.status == "succeeded"
        and final.result_model == f"ft:{BASE}:fake-org:writer:{job.provider_job_id[-6:]}"
    )
    assert final.model_spec == f"openai-compatible:{final.result_model}@{ft.base_url}"
    assert parse_spec(final.model_spec).base_url == ft.base_url
    assert final.version == 2 and not final.activated and final.trained_tokens == 1234
    assert [p["step"] for p in final.loss_curve] == [1, 2, 3, 4] and final.finished_at is not None
    messages = [m for _, batch in updates for m in batch]
    assert (
        messages[0].startswith("Created fine-tuning job")
        and messages[-1] == "The job has successfully completed"
    )
    assert len(messages) == len(set(messages))  # each event shown once
    assert updates[-1][0] == "succeeded"

    versions = store.versions("writer")
    assert [v.number for v in versions] == [1, 2] and store.active_version("writer").number == 1
    assert versions[1].model_spec == final.model_spec and versions[1].sources["training_job"] == job.id
    assert versions[1].instructions == "You write crisp prose."

    # Refreshing again registers nothing new; activating on request moves the pointer.
    assert hosted.refresh(store, job.id, cfg).version == 2 and len(store.versions("writer")) == 2
    assert hosted.refresh(store, job.provider_job_id or "", cfg, activate=True).activated
    assert store.active_version("writer").model_spec == final.model_spec
    assert ft.api_key not in stored_text(store) and job.provider_job_id in stored_text(store)


def test_dpo_job_with_activate_and_hyperparameters(store: Store, ft: FakeFineTune) -> None:
    cfg = config()
    job = hosted.start(
        store,
        "writer",
        method="dpo",
        model=BASE,
        config=cfg,
        activate=True,
        n_epochs=2,
        beta=0.2,
        suffix="mine",
    )
    assert job is not None
    assert {u.format for u in ft.uploads} == {"preference"}
    assert json.loads(ft.uploads[0].raw.splitlines()[0])["preferred_output"][0]["role"] == "assistant"
    assert ft.create_bodies[0]["method"] == {
        "type": "dpo",
        "dpo": {"hyperparameters": {"n_epochs": 2, "beta": 0.2}},
    }
    final = hosted.follow(store, job.id, cfg)
    assert final.status == "succeeded" and final.activated
    assert store.active_version("writer").model_spec == final.model_spec
    assert ":mine:" in (final.result_model or "")


def test_failure_records_the_error(database_url: str, store: Store, ft: FakeFineTune) -> None:
    ft.script("failure", polls=3)
    cfg = config()
    job = hosted.start(store, "writer", method="sft", model=BASE, config=cfg)
    assert job is not None
    final = hosted.follow(store, job.id, cfg)
    assert final.status == "failed" and final.finished_at is not None
    assert final.error == "invalid_training_file: The job failed due to an invalid training file."
    assert final.version is None and len(store.versions("writer")) == 1
    assert jobs_db.get_job(store, job.id).error == final.error
    # A finished job is not polled again.
    requests = len(ft.requests)
    assert hosted.refresh(store, job.id, cfg).status == "failed" and len(ft.requests) == requests


def test_cancel(store: Store, ft: FakeFineTune) -> None:
    ft.script("hang")
    cfg = config()
    job = hosted.start(store, "writer", method="sft", model=BASE, config=cfg)
    assert job is not None
    running = hosted.follow(store, job.id, cfg, max_polls=3)
    assert running.status == "running" and running.loss_curve
    cancelled = hosted.cancel(store, job.id, cfg)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert ft.jobs[job.provider_job_id or ""]["status"] == "cancelled"
    assert hosted.follow(store, job.id, cfg).status == "cancelled"
    with pytest.raises(FineTuneError, match="already cancelled"):
        hosted.cancel(store, job.id, cfg)
    assert len(store.versions("writer")) == 1


def test_list_local_and_remote(store: Store, ft: FakeFineTune) -> None:
    cfg = config()
    store.create_program("other")
    chain_turns(store, "other", 10, prefix="other")
    first = hosted.start(store, "writer", method="sft", model=BASE, config=cfg)
    second = hosted.start(store, "other", method="dpo", model="gpt-4o-mini", config=cfg)
    assert first is not None and second is not None
    assert [(j.id, j.program, j.method) for j in hosted.list_jobs(store)] == [
        (second.id, "other", "dpo"),
        (first.id, "writer", "sft"),
    ]
    assert [j.id for j in hosted.list_jobs(store, "writer")] == [first.id]
    assert [j["id"] for j in hosted.remote_jobs(cfg)] == [second.provider_job_id, first.provider_job_id]
    # 10 DPO pairs: fewer than 10 would be left for training after the split, so no validation file.
    assert "validation_file" not in ft.create_bodies[1] and len(ft.uploads[-1].rows) == 10


# -- errors: nothing half-created ----------------------------------------------------------------


def test_wrong_key_is_a_clear_error_and_creates_nothing(
    store: Store, ft: FakeFineTune, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINETUNE_API_KEY", "sk-wrong-key-123456")  # the key scoped to the fine-tuning URL
    before = store.row_counts()
    with pytest.raises(FineTuneError, match="rejected the API key") as info:
        hosted.start(store, "writer", method="sft", model=BASE, config=config())
    assert "MINETUNE_API_KEY" in str(info.value) and "sk-wrong-key-123456" not in str(info.value)
    assert ft.uploads == [] and ft.jobs == {} and store.row_counts() == before
    assert ft.auth_headers == ["Bearer sk-wrong-key-123456"]


def test_missing_key(store: Store, ft: FakeFineTune, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MINETUNE_API_KEY")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-only")  # scoped to OpenAI, not to this provider
    with pytest.raises(FineTuneError, match="No API key .* set MINETUNE_API_KEY"):
        hosted.start(store, "writer", method="sft", model=BASE, config=config())
    assert ft.requests == []


def test_too_few_examples_is_a_clear_error_and_creates_nothing(store: Store, ft: FakeFineTune) -> None:
    store.create_program("tiny")
    chain_turns(store, "tiny", 3, prefix="tiny")
    before = store.row_counts()
    with pytest.raises(FineTuneError, match="Not enough data") as info:
        hosted.start(store, "tiny", method="dpo", model=BASE, config=config())
    assert "Needs at least 10 preference pairs; has 3" in str(info.value) and "Nothing was uploaded" in str(
        info.value
    )
    assert ft.requests == [] and store.row_counts() == before
    with pytest.raises(FineTuneError, match="KTO trains locally"):
        hosted.start(store, "writer", method="kto", model=BASE, config=config())


def test_provider_rejection_marks_the_job_failed(store: Store, ft: FakeFineTune) -> None:
    ft.fine_tunable = {BASE}
    with pytest.raises(FineTuneError, match="could not be created") as info:
        hosted.start(store, "writer", method="sft", model="gpt-2", config=config())
    assert "HTTP 400" in str(info.value) and "not available for fine-tuning" in str(info.value)
    (job,) = hosted.list_jobs(store)
    assert job.status == "failed" and "gpt-2" in (job.error or "") and job.finished_at is not None
    with pytest.raises(FineTuneError, match="--model"):
        hosted.start(store, "writer", method="sft", model=" ", config=config())
    # Declining the estimate uploads nothing and records nothing.
    before, uploads = store.row_counts(), len(ft.uploads)
    assert (
        hosted.start(store, "writer", method="sft", model=BASE, config=config(), confirm=lambda c: False)
        is None
    )
    assert len(ft.uploads) == uploads and store.row_counts() == before


# -- configuration and estimates -----------------------------------------------------------------


def test_config_prices_and_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MINETUNE_FINETUNE_BASE_URL", raising=False)
    cfg = load_config(load_settings())
    assert cfg.base_url == "https://api.openai.com/v1" and cfg.is_openai
    assert cfg.model_spec("ft:gpt-4o-mini:org::abc") == "openai:ft:gpt-4o-mini:org::abc"
    assert parse_spec(cfg.model_spec("ft:gpt-4o-mini:org::abc")).model == "ft:gpt-4o-mini:org::abc"
    assert cfg.price_for("gpt-4o-mini-2024-07-18") == 3.0 and cfg.price_for("gpt-4o-2024-08-06") == 25.0
    assert cfg.price_for("llama") is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    assert "sk-secret" not in repr(load_config())
    monkeypatch.setenv("MINETUNE_FINETUNE_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MINETUNE_FINETUNE_PRICES", "llama=0.5,gpt-4o-mini=2")
    cfg = load_config()
    assert cfg.base_url == "http://127.0.0.1:9/v1" and not cfg.is_openai
    assert cfg.price_for("llama-3-8b") == 0.5 and cfg.price_for("gpt-4o-mini") == 2.0
    home = load_settings().home
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text('[finetune]\nbase_url = "http://example.test/v1"\nprices = {x = 1.5}\n')
    monkeypatch.delenv("MINETUNE_FINETUNE_BASE_URL")
    cfg = load_config(load_settings())
    assert cfg.base_url == "http://example.test/v1" and cfg.price_for("x-1") == 1.5
    monkeypatch.setenv("MINETUNE_FINETUNE_PRICES", "nonsense")
    with pytest.raises(Exception, match="model=usd"):
        load_config()


def test_estimate_counts_tokens_approximately(store: Store) -> None:
    assert approx_tokens("") == 0 and approx_tokens("abcd") == 1 and approx_tokens("abcde") == 2
    dataset, cost = hosted.estimate(store, "writer", "sft", "gpt-4o-mini", config(), n_epochs=2)
    assert cost.n_epochs == 2 and not cost.epochs_assumed
    assert cost.billed_tokens == 2 * cost.train_tokens and cost.usd == pytest.approx(
        cost.billed_tokens * 3e-6
    )
    chars = sum(len(m["content"]) for ex in dataset.train for m in ex.prompt) + sum(
        len(ex.response) for ex in dataset.train
    )
    assert chars / 4 <= cost.train_tokens <= chars / 4 + 20 * len(dataset.train)
    _, unknown = hosted.estimate(store, "writer", "dpo", "my-own-model", config())
    assert unknown.usd is None and unknown.n_epochs == 3 and "no price known" in unknown.summary()


# -- the command line ----------------------------------------------------------------------------


def test_cli_start_wait_status_events_list_cancel(store: Store, ft: FakeFineTune) -> None:
    runner = CliRunner()
    help_text = runner.invoke(app, ["finetune", "--help"]).output
    assert "6 January 2027" in help_text and "minetune train" in help_text

    result = runner.invoke(app, ["finetune", "estimate", "-p", "writer", "--model", BASE])
    assert result.exit_code == 0 and "SFT: 14 example(s)" in result.output and "$" in result.output

    result = runner.invoke(app, ["finetune", "start", "-p", "writer", "--model", BASE], input="n\n")
    assert result.exit_code == 0 and "Not started" in result.output and ft.uploads == []

    result = runner.invoke(
        app,
        [
            "finetune",
            "start",
            "-p",
            "writer",
            "--method",
            "dpo",
            "--model",
            BASE,
            "--yes",
            "--wait",
            "--activate",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output and "successfully completed" in result.output
    assert "(active)" in result.output and store.active_version("writer").model_spec.startswith(
        "openai-compatible:ft:"
    )

    result = runner.invoke(app, ["finetune", "status", "1", "--json"])
    status = json.loads(result.output)
    assert status["status"] == "succeeded" and status["version"] == 2 and status["activated"] is True

    result = runner.invoke(app, ["finetune", "events", "1"])
    assert result.exit_code == 0 and "Created fine-tuning job" in result.output

    ft.script("hang")
    result = runner.invoke(app, ["finetune", "start", "-p", "writer", "--model", BASE, "-y"])
    assert result.exit_code == 0 and "Started hosted job 2" in result.output
    result = runner.invoke(app, ["finetune", "cancel", "2"])
    assert result.exit_code == 0 and "cancelled" in result.output

    result = runner.invoke(app, ["finetune", "list"])
    assert result.exit_code == 0 and "cancelled" in result.output and "succeeded" in result.output
    result = runner.invoke(app, ["finetune", "list", "--remote"])
    assert result.exit_code == 0 and "ftjob-" in result.output
    assert all(ft.api_key not in r.output for r in [result])

    result = runner.invoke(app, ["finetune", "status", "99"])
    assert result.exit_code != 0 and "No training job with id 99" in str(result.exception)


def test_cli_wrong_key_exits_non_zero(
    store: Store, ft: FakeFineTune, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINETUNE_API_KEY", "sk-nope")
    result = CliRunner().invoke(app, ["finetune", "start", "-p", "writer", "--model", BASE, "--yes"])
    assert result.exit_code != 0 and "rejected the API key" in str(result.exception)
    assert jobs_db.list_jobs(store) == []
