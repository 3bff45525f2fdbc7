"""Honest gates: what an engine cannot do is refused, not ignored; a resumed update meets the gate
and EWC of the run it continues; the gate measures only data nothing was trained on, needs enough
of it, and an improvement beyond noise (an exact one-sided paired sign test)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minetune.config import Settings, load_settings
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store import training as jobs_db
from minetune.train import continual, engines, runs
from minetune.train.config import Progress, TrainConfig, TrainingError
from minetune.train.examples import examples_for
from minetune.train.fast import RESIDENT
from minetune.train.gate import GateConfig, sign_test

# -- the decision rule (no model) --------------------------------------------------------------------


def scores(margins: list[float]) -> dict[str, Any]:
    return {"margins": margins, "margin": sum(margins) / len(margins)}


def test_sign_test_is_the_exact_binomial_tail() -> None:
    from scipy.stats import binomtest

    for k, n in ((8, 8), (7, 8), (6, 8), (5, 8), (0, 3), (12, 20)):
        diffs = [1.0] * k + [-1.0] * (n - k) + [0.0]  # the tie is dropped
        above, untied, p = sign_test(diffs)
        assert (above, untied) == (k, n)
        assert p == pytest.approx(binomtest(k, n, 0.5, alternative="greater").pvalue)
    assert sign_test([]) == (0, 0, 1.0)
    assert sign_test([0.4, 0.6], threshold=0.5)[:2] == (1, 2)


def test_the_gate_needs_enough_held_out_pairs() -> None:
    """Two pairs that both improved a lot: the old rule (mean above 0) kept this."""
    decision = GateConfig().decide(scores([0.0, 0.0]), scores([5.0, 6.0]))
    assert not decision.accepted
    assert "only 2 held-out pair(s)" in decision.reason and "at least 8 needed" in decision.reason
    assert decision.report["held_out"] == 2 and decision.report["improvement"] == 5.5
    assert (
        GateConfig(min_held_out=2).decide(scores([0.0, 0.0]), scores([5.0, 6.0])).accepted is False
    )  # p=1/4
    assert GateConfig(min_held_out=2, significance=0.3).decide(scores([0, 0]), scores([5, 6])).accepted


def test_the_gate_refuses_an_improvement_within_noise() -> None:
    """The mean rose (one pair gained a lot) but only 5 of 8 pairs improved: p = 93/256."""
    before = scores([0.0] * 8)
    after = scores([3.0, 0.1, 0.1, 0.1, 0.1, -0.1, -0.1, -0.1])
    decision = GateConfig().decide(before, after)
    assert not decision.accepted and "within noise" in decision.reason
    assert decision.report["improved"] == 5 and decision.report["p_value"] == pytest.approx(93 / 256)
    assert decision.report["improvement"] > 0  # what min_improvement=0 alone let through

    seven = GateConfig().decide(before, scores([0.2] * 7 + [-0.1]))  # p = 9/256
    assert seven.accepted and "7 of 8 held-out pairs improved" in seven.reason
    assert "retention not measured" in seven.reason and seven.report["retention"] is None
    strict = GateConfig(significance=0.01).decide(before, scores([0.2] * 7 + [-0.1]))
    assert not strict.accepted


def test_min_improvement_is_the_tested_threshold_and_retention_is_checked() -> None:
    before = scores([0.0] * 10)
    small = GateConfig(min_improvement=0.5).decide(before, scores([0.4] * 10))
    assert not small.accepted and "did not improve" in small.reason
    # Mean 0.6 > 0.5, but only 3 of 10 pairs rose by more than 0.5.
    mixed = GateConfig(min_improvement=0.5).decide(before, scores([1.0, 1.0, 1.5] + [0.45] * 7))
    assert not mixed.accepted and "3 of 10" in mixed.reason
    forgot = GateConfig().decide(before | {"retain_loss": 2.0}, scores([1.0] * 10) | {"retain_loss": 2.2})
    assert not forgot.accepted and "rose 10.0%" in forgot.reason
    kept = GateConfig().decide(before | {"retain_loss": 2.0}, scores([1.0] * 10) | {"retain_loss": 2.02})
    assert kept.accepted and kept.report["retention"] == pytest.approx(0.01)


def test_without_pairs_the_gate_tests_per_answer_losses() -> None:
    before = {"target_losses": [3.0] * 8, "valid_loss": 3.0}
    assert GateConfig().decide(before, {"target_losses": [2.5] * 8, "valid_loss": 2.5}).accepted
    noisy = GateConfig().decide(before, {"target_losses": [1.0, 1.0, 3.1, 3.1, 3.1, 3.1, 2.9, 2.9]})
    assert not noisy.accepted and "held-out answers improved" in noisy.reason
    assert not GateConfig().decide(before | {"target_losses": [3.0]}, {"target_losses": [1.0]}).accepted
    empty = GateConfig().decide({}, {})
    assert not empty.accepted and "no held-out rated examples" in empty.reason
    with pytest.raises(TrainingError, match="significance level"):
        continual.ContinualConfig(significance=1.5).check()


# -- engines declare what they support -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "shown"),
    [
        ({"save_steps": 10}, "save_steps=10"),
        ({"gradient_checkpointing": True}, "gradient_checkpointing=True"),
        ({"ewc_lambda": 1.0}, "ewc_lambda=1.0"),
        ({"beta": 0.5}, "beta=0.5"),
        ({"precision": "fp16"}, "precision='fp16' (it supports auto, fp32, bf16)"),
        ({"scheduler": "polynomial"}, "scheduler='polynomial'"),
    ],
)
def test_the_resident_engine_refuses_what_it_does_not_implement(setting: dict[str, Any], shown: str) -> None:
    config = TrainConfig(engine="resident", **setting)
    with pytest.raises(TrainingError, match="The resident engine does not support") as caught:
        engines.check_engine("sft", config)
    assert shown in str(caught.value) and "Use engine trl" in str(caught.value)
    engines.check_engine("sft", dataclasses.replace(config, engine="trl"))  # TRL does all of them
    engines.check_engine("sft", dataclasses.replace(config, engine="auto"))  # auto picks TRL instead


def test_engine_declarations_and_auto_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    implemented = TrainConfig(
        engine="resident", grad_accum=2, warmup_steps=0.1, weight_decay=0.01, epochs=1.5, precision="fp32"
    )
    assert RESIDENT.problems("sft", implemented) == []
    with pytest.raises(TrainingError, match="method DPO \\(it trains SFT\\)"):
        engines.check_engine("dpo", TrainConfig(engine="resident"))
    with pytest.raises(TrainingError, match="resuming \\(it saves no checkpoints\\)"):
        engines.check_engine("sft", TrainConfig(engine="resident"), resume=True)
    assert {f.name for f in dataclasses.fields(TrainConfig)} == engines.TRL.options
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    auto = dataclasses.replace(implemented, engine="auto")
    assert engines.select_engine("sft", auto) is RESIDENT  # grad_accum no longer sends it to TRL
    assert engines.select_engine("sft", auto, resume=True) is engines.TRL
    assert engines.select_engine("sft", dataclasses.replace(auto, save_steps=5)) is engines.TRL
    assert engines.select_engine("dpo", auto) is engines.TRL
    with pytest.raises(TrainingError, match="constant scheduler has no warmup"):
        TrainConfig(warmup_steps=2, scheduler="constant").check("sft")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sft_examples(count: int = 8) -> list[Any]:
    from minetune.train.datasets import SFTExample

    return [
        SFTExample(
            [{"role": "user", "content": f"say the word {i}"}],
            "banana banana banana",
            turn_id=i,
            attempt_ids=(i,),
            stars=5,
            praised=False,
        )
        for i in range(count)
    ]


def test_the_resident_engine_implements_accumulation_warmup_decay_and_fractional_epochs(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """These used to be ignored: grad_accum 2 trained 6 steps instead of 3, epochs 1.5 trained 2."""
    import torch

    from minetune.train.fast import ResidentLoRA, Row

    examples = _sft_examples()
    base = TrainConfig(engine="resident", epochs=3, batch_size=4, learning_rate=5e-3, dropout=0.0)
    result = engines.fit(
        tiny_model_dir, "sft", examples, dataclasses.replace(base, grad_accum=2), tmp_path / "a"
    )
    assert result.steps == result.total_steps == 3 and result.adapter_dir is not None
    half = engines.fit(tiny_model_dir, "sft", examples, dataclasses.replace(base, epochs=1.5), tmp_path / "b")
    assert half.steps == 3

    trainer = ResidentLoRA.load(tiny_model_dir, device="cpu")
    rows = [Row(list(range(5, 25)), 10) for _ in range(4)]  # equal lengths: no padding

    def after(**options: Any) -> dict[str, Any]:
        trainer.restore(None)
        out = trainer.train(rows, max_steps=1, learning_rate=1e-2, **options)
        assert out.steps == 1
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}

    one_batch = after(batch_size=4)
    accumulated = after(batch_size=2, grad_accum=2)  # the same gradient, in two halves
    assert all(torch.allclose(one_batch[n], accumulated[n], atol=1e-6) for n in one_batch)
    trainer.restore(None)
    initial = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    warm = after(batch_size=4, warmup_steps=1, scheduler="linear")  # step 1 of warmup: lr 0
    assert all(torch.equal(initial[n], warm[n]) for n in initial)
    decayed = after(batch_size=4, weight_decay=0.5)
    assert any(not torch.allclose(one_batch[n], decayed[n]) for n in one_batch)


# -- runs of a program -------------------------------------------------------------------------------

SYSTEM = "You are a helpful assistant."
GOOD = "Paris is the capital of France."
BAD = "I do not know, sorry."
QUESTIONS = [f"Question {word}: what is the capital of France?" for word in "abcdefghijklmnopqrst"]


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store.open(settings)
    yield s
    s.close()


def config(steps: int = 4, lr: float = 2e-3, **kw: Any) -> TrainConfig:
    return TrainConfig(
        max_steps=steps, learning_rate=lr, batch_size=4, rank=8, max_length=96, threads=1, **kw
    )


def seed(store: Store, model_dir: Path, questions: list[str], good: str = GOOD) -> None:
    """Retry chains (a 1★ answer, then a 5★ one) for ``questions`` on the tiny model."""
    if "p" not in [p.name for p in store.programs()]:
        store.create_program("p", SYSTEM, f"hf:{model_dir}")
    conv = store.start_conversation("p").id
    for q in questions:
        turn = store.add_turn(conv, q)
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
        for response, stars in ((BAD, 1), (good, 5)):
            attempt = store.add_attempt(
                turn.id, model_spec="hf:x", messages=messages, response=response, latency_ms=1.0
            )
            store.add_feedback(attempt.id, "explicit", stars)


def variants(count: int, tag: str = "take") -> list[str]:
    return [f"{q} ({tag} {i})" for i in range(count) for q in QUESTIONS]


def ids(examples: list[Any]) -> set[int]:
    return {a for ex in examples for a in ex.attempt_ids}


def test_a_refused_config_is_refused_before_a_job_is_recorded(
    store: Store, settings: Settings, tiny_model_dir: Path
) -> None:
    seed(store, tiny_model_dir, QUESTIONS)
    with pytest.raises(TrainingError, match="resident engine does not support save_steps=5"):
        runs.train(store, settings, "p", method="sft", config=config(engine="resident", save_steps=5))
    assert jobs_db.list_jobs(store, "p", kind="local") == []


def test_a_cancelled_resident_run_does_not_offer_resume(
    store: Store, settings: Settings, tiny_model_dir: Path
) -> None:
    seed(store, tiny_model_dir, QUESTIONS)
    stop = threading.Event()
    stop.set()
    outcome = runs.train(store, settings, "p", method="sft", config=config(engine="resident"), cancel=stop)
    assert outcome.status == "cancelled"
    error = outcome.job.error or ""
    assert "--resume" not in error and "cannot be resumed" in error and "start a new run" in error
    with pytest.raises(TrainingError, match="left no checkpoint"):
        runs.resume(store, settings, outcome.job.id)


def test_resuming_an_update_goes_through_its_gate_and_ewc(
    store: Store, settings: Settings, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update that prefers rejected answers, cancelled with a checkpoint: resuming it used to
    skip the gate and EWC and activate it."""
    seed(store, tiny_model_dir, variants(4))
    first = runs.train(store, settings, "p", method="dpo", config=config(steps=4))
    assert first.adapter is not None
    active = store.active_version("p")
    buf = continual.buffer(store, "p")
    swapped = [dataclasses.replace(ex, chosen=ex.rejected, rejected=ex.chosen) for ex in buf.old]
    cfg = continual.ContinualConfig(
        replay_ratio=0.0, ewc_lambda=10.0, train=config(steps=8, save_steps=100), min_held_out=8
    )
    anchors: list[int] = []
    real_ewc = engines._EWC

    class CountingEWC(real_ewc):  # type: ignore[misc, valid-type]
        def __init__(self, model: Any, tokenizer: Any, examples: Any, *args: Any) -> None:
            anchors.append(len(examples))
            super().__init__(model, tokenizer, examples, *args)

    monkeypatch.setattr(engines, "_EWC", CountingEWC)
    stop = threading.Event()

    def cancel_at_3(p: Progress) -> None:
        if p.phase == "training" and p.step >= 3:
            stop.set()

    report = continual.update(store, settings, "p", cfg, new=swapped, on_progress=cancel_at_3, cancel=stop)
    assert report.status == "cancelled", report.reason
    job = jobs_db.get_job(store, report.outcome.job.id)  # type: ignore[union-attr]
    assert f"--resume {job.id}" in (job.error or "")
    assert job.hyperparameters["gate"] == cfg.gate().to_dict()
    assert len(job.hyperparameters["ewc"]) == cfg.train.ewc_examples == anchors[0] == 32

    resumed = runs.resume(store, settings, job.id)
    assert anchors == [32, 32]  # the resumed run estimated the same EWC anchor
    assert resumed.status == "rejected", resumed.job.error
    assert resumed.gate is not None and "did not improve" in resumed.gate.reason
    assert resumed.job.metrics["gate"]["accepted"] is False and resumed.job.metrics["gate"]["held_out"] == 8
    assert store.active_version("p").id == active.id  # not activated
    assert [a.id for a, _ in adapters_db.list_adapters(store, "p")] == [first.adapter.id]


def _parent_and_more(store: Store, settings: Settings, model_dir: Path, parent_extra: int = 0) -> Any:
    """A DPO parent trained on the training split (plus ``parent_extra`` held-out pairs), then
    new examples for an update."""
    seed(store, model_dir, variants(2))
    found = examples_for(store, "p", "dpo")
    first = runs.train(
        store,
        settings,
        "p",
        method="dpo",
        config=config(steps=2),
        examples=found.train + found.valid[:parent_extra],
    )
    assert first.adapter is not None
    seed(store, model_dir, variants(2, "new"))
    return first.adapter


def test_held_out_pairs_exclude_the_parents_training_data(
    store: Store, settings: Settings, tiny_model_dir: Path
) -> None:
    parent = _parent_and_more(store, settings, tiny_model_dir, parent_extra=2)
    learned = set(parent.lineage_attempt_ids or [])
    buf = continual.buffer(store, "p")
    assert any(not learned.isdisjoint(ex.attempt_ids) for ex in buf.valid)  # the parent saw some
    _, plan = continual.plan_update(store, settings, "p", continual.ContinualConfig())
    assert plan.eval_sets.pairs and learned.isdisjoint(ids(plan.eval_sets.pairs))
    assert ids(plan.eval_sets.pairs) == {
        a for ex in buf.valid if learned.isdisjoint(ex.attempt_ids) for a in ex.attempt_ids
    }
    assert learned.isdisjoint(ids(plan.eval_sets.targets))
    assert ids(plan.train).isdisjoint(ids(plan.eval_sets.pairs))


def test_retention_is_measured_only_on_examples_the_update_does_not_train_on(
    store: Store, settings: Settings, tiny_model_dir: Path
) -> None:
    _parent_and_more(store, settings, tiny_model_dir)
    buf = continual.buffer(store, "p")
    old = len(buf.old)
    assert old >= 30 and len(buf.new) >= 30
    # Every older example is replayed: nothing is left to measure retention on (it used to be
    # topped up with 32 replayed examples, which the update had just trained on).
    _, plan = continual.plan_update(store, settings, "p", continual.ContinualConfig(replay_ratio=2.0))
    assert plan.replayed == old and plan.eval_sets.retain == []
    # Six are not replayed: those six are the retention set.
    cfg = continual.ContinualConfig(replay_ratio=2.0, replay_max=old - 6)
    _, plan = continual.plan_update(store, settings, "p", cfg)
    assert plan.replayed == old - 6 and len(plan.eval_sets.retain) == 6
    assert ids(plan.eval_sets.retain).isdisjoint(ids(plan.train))
