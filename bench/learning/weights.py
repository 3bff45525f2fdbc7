"""The weight path: the pretrained tiny model (:mod:`learning.tinylm`) behind a real ``Session``,
learning from the user's accepted answers through minetune's training machinery.

* **first adapter** (``minetune train``): :func:`minetune.train.runs.train`, SFT on the home
  domain, once ``first`` (24) accepted answers exist;
* **continual updates**: after every interaction, when the buffer holds ``threshold`` (8) new
  accepted answers, one :func:`minetune.train.continual.update` — what the ``continual`` job runs,
  called inline here so the run is deterministic — with replay (one old example per new one) and
  the default gate (8 held-out answers, sign test at 0.05, retention tolerance 5%);
* **the taste change** is a domain change (home → work, new taste): continual updates stop, the
  program switches to routing (``hf:DIR?route``), and a ``work`` domain adapter is created
  (:func:`minetune.train.adapters.create`) from the work conversations once ``first`` accepted
  answers exist, then re-created every ``threshold`` × 2 new ones (routing serves the newest).

Arms: ``weights only`` (re-optimization off: no lessons, no demos) and ``both`` (re-optimization
on, lessons from critiques distilled by the stand-in's reflection — the tiny model cannot reflect
— and no demos: the tiny model was not pretrained to read them). Training runs on the resident
plain-PyTorch engine (SFT, LoRA rank 8, fp32, CPU).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from learning import styles
from learning.arms import RETRY_LIMIT, Run, Schedule, asked, interact, probe
from learning.standin import StandInModel
from learning.user import SimulatedUser, Taste
from minetune import Session
from minetune.app.exchange import Learning
from minetune.config import load_settings
from minetune.errors import MinetuneError
from minetune.store import Store
from minetune.store.repo import DEFAULT_INSTRUCTIONS

WEIGHT_ARMS = {"weights only": False, "both": True}  # arm: re-optimize the prompt too
PROGRAM = "bench"
TRAIN = {
    "engine": "resident",
    "rank": 8,
    "learning_rate": 3e-3,
    "batch_size": 8,
    "epochs": 3.0,
    "max_length": 384,
    "precision": "fp32",
    "threads": 2,
    "seed": 0,
}


def _refresh_model(chat: Session) -> None:
    """A Session keeps the model it built; after an adapter change the bench drops it so the next
    message is served by the active version's spec (and a routed spec rebuilds its router)."""
    chat._model = None


def run_weight_arm(
    arm: str,
    taste: Taste,
    seed: int,
    schedule: Schedule,
    home: Path,
    model_dir: Path,
    first: int = 24,
    threshold: int = 8,
    probes: int = 8,
    log: Any = print,
) -> Run:
    from minetune.train import adapters, continual, runs
    from minetune.train.config import TrainConfig
    from minetune.train.examples import Selection

    reoptimize = WEIGHT_ARMS[arm]
    settings = load_settings(
        home,
        database_url=f"sqlite:///{home / 'store.db'}",
        retry_limit=RETRY_LIMIT,
        reoptimize=reoptimize,
        max_tokens=160,
    )
    store = Store.open(settings)
    store.create_program(PROGRAM, DEFAULT_INSTRUCTIONS, f"hf:{model_dir}")
    store.add_version(PROGRAM, demo_policy={"k": 0}, note="bench: no demos for the tiny model")
    reflector = StandInModel(seed + 3)
    chat = Session(store, settings, PROGRAM, learning=Learning(settings, lambda _s, _p: reflector))
    train_config = TrainConfig.from_dict(TRAIN)
    config = continual.ContinualConfig(threshold=threshold, train=train_config)
    user = SimulatedUser(seed, critiques=True)
    rng = random.Random(seed + 1)
    next_of = {d: asked(rng, d) for d in ("home", "work")}
    old_probes = styles.questions("home", held_out=True)[:probes]
    run = Run(arm, taste.name, seed)
    work_conversations: list[int] = []
    work_trained_at = 0

    def note(text: str) -> None:
        run.notes.append(text)
        log(f"  [{arm}] {text}")

    run.probes["start"] = probe(chat, old_probes, taste.before)
    for index in range(schedule.before + schedule.after):
        if index == schedule.before:
            run.probes["at change"] = probe(chat, old_probes, taste.before)
            try:
                adapters.switch(store, settings, PROGRAM, "route")
                _refresh_model(chat)
                note(f"{index}: switched to routing between domain adapters")
            except MinetuneError as exc:
                note(f"{index}: no routing: {exc}")
        phase, domain, wanted = schedule.phase(taste, index)
        run.interactions.append(interact(chat, user, next_of[domain](), wanted, phase))
        if phase == 1 and chat.conversation_id is not None:
            work_conversations.append(chat.conversation_id)
        try:
            if phase == 0 and store.active_version(PROGRAM).adapter is None:
                accepted = len(continual.buffer(store, PROGRAM, config, method="sft").new)
                if accepted >= first:
                    outcome = runs.train(
                        store, settings, PROGRAM, method="sft", config=train_config, domain="home"
                    )
                    _refresh_model(chat)
                    note(f"{index}: first adapter trained on {accepted} accepted answers ({outcome.status})")
            elif phase == 0:
                report = continual.update(store, settings, PROGRAM, config, method="sft")
                if report.status != "waiting":
                    _refresh_model(chat)
                    note(f"{index}: continual update {report.status}: {report.reason}")
            else:
                accepted = _accepted_in(store, work_conversations)
                if accepted >= first and accepted - work_trained_at >= (
                    threshold * 2 if work_trained_at else 0
                ):
                    outcome = adapters.create(
                        store,
                        settings,
                        PROGRAM,
                        "work",
                        method="sft",
                        config=train_config,
                        selection=Selection(conversations=tuple(work_conversations)),
                    )
                    adapters.switch(store, settings, PROGRAM, "route")
                    _refresh_model(chat)
                    work_trained_at = accepted
                    note(f"{index}: work adapter created from {accepted} accepted answers ({outcome.status})")
        except Exception as exc:  # noted in the results; the user's run goes on without it
            note(f"{index}: training skipped: {type(exc).__name__}: {exc}")
    run.probes["at end"] = probe(chat, old_probes, taste.before)
    chat.close()
    return run


def _accepted_in(store: Store, conversations: list[int]) -> int:
    """Turns of these conversations with an accepted (5★ or praised) answer."""
    from minetune.train.examples import Selection, examples_for

    found = examples_for(store, PROGRAM, "sft", selection=Selection(conversations=tuple(conversations)))
    return len(found.train) + len(found.valid)
