"""Training datasets from the store (SFT, DPO, KTO), their split and eligibility, and every export format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fake_finetune import parse_jsonl
from fakes import FakeOpenAI
from minetune.cli import app
from minetune.config import load_settings
from minetune.loop import Session
from minetune.program import PriorAttempt, render_messages, render_system_prompt
from minetune.store import Store
from minetune.store.schema import Attempt, Conversation, Feedback, Turn
from minetune.train.datasets import (
    FORMATS,
    DatasetError,
    build_dataset,
    eligibility_report,
    export_dataset,
    split,
    split_paths,
    to_jsonl,
)

Answer = tuple[str, int | None, str | None, str | None]  # response, stars, critique, praise text


@pytest.fixture
def store() -> Any:
    """A store in the test's MINETUNE_HOME (tests that also want PostgreSQL ask for database_url first)."""
    s = Store.open(load_settings())
    yield s
    s.close()


def add_turn(
    store: Store,
    conversation_id: int,
    message: str,
    answers: list[Answer],
    program: str = "default",
    history: list[tuple[str, str]] | None = None,
) -> list[int]:
    """Store a turn the way the loop does: each retry's messages fold in the earlier attempts."""
    version = store.active_version(program)
    turn = store.add_turn(conversation_id, message)
    priors: list[PriorAttempt] = []
    ids = []
    for response, stars, critique, praise in answers:
        attempt = store.add_attempt(
            turn.id,
            version_id=version.id,
            model_spec="openai:fake",
            messages=render_messages(version, message, history or [], priors),
            response=response,
            critique_used=priors[-1].critique if priors else None,
            latency_ms=1.0,
        )
        if stars is not None or critique:
            store.add_feedback(attempt.id, "explicit", stars=stars, critique=critique)
        if praise:
            store.add_feedback(attempt.id, "praise", stars=None if stars else 5, text=praise)
        priors.append(PriorAttempt(response, stars, critique))
        ids.append(attempt.id)
    return ids


def bulk_turns(
    store: Store, program: str, turns: list[tuple[str, list[tuple[str, int | None, str | None]]]]
) -> None:
    """One single-turn conversation per (message, [(response, stars, critique), ...]): the rows
    :func:`add_turn` would store, written in one transaction to keep fixtures fast."""
    version = store.active_version(program)
    with store.db.transaction() as s:
        program_id = store.program_row(s, program).id
        for message, answers in turns:
            turn = Turn(index=0, user_message=message)
            s.add(Conversation(program_id=program_id, title=message, turns=[turn]))
            s.flush()
            priors: list[PriorAttempt] = []
            for number, (response, stars, critique) in enumerate(answers, 1):
                attempt = Attempt(
                    turn_id=turn.id,
                    number=number,
                    version_id=version.id,
                    model_spec="openai:fake",
                    messages=render_messages(version, message, [], priors),
                    response=response,
                    critique_used=priors[-1].critique if priors else None,
                    latency_ms=1.0,
                )
                attempt.feedback = [Feedback(kind="explicit", stars=stars, critique=critique)]
                s.add(attempt)
                priors.append(PriorAttempt(response, stars, critique))
            s.flush()


def chain_turns(store: Store, program: str, n: int, prefix: str = "question") -> None:
    """``n`` single-turn conversations, each a 2★ answer retried into a 5★ one."""
    bulk_turns(
        store,
        program,
        [
            (f"{prefix} {i}?", [(f"a rambling answer {i}", 2, "too long"), (f"answer {i}", 5, None)])
            for i in range(n)
        ],
    )


# -- the retry chain, end to end through the loop ------------------------------------------------


def test_three_attempt_chain_ending_in_five_stars_gives_exactly_two_pairs(
    fake_llm: FakeOpenAI, database_url: str
) -> None:
    fake_llm.queue(
        "A long rambling answer about your cat and its habits.", "Winston, a grey tabby.", "Winston."
    )
    settings = load_settings(reoptimize=False)
    with Session(Store.open(settings), settings, model=f"openai-compatible:fake@{fake_llm.base_url}") as chat:
        first = chat.send("What's my cat's name?")
        chat.rate(2, "too long")
        second = chat.retry()
        chat.rate(3, "shorter still")
        third = chat.retry()
        chat.rate(5)
        store = chat.store

        # The retry saw the transcript; the training prompt is the original one.
        assert "too long" in json.dumps(third.messages) and third.messages != first.messages
        dpo = build_dataset(store, "default", "dpo")
        assert len(dpo.examples) == 2
        assert {(ex.chosen, ex.rejected) for ex in dpo.examples} == {
            (third.text, first.text),
            (third.text, second.text),
        }
        for ex in dpo.examples:
            assert ex.prompt == first.messages
            assert ex.prompt[0]["role"] == "system" and ex.prompt[-1] == {
                "role": "user",
                "content": "What's my cat's name?",
            }
            assert "too long" not in json.dumps(ex.prompt)
            assert ex.source == "retry" and ex.chosen_stars == 5 and ex.chosen_attempt_id == third.attempt_id
            assert ex.attempt_ids == tuple(
                sorted({first.attempt_id, third.attempt_id, ex.rejected_attempt_id})
            )
        assert {ex.rejected_stars for ex in dpo.examples} == {2, 3}

        sft = build_dataset(store, "default", "sft")
        assert [(ex.prompt, ex.response, ex.stars) for ex in sft.examples] == [
            (first.messages, third.text, 5)
        ]
        assert sft.attempt_ids == sorted({first.attempt_id, third.attempt_id})

        kto = build_dataset(store, "default", "kto")
        assert sorted((ex.completion, ex.label) for ex in kto.examples) == sorted(
            [(third.text, True), (first.text, False)]
        )  # the 3★ answer is neutral and left out

        rows = [json.loads(line) for line in to_jsonl(dpo.examples, "openai-dpo").decode().splitlines()]
        assert len(rows) == 2 and all(r["input"] == {"messages": first.messages} for r in rows)


# -- every field of every format -----------------------------------------------------------------


def test_every_format_writes_exactly_the_documented_fields(
    database_url: str, store: Store, tmp_path: Path
) -> None:
    store.create_program("fmt", "Be brief.")
    conv = store.start_conversation("fmt")
    add_turn(store, conv.id, "Hi", [("Hello!", 5, None, None)], "fmt")
    add_turn(
        store,
        conv.id,
        "What's 2+2?",
        [("It is four, because two and two make four.", 2, "just the number", None), ("4", 5, None, None)],
        "fmt",
        history=[("Hi", "Hello!")],
    )
    system = render_system_prompt(store.active_version("fmt"))
    assert system == "Be brief."
    sys_m = {"role": "system", "content": "Be brief."}
    hi, hello = {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}
    q = {"role": "user", "content": "What's 2+2?"}
    long = "It is four, because two and two make four."

    def a(text: str) -> dict[str, str]:
        return {"role": "assistant", "content": text}

    expected = {
        "openai-chat": [
            {"messages": [sys_m, hi, a("Hello!")]},
            {"messages": [sys_m, hi, hello | {"weight": 0}, q, a("4")]},
        ],
        "openai-dpo": [
            {
                "input": {"messages": [sys_m, hi, hello, q]},
                "preferred_output": [a("4")],
                "non_preferred_output": [a(long)],
            }
        ],
        "trl-sft": [{"messages": [sys_m, hi, a("Hello!")]}, {"messages": [sys_m, hi, hello, q, a("4")]}],
        "trl-dpo": [{"prompt": [sys_m, hi, hello, q], "chosen": [a("4")], "rejected": [a(long)]}],
        "trl-kto": [
            {"prompt": [sys_m, hi], "completion": [a("Hello!")], "label": True},
            {"prompt": [sys_m, hi, hello, q], "completion": [a(long)], "label": False},
            {"prompt": [sys_m, hi, hello, q], "completion": [a("4")], "label": True},
        ],
        "sharegpt": [
            {
                "conversations": [
                    {"from": "system", "value": "Be brief."},
                    {"from": "human", "value": "Hi"},
                    {"from": "gpt", "value": "Hello!"},
                ]
            },
            {
                "conversations": [
                    {"from": "system", "value": "Be brief."},
                    {"from": "human", "value": "Hi"},
                    {"from": "gpt", "value": "Hello!"},
                    {"from": "human", "value": "What's 2+2?"},
                    {"from": "gpt", "value": "4"},
                ]
            },
        ],
        "alpaca": [
            {"instruction": "Hi", "input": "", "output": "Hello!", "system": "Be brief.", "history": []},
            {
                "instruction": "What's 2+2?",
                "input": "",
                "output": "4",
                "system": "Be brief.",
                "history": [["Hi", "Hello!"]],
            },
        ],
    }
    assert set(expected) == set(FORMATS)
    for fmt, rows in expected.items():
        out = tmp_path / f"{fmt}.jsonl"
        result = export_dataset(store, fmt, out, program="fmt")
        text = out.read_text(encoding="utf-8")
        assert text.endswith("\n") and all(line for line in text.split("\n")[:-1])
        assert [json.loads(line) for line in text.splitlines()] == rows, fmt
        assert result.counts == {"all": len(rows)}
    # The OpenAI files pass the fake provider's validation of the documented layouts.
    assert parse_jsonl((tmp_path / "openai-chat.jsonl").read_bytes())[0] == "chat"
    assert parse_jsonl((tmp_path / "openai-dpo.jsonl").read_bytes())[0] == "preference"


def test_non_ascii_is_written_as_utf8(store: Store, tmp_path: Path) -> None:
    conv = store.start_conversation()
    add_turn(store, conv.id, "Grüß dich — ça va?", [("Très bien 😊", 5, None, None)])
    out = tmp_path / "x.jsonl"
    export_dataset(store, "trl-sft", out)
    assert "Très bien 😊" in out.read_text(encoding="utf-8")


# -- selection rules -----------------------------------------------------------------------------


def test_praise_and_explicit_ratings(store: Store) -> None:
    conv = store.start_conversation()
    praised = add_turn(store, conv.id, "joke please", [("A pun.", None, None, "haha good one")])
    overruled = add_turn(store, conv.id, "another", [("Meh.", 2, None, "perfect")])
    sft = build_dataset(store, "default", "sft")
    assert [(ex.response, ex.praised, ex.stars) for ex in sft.examples] == [("A pun.", True, 5)]
    assert sft.attempt_ids == praised
    kto = build_dataset(store, "default", "kto")
    assert {(ex.completion, ex.label) for ex in kto.examples} == {("A pun.", True), ("Meh.", False)}
    assert [ex.attempt_ids for ex in kto.examples if not ex.label] == [tuple(overruled)]


def test_threshold_and_three_stars(store: Store) -> None:
    conv = store.start_conversation()
    add_turn(store, conv.id, "q1", [("four stars", 4, None, None)])
    add_turn(store, conv.id, "q2", [("three stars", 3, None, None)])
    assert [ex.response for ex in build_dataset(store, "default", "sft").examples] == ["four stars"]
    assert build_dataset(store, "default", "sft", threshold=5).examples == []
    assert [ex.completion for ex in build_dataset(store, "default", "kto").examples] == ["four stars"]
    with pytest.raises(DatasetError, match="1-5 stars"):
        build_dataset(store, "default", "sft", threshold=6)
    with pytest.raises(DatasetError, match="Unknown training method"):
        build_dataset(store, "default", "ppo")


def test_siblings_and_unrated_retries_pair(database_url: str, store: Store) -> None:
    conv = store.start_conversation()
    # A good answer retried anyway and rated low: the earlier, better one is preferred.
    good, worse = add_turn(store, conv.id, "q1", [("great", 5, None, None), ("worse", 2, None, None)])
    # Critique without stars, then an accepted retry: the unrated attempt is the rejected one.
    unrated, fixed = add_turn(
        store, conv.id, "q2", [("nope", None, "wrong tone", None), ("yes", 4, None, None)]
    )
    # A turn that never got an accepted answer still yields a sibling pair (3★ over 1★).
    low, mid = add_turn(store, conv.id, "q3", [("bad", 1, None, None), ("okay", 3, None, None)])
    # Equal stars do not pair; identical texts never pair.
    add_turn(
        store, conv.id, "q4", [("same", 2, None, None), ("same", 5, None, None), ("other", 5, None, None)]
    )
    pairs = {
        (ex.chosen_attempt_id, ex.rejected_attempt_id, ex.source, ex.rejected_stars)
        for ex in build_dataset(store, "default", "dpo").examples
    }
    q4 = {p for p in pairs if p[0] not in (good, fixed, mid)}
    assert pairs - q4 == {
        (good, worse, "sibling", 2),
        (fixed, unrated, "retry", None),
        (mid, low, "sibling", 1),
    }
    assert len(q4) == 1  # "other" (5★) over "same" (2★); "same" over "same" is dropped


def test_duplicates_are_dropped_with_lineage_kept(store: Store) -> None:
    for _ in range(2):
        add_turn(store, store.start_conversation().id, "Hi", [("Hello!", 5, None, None)])
    ds = build_dataset(store, "default", "sft")
    assert len(ds.examples) == 1 and ds.duplicates == 1
    assert len(ds.examples[0].attempt_ids) == 1


def test_kto_conflicting_labels_are_dropped(store: Store) -> None:
    add_turn(store, store.start_conversation().id, "Hi", [("Hello!", 5, None, None)])
    add_turn(store, store.start_conversation().id, "Hi", [("Hello!", 1, None, None)])
    ds = build_dataset(store, "default", "kto")
    assert ds.examples == [] and ds.conflicts == 1


# -- split and eligibility -------------------------------------------------------------------------


def test_split_is_by_turn_deterministic_and_stable(store: Store) -> None:
    bulk_turns(
        store,
        "default",
        [
            (f"q{i}", [(f"bad {i}", 1, None), (f"meh {i}", 2, None), (f"good {i}", 5, None)])
            for i in range(30)
        ],
    )
    ds = build_dataset(store, "default", "dpo")
    assert len(ds.examples) == 60  # exactly 2 pairs per 3-attempt chain
    assert (len(ds.train), len(ds.valid)) == (54, 6)
    valid_turns = {ex.turn_id for ex in ds.valid}
    assert len(valid_turns) == 3 and not valid_turns & {ex.turn_id for ex in ds.train}
    again = build_dataset(store, "default", "dpo")
    assert [ex.attempt_ids for ex in again.valid] == [ex.attempt_ids for ex in ds.valid]
    other_seed = build_dataset(store, "default", "dpo", seed=7)
    assert {ex.turn_id for ex in other_seed.valid} != valid_turns
    add_turn(store, store.start_conversation().id, "q-new", [("x", 1, None, None), ("y", 5, None, None)])
    grown = build_dataset(store, "default", "dpo")
    assert len(valid_turns & {ex.turn_id for ex in grown.valid}) >= 2
    assert split([], 1) == ([], [])


def test_eligibility_says_what_is_missing(store: Store) -> None:
    report = eligibility_report(store, "default")
    assert not any(e.eligible for e in report.values())
    assert (
        "Needs at least 10 accepted answers" in report["sft"].summary() and "has 0" in report["sft"].summary()
    )
    assert "retry" in report["dpo"].missing[0]
    chain_turns(store, "default", 12)
    report = eligibility_report(store, "default")
    assert report["sft"].eligible and report["sft"].level == "minimum" and report["sft"].count == 12
    assert "50+ are recommended" in report["sft"].summary()
    assert report["dpo"].details == {"retry": 12, "sibling": 0, "edit": 0}
    assert report["kto"].eligible and report["kto"].details == {"desirable": 12, "undesirable": 12}
    # KTO needs both kinds of answer.
    store.create_program("happy")
    bulk_turns(store, "happy", [(f"h{i}", [(f"yes {i}", 5, None)]) for i in range(11)])
    kto = eligibility_report(store, "happy")["kto"]
    assert not kto.eligible and "no undesirable" in kto.summary()


# -- exports through the CLI ---------------------------------------------------------------------


def test_export_cli_split_and_errors(store: Store, tmp_path: Path) -> None:
    chain_turns(store, "default", 20)
    runner = CliRunner()
    out = tmp_path / "data.jsonl"
    result = runner.invoke(app, ["export", "--format", "trl-dpo", "--out", str(out), "--split"])
    assert result.exit_code == 0, result.output
    train_path, valid_path = split_paths(out)
    assert (train_path.name, valid_path.name) == ("data.train.jsonl", "data.valid.jsonl")
    train = train_path.read_text().splitlines()
    valid = valid_path.read_text().splitlines()
    assert (len(train), len(valid)) == (18, 2) and not out.exists()
    assert set(json.loads(valid[0])) == {"prompt", "chosen", "rejected"}
    assert "18 to" in result.output and "2 to" in result.output

    result = runner.invoke(
        app, ["export", "-f", "openai-chat", "-o", str(tmp_path / "all.jsonl"), "-p", "default"]
    )
    assert result.exit_code == 0 and len((tmp_path / "all.jsonl").read_text().splitlines()) == 20

    result = runner.invoke(app, ["export", "-f", "pdf", "-o", str(tmp_path / "x")])
    assert result.exit_code != 0 and "Unknown export format" in str(result.exception)
    result = runner.invoke(app, ["export", "-f", "capture-md", "-o", str(tmp_path / "c.md"), "--split"])
    assert result.exit_code != 0 and "--split" in str(result.exception)
    result = runner.invoke(app, ["export", "-f", "trl-kto", "-o", str(tmp_path / "k.jsonl"), "-p", "nobody"])
    assert result.exit_code != 0 and "No program named" in str(result.exception)


def test_export_with_too_little_data_notes_it(store: Store, tmp_path: Path) -> None:
    chain_turns(store, "default", 2)
    result = CliRunner().invoke(app, ["export", "-f", "openai-dpo", "-o", str(tmp_path / "d.jsonl")])
    assert result.exit_code == 0
    assert "Needs at least 10 preference pairs; has 2" in result.output.replace("\n", " ")
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 2
