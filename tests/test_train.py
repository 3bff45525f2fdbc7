"""Local LoRA training on the tiny fixture model (CPU): SFT, DPO and KTO adapters, lineage, cancel
and resume, bad input, continual updates with replay, the gate, and forgetting with retraining."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minetune.app import jobs as jobs_app
from minetune.app.forget import forget
from minetune.config import Settings, load_settings
from minetune.models import resolve_model
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store import jobs as job_rows
from minetune.store import training as jobs_db
from minetune.train import adapters, continual, engines, runs
from minetune.train.config import AdapterError, Progress, TrainConfig, TrainingError
from minetune.train.examples import examples_for
from minetune.train.scoring import evaluate_adapter

SYSTEM = "You are a helpful assistant."
GOOD = "Paris is the capital of France."
BAD = "I do not know, sorry."
QUESTIONS = [
    "What is the capital of France?",
    "Please write a short poem about the sea.",
    "Summarise this email in one sentence.",
    "Explain recursion simply.",
    "Translate hello world into French.",
    "What is 2 plus 3?",
    "Rate this answer from one to five stars.",
    "Keep answers short, friendly and accurate.",
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "The meeting moved to Thursday at three.",
    "Try again with more detail.",
    "What is 42 plus 100?",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10.",
    "def add(a, b): return a + b",
    "Thank you, that was perfect, good one!",
    "Punctuation: , . ; : ! ? ( ) [ ] { }",
    "You are a helpful assistant.",
    "Sure, here is a short poem about the sea and the sky.",
    "print(add(2, 3))",
]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The tiny model trains fastest on one thread (two threads on a busy 2-CPU box are ~20x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store.open(settings)
    yield s
    s.close()


def config(steps: int = 24, lr: float = 5e-3, rank: int = 8, **kw: Any) -> TrainConfig:
    return TrainConfig(
        max_steps=steps, learning_rate=lr, batch_size=4, rank=rank, max_length=96, threads=1, **kw
    )


def add_turn(store: Store, conv: int, question: str, answers: list[tuple[str, int | None]]) -> list[int]:
    """A turn as the loop stores it: each attempt sent the system prompt and the question."""
    turn = store.add_turn(conv, question)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    ids = []
    for response, stars in answers:
        attempt = store.add_attempt(
            turn.id, model_spec="hf:x", messages=messages, response=response, latency_ms=1.0
        )
        if stars is not None:
            store.add_feedback(attempt.id, "explicit", stars)
        ids.append(attempt.id)
    return ids


def seed_program(
    store: Store, model_dir: Path, questions: list[str] = QUESTIONS, good: str = GOOD, bad: str | None = BAD
) -> int:
    """A program on the tiny model whose turns are retry chains: a 1★ answer, then a 5★ one."""
    if "p" not in [p.name for p in store.programs()]:
        store.create_program("p", SYSTEM, f"hf:{model_dir}")
    conv = store.start_conversation("p").id
    for q in questions:
        answers: list[tuple[str, int | None]] = [(bad, 1)] if bad else []
        add_turn(store, conv, q, answers + [(good, 5)])
    return conv


def variants(count: int, questions: list[str] = QUESTIONS, tag: str = "take") -> list[str]:
    """``count`` × ``questions`` distinct questions (the first copy as is): 80 of them put 8 prompt
    groups in the 10% validation split, the gate's minimum of held-out pairs."""
    return [f"{q} ({tag} {i})" if i else q for i in range(count) for q in questions]


def greedy(spec: str, question: str = "What is the capital of France?") -> str:
    model = resolve_model(load_settings(), spec)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    return model.complete(messages, temperature=0, max_tokens=8).text  # type: ignore[arg-type]


# -- SFT, DPO, KTO -------------------------------------------------------------------------------------


def _check_lineage(store: Store, outcome: runs.Outcome, model_dir: Path, method: str) -> None:
    adapter = outcome.adapter
    assert adapter is not None and outcome.status == "succeeded"
    job = jobs_db.get_job(store, outcome.job.id)
    assert job.kind == "local" and job.method == method and job.status == "succeeded"
    assert adapter.method == method and adapter.base_model == str(model_dir) and adapter.parent_id is None
    assert adapter.example_attempt_ids == job.example_attempt_ids == adapter.lineage_attempt_ids
    assert len(adapter.example_attempt_ids) >= 10
    assert set(adapter.example_attempt_ids) <= store.existing_attempt_ids(adapter.example_attempt_ids)
    assert job.hyperparameters["learning_rate"] == 5e-3 and job.hyperparameters["rank"] == 8
    assert job.metrics["adapter"] == adapter.id and job.metrics["activated"] is True
    version = store.active_version("p")
    assert version.number == outcome.version
    assert version.adapter == adapter.path
    assert version.model_spec == f"hf:{model_dir}?adapter={adapter.path}"
    assert version.sources["adapter"] == adapter.id and version.sources["training_job"] == job.id
    folder = Path(adapter.path)
    assert folder.parent == load_settings().home / "adapters" / "local" / "p"  # adapters/<user>/<program>/
    assert folder.name == str(adapter.id)
    assert json.loads((folder / "minetune.json").read_text())["training_job"] == job.id
    curve = [p["train_loss"] for p in job.loss_curve]
    assert len(curve) == job.metrics["steps"] and [p["step"] for p in job.loss_curve][:2] == [1, 2]


def test_sft_adapter_learns_reloads_and_changes_generation(
    store: Store, settings: Settings, tiny_model_dir: Path
) -> None:
    seed_program(store, tiny_model_dir)
    seen: list[Progress] = []
    outcome = runs.train(store, settings, "p", method="sft", config=config(), on_progress=seen.append)
    _check_lineage(store, outcome, tiny_model_dir, "sft")
    curve = [p["train_loss"] for p in outcome.job.loss_curve]
    assert sum(curve[-4:]) / 4 < sum(curve[:4]) / 4 - 0.5, curve
    metrics = outcome.job.metrics
    assert metrics["after"]["valid_loss"] < metrics["before"]["valid_loss"]  # held out, not trained on
    assert {p.phase for p in seen} >= {"loading", "training", "evaluating", "saving", "done"}
    assert max(p.step for p in seen) == 24 and any(p.total == 24 for p in seen)
    # The adapter reloads from disk (the active version's spec) and changes what the model says.
    assert greedy(store.active_version("p").model_spec or "") != greedy(f"hf:{tiny_model_dir}")
    assert store.active_version("p").adapter == outcome.adapter.path  # type: ignore[union-attr]
    # A chat session on the program answers through the hf: backend with the active adapter.
    from minetune.loop import Session

    with Session(Store.open(settings), settings.with_overrides(max_tokens=6), "p") as chat:
        assert chat.model().adapter_dir == Path(outcome.adapter.path)  # type: ignore[attr-defined, union-attr]
        response = chat.send("What is the capital of France?")
        assert f"?adapter={outcome.adapter.path}" in response.model  # type: ignore[union-attr]


def test_dpo_adapter_raises_the_preference_margin(
    store: Store, settings: Settings, tiny_model_dir: Path
) -> None:
    seed_program(store, tiny_model_dir)
    outcome = runs.train(store, settings, "p", method="auto", config=config(steps=16))
    _check_lineage(store, outcome, tiny_model_dir, "dpo")  # auto picks DPO: 20 retry pairs
    curve = [p["train_loss"] for p in outcome.job.loss_curve]
    assert curve[0] == pytest.approx(0.6931, abs=1e-3) and curve[-1] < 0.45, curve
    metrics = outcome.job.metrics
    assert metrics["after"]["margin"] > metrics["before"]["margin"] + 1
    assert metrics["rewards_accuracies"] > 0.5


def test_kto_adapter_learns_from_ratings(store: Store, settings: Settings, tiny_model_dir: Path) -> None:
    seed_program(store, tiny_model_dir)
    outcome = runs.train(store, settings, "p", method="kto", config=config(steps=16))
    _check_lineage(store, outcome, tiny_model_dir, "kto")
    curve = [p["train_loss"] for p in outcome.job.loss_curve]
    assert curve[0] == pytest.approx(0.5, abs=1e-3) and sum(curve[-4:]) / 4 < 0.45, curve
    assert outcome.job.metrics["after"]["margin"] > outcome.job.metrics["before"]["margin"]


# -- cancel and resume ---------------------------------------------------------------------------------


def test_cancel_keeps_the_previous_adapter_and_resume_finishes(
    store: Store, settings: Settings, tiny_model_dir: Path
) -> None:
    seed_program(store, tiny_model_dir)
    first = runs.train(store, settings, "p", method="sft", config=config(steps=6))
    before = store.active_version("p")
    stop = threading.Event()

    def cancel_at_step_4(p: Progress) -> None:
        if p.phase == "training" and p.step >= 4:
            stop.set()

    cancelled = runs.train(
        store,
        settings,
        "p",
        method="sft",
        config=config(steps=10, save_steps=100),
        on_progress=cancel_at_step_4,
        cancel=stop,
    )
    assert cancelled.status == "cancelled" and cancelled.adapter is None
    job = jobs_db.get_job(store, cancelled.job.id)
    assert job.status == "cancelled" and f"--resume {job.id}" in (job.error or "")
    assert store.active_version("p").id == before.id  # the previous adapter stays active
    assert [a.id for a, _ in adapters_db.list_adapters(store, "p")] == [first.adapter.id]  # type: ignore[union-attr]
    checkpoints = settings.home / "adapters" / "local" / "p" / ".jobs" / str(job.id) / "checkpoints"
    assert [c.name for c in checkpoints.glob("checkpoint-*")] == ["checkpoint-4"]
    steps_done = [p["step"] for p in job.loss_curve]
    assert steps_done == [1, 2, 3, 4]

    resumed = runs.resume(store, settings, job.id)
    assert resumed.status == "succeeded" and resumed.job.id == job.id
    assert [p["step"] for p in resumed.job.loss_curve] == list(range(1, 11))
    assert store.active_version("p").adapter == resumed.adapter.path  # type: ignore[union-attr]
    assert not checkpoints.exists()
    with pytest.raises(TrainingError, match="only cancelled or failed"):
        runs.resume(store, settings, job.id)


def test_ctrl_c_marks_the_job_cancelled_and_changes_nothing(
    store: Store, settings: Settings, tiny_model_dir: Path
) -> None:
    seed_program(store, tiny_model_dir)
    before = store.active_version("p")

    def interrupt(p: Progress) -> None:
        if p.phase == "training" and p.step >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runs.train(store, settings, "p", method="sft", config=config(steps=8), on_progress=interrupt)
    (job, _), *_ = jobs_db.list_jobs(store, "p", kind="local")
    assert job.status == "cancelled"
    assert store.active_version("p").id == before.id
    assert adapters_db.list_adapters(store, "p") == []


# -- bad input -----------------------------------------------------------------------------------------


def test_too_few_examples_is_a_clear_error(store: Store, settings: Settings, tiny_model_dir: Path) -> None:
    seed_program(store, tiny_model_dir, QUESTIONS[:3])
    before = store.active_version("p")
    with pytest.raises(
        TrainingError, match=r"Too few SFT examples to train on: 3, at least 10 needed.*accept 7 more"
    ):
        runs.train(store, settings, "p", method="sft", config=config())
    with pytest.raises(TrainingError, match="Not enough rated examples"):
        runs.train(store, settings, "p", method="auto", config=config())
    assert jobs_db.list_jobs(store, "p", kind="local") == []
    assert store.active_version("p").id == before.id


def test_a_base_model_that_cannot_be_loaded(
    store: Store, settings: Settings, tiny_model_dir: Path, tmp_path: Path
) -> None:
    seed_program(store, tiny_model_dir)
    trained = runs.train(store, settings, "p", method="sft", config=config(steps=4))
    before = store.active_version("p")
    with pytest.raises(TrainingError, match="base model cannot be loaded.*no such directory"):
        runs.train(store, settings, "p", method="sft", base=f"hf:{tmp_path / 'missing'}", config=config())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(TrainingError, match=f"Could not load the base model from {broken}"):
        runs.train(store, settings, "p", method="sft", base=str(broken), config=config())
    with pytest.raises(TrainingError, match="Local training needs a local base model"):
        runs.train(store, settings, "p", method="sft", base="openai:gpt-4o-mini", config=config())
    jobs = jobs_db.list_jobs(store, "p", kind="local")
    assert [j.status for j, _ in jobs] == ["failed", "succeeded"]
    assert "Could not load the base model" in (jobs[0][0].error or "")
    assert store.active_version("p").id == before.id
    assert store.active_version("p").adapter == trained.adapter.path  # type: ignore[union-attr]


def test_a_corrupt_adapter_directory(store: Store, settings: Settings, tiny_model_dir: Path) -> None:
    seed_program(store, tiny_model_dir)
    first = runs.train(store, settings, "p", method="sft", config=config(steps=4))
    second = runs.train(store, settings, "p", method="sft", config=config(steps=4))
    assert first.adapter is not None and second.adapter is not None
    active = store.active_version("p")
    weights = Path(second.adapter.path) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(AdapterError, match="corrupt"):
        runs.train(store, settings, "p", method="sft", continue_active=True, config=config(steps=4))
    with pytest.raises(AdapterError, match="corrupt"):
        adapters.switch(store, settings, "p", second.adapter.id)
    (Path(first.adapter.path) / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterError, match="adapter_config.json is missing or invalid"):
        adapters.switch(store, settings, "p", first.adapter.id)
    assert store.active_version("p").id == active.id
    assert [j.status for j, _ in jobs_db.list_jobs(store, "p", kind="local")] == ["succeeded", "succeeded"]


# -- continual learning: replay and the gate -------------------------------------------------------------

TASK_A = "Paris is the capital of France."
TASK_B = "Sure, here is a short poem about the sea and the sky."


def _sequential(store: Store, settings: Settings, model_dir: Path) -> dict[str, float]:
    """Task A (one answer style), then task B (another) with and without replaying A."""
    seed_program(store, model_dir, QUESTIONS[:12], good=TASK_A, bad=None)
    a = runs.train(store, settings, "p", method="sft", config=config(steps=30, lr=1e-2, rank=16))
    assert a.adapter is not None
    found = examples_for(store, "p", "sft")
    task_a = found.train + found.valid
    seed_program(
        store, model_dir, QUESTIONS[12:] + [q + " Again." for q in QUESTIONS[:4]], good=TASK_B, bad=None
    )
    losses: dict[str, float] = {}
    base = str(model_dir)
    losses["A after A"] = evaluate_adapter(base, a.adapter.path, task_a)["loss"]
    losses["A on the base model"] = evaluate_adapter(base, None, task_a)["loss"]
    for ratio in (0.0, 1.0):
        adapters.switch(store, settings, "p", a.adapter.id)  # both updates start from adapter A
        train = config(steps=30, lr=1e-2, rank=16)
        cfg = continual.ContinualConfig(threshold=1, replay_ratio=ratio, train=train)
        buf, plan = continual.plan_update(store, settings, "p", cfg)
        assert len(buf.new) >= 10 and len(buf.old) >= 10
        assert plan.replayed == (0 if ratio == 0 else min(len(buf.new), len(buf.old)))
        assert plan.parent is not None
        plan.gate = None  # no gate: measure forgetting itself
        outcome = runs.run(store, settings, plan)
        assert outcome.adapter is not None and outcome.adapter.parent_id == a.adapter.id
        assert set(outcome.adapter.lineage_attempt_ids) >= set(a.adapter.lineage_attempt_ids)
        task_b = buf.new
        losses["B on the base model"] = evaluate_adapter(base, None, task_b)["loss"]
        key = "with replay" if ratio else "without replay"
        losses[f"A after B {key}"] = evaluate_adapter(base, outcome.adapter.path, task_a)["loss"]
        losses[f"B after B {key}"] = evaluate_adapter(base, outcome.adapter.path, task_b)["loss"]
    return losses


# Nats per answer token. Measured 0.82 here (A after B: 5.93 without replay, 5.11 with). The fixture's
# loss cannot fall below ~4.96 (ln 512 minus the largest logit its frozen 64-d embeddings allow), so
# A after A (4.99) is near that floor and the base model sits at ~6.3.
REPLAY_MARGIN = 0.5


def test_replay_keeps_task_a_while_learning_task_b(
    store: Store, settings: Settings, tiny_model_dir: Path
) -> None:
    losses = _sequential(store, settings, tiny_model_dir)
    print(json.dumps(losses, indent=2))
    without, with_replay = losses["A after B without replay"], losses["A after B with replay"]
    assert with_replay < without - REPLAY_MARGIN, losses
    assert losses["A after A"] < without  # without replay, B overwrote A
    assert losses["B after B with replay"] < losses["B on the base model"] - 0.5  # B was still learned


def test_the_gate_refuses_an_update_that_prefers_rejected_answers(
    store: Store, settings: Settings, tiny_model_dir: Path
) -> None:
    seed_program(store, tiny_model_dir, variants(4))
    first = runs.train(store, settings, "p", method="dpo", config=config(steps=12, lr=2e-3))
    assert first.adapter is not None
    active = store.active_version("p")
    buf = continual.buffer(store, "p")
    assert buf.method == "dpo" and buf.new == [] and len(buf.old) == 72 and len(buf.valid) == 8
    assert not buf.ready
    assert continual.update(store, settings, "p").status == "waiting"
    swapped = [dataclasses.replace(ex, chosen=ex.rejected, rejected=ex.chosen) for ex in buf.old]
    cfg = continual.ContinualConfig(replay_ratio=0.0, train=config(steps=12, lr=2e-3))
    report = continual.update(store, settings, "p", cfg, new=swapped)
    print(json.dumps(report.gate, indent=2))
    assert report.status == "rejected"
    assert "did not improve" in report.reason and "previous adapter stays active" in report.reason
    assert report.improvement is not None and report.improvement < 0
    assert report.regression == 1.0 and report.gate["held_out"] == 8
    job = jobs_db.get_job(store, report.outcome.job.id)  # type: ignore[union-attr]
    assert job.status == "rejected" and job.error == report.reason
    assert job.metrics["gate"]["accepted"] is False
    assert store.active_version("p").id == active.id
    assert [a.id for a, _ in adapters_db.list_adapters(store, "p")] == [first.adapter.id]
    assert not (settings.home / "adapters" / "local" / "p" / ".jobs" / str(job.id)).exists()


def test_the_gate_keeps_an_update_that_helps(store: Store, settings: Settings, tiny_model_dir: Path) -> None:
    seed_program(store, tiny_model_dir, variants(2))
    first = runs.train(store, settings, "p", method="dpo", config=config(steps=6, lr=1e-3))
    assert first.adapter is not None
    seed_program(store, tiny_model_dir, variants(2, [q + " Please." for q in QUESTIONS]))
    cfg = continual.ContinualConfig(threshold=8, replay_ratio=0.5, train=config(steps=12, lr=1e-3))
    buf = continual.buffer(store, "p", cfg)
    assert buf.ready and len(buf.new) >= 8
    report = continual.update(store, settings, "p", cfg)
    print(json.dumps(report.gate, indent=2))
    assert report.status == "updated", report.reason
    assert report.improvement is not None and report.improvement > 0
    assert report.retention is not None and report.retention <= 0.05
    assert report.regression is not None and report.gate["held_out"] >= 8
    assert report.gate["p_value"] <= 0.05 and "sign test" in report.reason
    adapter = report.outcome.adapter  # type: ignore[union-attr]
    assert adapter is not None and adapter.parent_id == first.adapter.id
    assert adapter.metrics["replayed"] == min(round(0.5 * len(buf.new)), len(buf.old)) > 0
    assert store.active_version("p").adapter == adapter.path
    assert continual.buffer(store, "p", cfg).new == []  # learned: the buffer is empty again


# -- forgetting ------------------------------------------------------------------------------------------


def test_forgetting_a_turn_taints_its_adapter_and_retraining_excludes_it(
    store: Store, settings: Settings, tiny_model_dir: Path
) -> None:
    seed_program(store, tiny_model_dir, QUESTIONS[:14])
    outcome = runs.train(store, settings, "p", method="sft", config=config(steps=8))
    old = outcome.adapter
    assert old is not None
    turn_id = examples_for(store, "p", "sft").train[0].turn_id
    forgotten = {a.id for a in store.turn(turn_id).attempts}
    assert forgotten & set(old.example_attempt_ids)
    result = forget(store, turns=[turn_id])
    assert result.turns == 1 and result.attempts == 2 and result.tainted_adapters == [old.id]
    assert result.active_tainted == {"p": old.id}
    row = adapters_db.get_adapter(store, old.id)
    assert row.tainted_at is not None and "2 forgotten attempt" in (row.taint_reason or "")
    assert store.existing_attempt_ids(sorted(forgotten)) == set()
    with pytest.raises(TrainingError, match="retrain it first"):
        continual.buffer(store, "p")

    results = adapters.retrain_tainted(store, settings, "p", config=config(steps=8), minimum=5)
    assert len(results) == 1 and results[0].outcome is not None
    new = results[0].outcome.adapter
    assert new is not None and new.replaces_id == old.id and new.tainted_at is None
    assert not forgotten & set(new.lineage_attempt_ids)
    assert set(new.example_attempt_ids) < set(old.example_attempt_ids)
    assert adapters_db.get_adapter(store, old.id).status == "retired"
    assert store.active_version("p").adapter == new.path  # the old one was active, so the new one is
    assert adapters_db.tainted_adapters(store) == []
    assert adapters.retrain_tainted(store, settings) == []


def test_note_runs_an_update_in_the_background_when_the_buffer_is_full(
    store: Store, settings: Settings, tiny_model_dir: Path
) -> None:
    seed_program(store, tiny_model_dir, QUESTIONS[:12])
    runs.train(store, settings, "p", method="dpo", config=config(steps=4, lr=1e-3))
    cfg = continual.ContinualConfig(threshold=8, train=config(steps=4, lr=1e-3))
    check = jobs_app.note_accepted(store, settings, "p", cfg)
    assert check is not None and check.wait(60)
    assert check.value is None and check.record().result["status"] == "waiting"  # nothing new yet
    seed_program(store, tiny_model_dir, [q + " Please." for q in QUESTIONS[:10]])
    handle = jobs_app.note_accepted(store, settings, "p", cfg)
    assert handle is not None and handle.wait(120)
    report = handle.value
    assert isinstance(report, continual.UpdateReport), handle.record()
    assert report.status in ("updated", "rejected") and report.improvement is not None
    (job, _), *_ = jobs_db.list_jobs(store, "p", kind="local")
    assert job.hyperparameters["kind"] == "update" and job.hyperparameters["replayed"] > 0
    assert job.status == ("succeeded" if report.status == "updated" else "rejected")
    row = handle.record()
    assert row.status == "succeeded" and row.training_job_id == job.id
    assert row.result["status"] == report.status


def test_train_commands(store: Store, tiny_model_dir: Path) -> None:
    from click.testing import CliRunner

    from minetune.cli import app

    seed_program(store, tiny_model_dir, QUESTIONS[:12])
    args = ["--steps", "4", "--lr", "5e-3", "--rank", "8", "--max-length", "96", "--threads", "1"]
    runner = CliRunner()
    result = runner.invoke(app, ["train", "-p", "p", "--method", "sft", *args], catch_exceptions=False)
    text = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "p: 12 accepted answers (rated ≥ 4★ or praised)" in text
    assert (
        "Adapter 1 (SFT, 11 training examples · loss" in text
        and "(active)" in text
        and "held-out loss" in text
    )
    jobs = json.loads(runner.invoke(app, ["train", "jobs", "--json"]).output)
    assert [(j["id"], j["status"], len(j["loss_curve"])) for j in jobs] == [(1, "succeeded", 4)]
    # The run was a job of the job runner: on the row every process (the web page) reads.
    (row,) = job_rows.list_jobs(store, "p", kinds=["train"])
    assert (row.status, row.training_job_id, row.owner) == ("succeeded", 1, jobs_app.this_owner())
    assert (row.progress["step"], row.progress["total"], len(row.progress["curve"])) == (4, 4, 4)
    assert "0 new SFT example(s) of 8" in runner.invoke(app, ["train", "buffer", "-p", "p"]).output
    turn = examples_for(store, "p", "sft").train[0].turn_id
    assert "Tainted adapter(s) 1" in runner.invoke(app, ["forget", str(turn)]).output
    result = runner.invoke(app, ["train", "--retrain-tainted", *args], catch_exceptions=False)
    text = " ".join(result.output.split())
    assert (
        result.exit_code == 0 and "adapter 1 (p):" in text and "Adapter 2 (SFT, 10 training examples" in text
    ), text
    listed = json.loads(runner.invoke(app, ["adapter", "list", "--json", "--all"]).output)
    assert [(a["id"], a["status"], a["tainted"], a["active"]) for a in listed] == [
        (1, "retired", True, False),
        (2, "ready", False, True),
    ]
    # `adapter create` trains a domain adapter as a job too.
    result = runner.invoke(app, ["adapter", "create", "cats", "-p", "p", "--method", "sft", *args])
    assert result.exit_code == 0, result.output
    assert "Adapter 3 (SFT" in " ".join(result.output.split())
    assert [a["domain"] for a in json.loads(runner.invoke(app, ["adapter", "list", "--json"]).output)] == [
        "general",
        "cats",
    ]
    assert job_rows.list_jobs(store, "p", kinds=["train"])[0].status == "succeeded"
    result = runner.invoke(app, ["train", "-p", "p", "--method", "sft", "--base", "ollama:llama3.2", *args])
    assert result.exit_code == 1 and "needs a local base model" in str(result.exception)
    assert "needs a local base model" in (job_rows.list_jobs(store, "p", kinds=["train"])[0].error or "")


def test_ewc_penalises_moving_away_from_the_parent(
    store: Store, settings: Settings, tiny_model_dir: Path, tmp_path: Path
) -> None:
    seed_program(store, tiny_model_dir, QUESTIONS[:12])
    examples = examples_for(store, "p", "sft").train
    parent = engines.fit(tiny_model_dir, "sft", examples, config(steps=4), tmp_path / "parent")
    assert parent.adapter_dir is not None
    # The penalty is zero at the parent's weights and grows as they move.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(parent.adapter_dir), is_trainable=True
    )
    ewc = engines._EWC(model, AutoTokenizer.from_pretrained(str(tiny_model_dir)), examples[:4], 100.0, 96)
    assert float(ewc.penalty().detach()) == 0.0
    with torch.no_grad():
        for p in ewc.params.values():
            p.add_(0.01)
    assert float(ewc.penalty().detach()) > 0.0
    # A continued run with the penalty trains (TRL's compute_loss is wrapped) and stays closer.
    moved = {}
    for strength in (0.0, 1e4):
        run = engines.fit(
            tiny_model_dir,
            "sft",
            examples[::-1],
            config(steps=6, ewc_lambda=strength),
            tmp_path / f"ewc-{strength}",
            parent_adapter=parent.adapter_dir,
            ewc_examples=examples,
        )
        assert run.adapter_dir is not None and len(run.loss_curve) == 6
        moved[strength] = _distance(parent.adapter_dir, run.adapter_dir)
    assert moved[1e4] < moved[0.0], moved


def _distance(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    left, right = (
        load_file(str(a / "adapter_model.safetensors")),
        load_file(str(b / "adapter_model.safetensors")),
    )
    return sum(float((left[k] - right[k]).pow(2).sum()) for k in left) ** 0.5


# -- several processes (torchrun, gloo on CPU) -------------------------------------------------------------


def test_processes_must_split_the_batch_and_the_resident_engine_trains_in_one() -> None:
    with pytest.raises(TrainingError, match="divide evenly across 3 processes"):
        TrainConfig(batch_size=4, processes=3).check("sft")
    with pytest.raises(TrainingError, match="processes=2"):
        engines.check_engine("sft", TrainConfig(engine="resident", processes=2))


@pytest.mark.slow
def test_torchrun_two_processes_train_as_one(store: Store, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Two gloo processes each taking half of every batch reach the same adapter as one process."""
    seed_program(store, tiny_model_dir, QUESTIONS[:12])
    sets = examples_for(store, "p", "sft")
    held_out = engines.EvalSets(targets=sets.train[:4])
    results, progress = [], []
    for processes in (1, 2):
        cfg = config(steps=6, lr=5e-3, engine="trl", processes=processes)
        results.append(
            engines.fit(
                tiny_model_dir,
                "sft",
                sets.train,
                cfg,
                tmp_path / f"p{processes}",
                eval_sets=held_out,
                on_progress=progress.append if processes == 2 else None,
            )
        )
    one, two = results
    assert two.adapter_dir is not None and (two.adapter_dir / "adapter_model.safetensors").is_file()
    assert two.steps == one.steps == 6
    assert [p["step"] for p in two.loss_curve] == [p["step"] for p in one.loss_curve]
    for a, b in zip(one.loss_curve, two.loss_curve, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.02)
    assert two.after["valid_loss"] == pytest.approx(one.after["valid_loss"], rel=0.02)
    assert two.after["valid_loss"] < two.before["valid_loss"]
    assert {p.phase for p in progress} >= {"loading", "training", "done"}  # rank 0's reports arrived
    assert not (tmp_path / "p2" / "distributed-run.json").exists()  # the file holding the text is gone


@pytest.mark.slow
def test_train_command_with_two_processes(store: Store, tiny_model_dir: Path) -> None:
    from click.testing import CliRunner

    from minetune.cli import app

    seed_program(store, tiny_model_dir, QUESTIONS[:12])
    args = ["--steps", "4", "--lr", "5e-3", "--rank", "8", "--max-length", "96", "--processes", "2"]
    result = CliRunner().invoke(app, ["train", "-p", "p", "--method", "sft", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (job, _), *_ = jobs_db.list_jobs(store, "p", kind="local")
    assert job.status == "succeeded" and job.hyperparameters["processes"] == 2
    assert store.active_version("p").adapter is not None
