"""Continual learning wired into the chat loop: accepted answers (ratings and praise) fill the
adapter's buffer, and at the threshold one gated incremental update runs in the background while
``rate()`` has long returned; settings from config.toml; off by default; errors recorded, not raised."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fakes import FakeOpenAI
from minetune.app import jobs as app_jobs
from minetune.config import ContinualSettings, Settings, load_settings
from minetune.errors import ConfigError
from minetune.loop import Session
from minetune.program import render_messages
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store import jobs as job_rows
from minetune.store import training as jobs_db
from minetune.train import continual, runs
from minetune.train.config import TrainConfig, TrainingError
from minetune.train.datasets import split

SYSTEM = "You are a helpful assistant."
GOOD = "Paris is the capital of France."
# 80 seeds put 8 prompt groups in the 10% validation split: the gate's minimum of held-out answers.
SEED_QUESTIONS = [f"Question number {i}: what is the capital of France?" for i in range(80)]
CANDIDATES = [
    f"Another question, {word}: which city is the French capital?"
    for word in (
        "alpha",
        "bravo",
        "charlie",
        "delta",
        "echo",
        "foxtrot",
        "golf",
        "hotel",
        "india",
        "juliet",
        "kilo",
        "lima",
        "mike",
        "november",
        "oscar",
        "papa",
    )
]
LORA = (
    ("batch_size", 4),
    ("learning_rate", 5e-3),
    ("max_length", 96),
    ("max_steps", 4),
    ("rank", 8),
    ("threads", 1),
)
N = 4  # the update threshold


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The tiny model trains fastest on one thread on a busy 2-CPU box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def continual_settings(**overrides: Any) -> Settings:
    """Continual learning on, with a tiny update and the gate opened wide (this is about wiring):
    any change passes the sign test against -1e9, but it still needs 8 held-out answers."""
    config = ContinualSettings(
        enabled=True, threshold=N, min_improvement=-1e9, retention_tolerance=1e9, train=LORA
    )
    return load_settings(reoptimize=False, continual=config, **overrides)


def prompt(store: Store, question: str) -> list[dict[str, str]]:
    """The messages a fresh conversation sends for ``question`` (no demos: the policy shows none)."""
    return [
        {"role": str(m["role"]), "content": str(m["content"])}
        for m in render_messages(store.active_version("p"), question)
    ]


def seed(store: Store, model_dir: Path) -> None:
    """Program ``p`` on the tiny model with 80 accepted answers, stored as the loop stores them."""
    store.create_program("p", SYSTEM, f"hf:{model_dir}")
    # No demos, so each prompt is what ``prompt`` predicts (the demo index syncs even with
    # re-optimization off; freezing it is issue 13's), and the split can be planned.
    store.add_version("p", demo_policy={"k": 0}, note="no demos")
    conv = store.start_conversation("p").id
    for question in SEED_QUESTIONS:
        turn = store.add_turn(conv, question)
        attempt = store.add_attempt(
            turn.id, model_spec="hf:x", messages=prompt(store, question), response=GOOD, latency_ms=1.0
        )
        store.add_feedback(attempt.id, "explicit", 5)


def training_questions(store: Store, count: int) -> list[str]:
    """``count`` new questions that land on the training side of the 90/10 split after each one is
    added (held-out ones would not count towards the buffer)."""
    old = [SimpleNamespace(prompt=prompt(store, q)) for q in SEED_QUESTIONS]
    chosen: list[str] = []
    for question in CANDIDATES:
        trial = chosen + [question]
        new = [SimpleNamespace(prompt=prompt(store, q)) for q in trial]
        if all(
            all(any(ex is t for t in split(old + new[:k])[0]) for ex in new[:k])
            for k in range(1, len(new) + 1)
        ):
            chosen = trial
        if len(chosen) == count:
            return chosen
    raise AssertionError("not enough candidate questions on the training side of the split")


def test_accepted_answers_trigger_one_background_update_at_the_threshold(
    tiny_model_dir: Path, fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = continual_settings()
    store = Store.open(settings)
    seed(store, tiny_model_dir)
    small = TrainConfig.from_dict(dict(LORA))
    first = runs.train(store, settings, "p", method="sft", config=small)
    assert first.adapter is not None
    questions = training_questions(store, N)

    # Hold every update at its start, so what rate() does before training is plain to see.
    started, release = threading.Event(), threading.Event()
    updates: list[str] = []
    real_update = continual.update

    def held_update(*args: Any, **kwargs: Any) -> continual.UpdateReport:
        updates.append(args[2])
        started.set()
        assert release.wait(120)
        return real_update(*args, **kwargs)

    monkeypatch.setattr(continual, "update", held_update)
    fake_llm.queue("Lyon.", *(f"Paris, answer {i}." for i in range(N)), "Glad to help!")
    jobs_before = len(jobs_db.list_jobs(store, "p", kind="local"))
    rated: list[int] = []
    with Session(store, settings, "p", model=f"openai-compatible:fake@{fake_llm.base_url}") as chat:
        chat.send("A question answered badly?")
        chat.rate(2)  # not accepted: nothing is noted
        assert job_rows.list_jobs(store, "p", kinds=["continual"]) == []
        for i, question in enumerate(questions):
            chat.new_conversation()
            rated.append(chat.send(question).attempt_id)
            if i < N - 1:
                chat.rate(5)
            else:  # the last one is accepted by praise
                chat.send("Perfect, thanks!")
                assert chat.last_praise is not None
            if i < N - 1:  # below the threshold the background check finds nothing to do
                app_jobs.runner().wait_idle(store, "p", timeout=60)  # may already be idle: read the rows
                checks = job_rows.list_jobs(store, "p", kinds=["continual"])
                assert checks and all(c.result.get("status") == "waiting" for c in checks), checks
                assert not started.is_set()
        # The N-th accepted answer started the update, and the chat has moved on while it waits.
        assert started.wait(60)
        assert updates == ["p"]
        assert len(adapters_db.list_adapters(store, "p")) == 1
        (worker,) = job_rows.list_jobs(store, "p", kinds=["continual"], statuses=["running"])
        assert worker.progress.get("phase") in (None, "loading")  # held before training
        release.set()
        assert not app_jobs.runner().wait(store, worker.id, 120).active

    store = Store.open(settings)
    report = app_jobs.last_update(store, "p")
    assert report is not None and report.status == "succeeded", report
    assert report.result["status"] == "updated", report.result
    assert updates == ["p"]  # exactly one update
    jobs = jobs_db.list_jobs(store, "p", kind="local")
    assert len(jobs) == jobs_before + 1
    job = jobs[0][0]
    assert job.hyperparameters["kind"] == "update" and job.status == "succeeded"
    assert job.hyperparameters["max_steps"] == 4  # [continual.train] reached the run
    new = [a for a, _ in adapters_db.list_adapters(store, "p") if a.id != first.adapter.id]
    assert len(new) == 1
    adapter = new[0]
    assert adapter.parent_id == first.adapter.id
    assert set(rated) <= set(adapter.example_attempt_ids) <= set(adapter.lineage_attempt_ids)
    assert set(first.adapter.lineage_attempt_ids) <= set(adapter.lineage_attempt_ids)
    assert store.active_version("p").adapter == adapter.path
    assert continual.buffer(store, "p").new == []  # learned: the buffer is empty again
    store.close()


def test_off_by_default_and_errors_are_recorded_not_raised(
    fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = f"openai-compatible:fake@{fake_llm.base_url}"
    fake_llm.queue("one", "two")
    noted: list[str] = []
    real = app_jobs.note_accepted
    monkeypatch.setattr(app_jobs, "note_accepted", lambda store, settings, program: noted.append(program))
    plain = load_settings(reoptimize=False)
    assert plain.continual.enabled is False
    with Session.open(model=spec, reoptimize=False) as chat:
        chat.send("hello")
        chat.rate(5)
    assert noted == []  # nothing noted, nothing imported for training

    # On, but the program's model is not a local base: the chat carries on and the reason is kept.
    monkeypatch.setattr(app_jobs, "note_accepted", real)
    settings = continual_settings()
    store = Store.open(settings)
    store.create_program("remote", SYSTEM, spec)
    with Session(store, settings, "remote") as chat:
        chat.send("hello again")
        assert chat.rate(5) == 5
    app_jobs.runner().wait_idle(store, "remote", timeout=60)
    error = app_jobs.last_update(store, "remote")
    assert error is not None and error.status == "failed", error
    assert "needs a local base model" in (error.error or "")
    store.close()


def test_continual_settings_from_config_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text(
        "[continual]\nenabled = true\nthreshold = 16\nreplay_ratio = 0.5\nstars = 5\n"
        "[continual.train]\nmax_steps = 20\nlearning_rate = 0.001\n"
    )
    settings = load_settings(home)
    assert settings.continual == ContinualSettings(
        enabled=True,
        threshold=16,
        replay_ratio=0.5,
        stars=5,
        train=(("learning_rate", 0.001), ("max_steps", 20)),
    )
    config = continual.ContinualConfig.from_settings(settings.continual)
    assert (config.threshold, config.replay_ratio, config.stars) == (16, 0.5, 5)
    assert (config.train.max_steps, config.train.learning_rate, config.train.epochs) == (20, 0.001, 2.0)
    monkeypatch.setenv("MINETUNE_CONTINUAL", "0")
    monkeypatch.setenv("MINETUNE_CONTINUAL_THRESHOLD", "3")
    assert load_settings(home).continual.enabled is False and load_settings(home).continual.threshold == 3

    for text, message in (
        ("[continual]\nthreshhold = 3\n", "unknown \\[continual\\] key"),
        ("[continual]\nenabled = 'maybe'\n", "continual.enabled must be true or false"),
        ("[continual]\nreplay_ratio = 'lots'\n", "continual.replay_ratio must be a number"),
        ("[continual]\nstars = 6\n", "continual.stars must be from 1 to 5"),
        ("continual = 3\n", "\\[continual\\] must be a table"),
    ):
        (home / "config.toml").write_text(text)
        monkeypatch.delenv("MINETUNE_CONTINUAL")
        with pytest.raises(ConfigError, match=message):
            load_settings(home)
        monkeypatch.setenv("MINETUNE_CONTINUAL", "0")
    bad = ContinualSettings(train=(("max_stepz", 3),))
    with pytest.raises(TrainingError, match="Unknown \\[continual.train\\] setting"):
        continual.ContinualConfig.from_settings(bad)
