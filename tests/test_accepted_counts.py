"""One definition of "accepted answers" (issue 14 item 4): `minetune train`, `minetune train buffer`
and `minetune program show` state the same count, in the same words, at the threshold the core
takes from ``[continual] stars``; the count is :func:`minetune.train.datasets.accepted_answer_ids`.

The seeded program mixes every case: 5★, 4★, 3★, praise without stars, praise after an explicit
2★ (the rating wins), a retry chain 2★ → 5★, a re-rating in both directions, and answers the user
edited (the edit replaces the attempts before it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from minetune.app.exchange import accepted_answers
from minetune.config import load_settings
from minetune.feedback import accepts_answer, describe_accepted
from minetune.store import Store
from minetune.store.browse import add_user_edit
from minetune.train.datasets import accepted_answer_ids, build_examples

PROGRAM = "mix"


def _answer(store: Store, turn_id: int, version_id: int, text: str) -> int:
    attempt = store.add_attempt(
        turn_id,
        version_id=version_id,
        model_spec="openai:fake",
        messages=[{"role": "user", "content": text}],
        response=f"answer to {text}",
        critique_used=None,
        latency_ms=1.0,
    )
    return attempt.id


def seed(store: Store) -> dict[str, list[int]]:
    """The mixed program; returns the attempt ids per case."""
    store.create_program(PROGRAM)
    version = store.active_version(PROGRAM).id
    conv = store.start_conversation(PROGRAM)
    ids: dict[str, list[int]] = {}

    def turn(name: str, *feedback: list[tuple[str, int | None]]) -> None:
        t = store.add_turn(conv.id, f"question {name}?")
        ids[name] = []
        for n, events in enumerate(feedback):
            a = _answer(store, t.id, version, f"{name} {n}")
            for kind, stars in events:
                store.add_feedback(a, kind, stars=stars, text="perfect" if kind == "praise" else None)
            ids[name].append(a)
        ids[f"{name}-turn"] = [t.id]

    turn("five", [("explicit", 5)])
    turn("four", [("explicit", 4)])
    turn("three", [("explicit", 3)])
    turn("praised", [("praise", 5)])  # praise is 5 stars unless rated
    turn("rated-then-praised", [("explicit", 2), ("praise", None)])  # the rating wins
    turn("retry", [("explicit", 2)], [("explicit", 5)])
    turn("re-rated-up", [("explicit", 2), ("explicit", 5)])
    turn("re-rated-down", [("explicit", 5), ("explicit", 3)])
    turn("edited-3", [("explicit", 3)])
    ids["edited-3"].append(add_user_edit(store, ids["edited-3-turn"][0], "my own answer A").id)
    turn("edited-4", [("explicit", 4)])  # the edit supersedes this 4★ answer
    ids["edited-4"].append(add_user_edit(store, ids["edited-4-turn"][0], "my own answer B").id)
    return ids


def expected(ids: dict[str, list[int]], threshold: int) -> list[int]:
    accepted = (
        ids["praised"] + ids["retry"][1:] + ids["re-rated-up"] + ids["edited-3"][1:] + ids["edited-4"][1:]
    )
    accepted += ids["five"]
    if threshold <= 4:
        accepted += ids["four"]
    return sorted(accepted)


def test_the_predicate() -> None:
    assert accepts_answer(4, praised=False, rated=True, threshold=4)
    assert not accepts_answer(3, praised=False, rated=True, threshold=4)
    assert accepts_answer(None, praised=True, rated=False, threshold=5)
    assert not accepts_answer(2, praised=True, rated=True, threshold=4)  # an explicit rating wins
    assert describe_accepted(1, 4) == "1 accepted answer (rated ≥ 4★ or praised)"
    assert describe_accepted(7, 5) == "7 accepted answers (rated ≥ 5★ or praised)"


@pytest.mark.parametrize("threshold", [4, 5])
def test_accepted_answers_are_the_sft_rows(database_url: str, threshold: int) -> None:
    """On SQLite and PostgreSQL: the core's count is the dataset's, at ``[continual] stars``."""
    base = load_settings()
    settings = replace(base, continual=replace(base.continual, stars=threshold))
    store = Store.open(settings)
    try:
        ids = seed(store)
        want = expected(ids, threshold)
        assert accepted_answer_ids(store, PROGRAM, threshold) == want
        got = accepted_answers(store, settings, PROGRAM)
        assert (list(got.attempt_ids), got.threshold) == (want, threshold)
        sft, _, _ = build_examples(store, PROGRAM, "sft", threshold)
        assert sorted(ex.attempt_ids[-1] for ex in sft) == want
    finally:
        store.close()


def _cli(*args: str, columns: int) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "minetune.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": str(columns)},
        timeout=120,
    )
    return " ".join((result.stdout + result.stderr).split())


@pytest.mark.slow  # twelve CLI subprocesses: ~15 s
@pytest.mark.parametrize("threshold", [4, 5])
def test_train_buffer_and_show_state_the_same_count(tmp_path: Path, threshold: int) -> None:
    home = Path(os.environ["MINETUNE_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f"[continual]\nstars = {threshold}\n")
    store = Store.open(load_settings())
    try:
        ids = seed(store)
    finally:
        store.close()
    count = len(expected(ids, threshold))
    assert count == (6 if threshold == 5 else 7)
    phrase = f"{count} accepted answers (rated ≥ {threshold}★ or praised)"
    for columns in (40, 300):
        outputs = {
            "train": _cli("train", "-p", PROGRAM, "--method", "sft", columns=columns),
            "buffer": _cli("train", "buffer", "-p", PROGRAM, columns=columns),
            "show": _cli("program", "show", PROGRAM, columns=columns),
        }
        for command, text in outputs.items():
            assert phrase in text, (command, columns, text)
            stated = set(re.findall(r"(?<!at least )\b(\d+) accepted answers? \(rated", text))
            assert stated == {str(count)}, (command, columns, text)
