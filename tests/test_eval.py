"""``minetune eval``: held-out rated prompts replayed through two versions against the loopback fake
(which answers each version differently, so the winner is known), scored by the personal judge and
against accepted answers; Wilson intervals against known values; the run on /metrics over real
HTTP; forget removes the eval rows that hold a forgotten turn's text."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from fakes import FakeOpenAI
from minetune.app import evaluate as app_eval
from minetune.app.forget import forget
from minetune.cli import app as cli
from minetune.cli.evaluate import summary_table
from minetune.config import Settings, load_settings
from minetune.learn import evaluate as ev
from minetune.learn.abtest import wilson_interval
from minetune.program import render_messages
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store import evals as evals_db
from test_adapters import FakeVLLM
from test_forget import _db_files, _files_with, _sql_hits, fake_adapter_dir
from webchat import fake_spec, word_embedder
from webusers import served

PROGRAM = "p"
GOOD_MARK = "VERSION-GOOD"  # in v2's instructions: the fake answers v2 with the accepted answers
QUESTIONS = {
    f"What is the capital of country number {i}?": f"The capital of country {i} is City{i}, on the river."
    for i in range(12)
}
MARKUP = {"Is [bold]this[/bold] markup?": "No, it is text."}  # user text is never Rich markup
BAD = "I do not know, sorry."
Z = 1.959963984540054


@pytest.fixture(autouse=True)
def words() -> Iterator[str]:
    with word_embedder() as name:
        yield name


@pytest.fixture
def settings(database_url: str, fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in {
        "MINETUNE_MODEL": fake_spec(fake_llm),
        "MINETUNE_EMBEDDER": "test-words",
        "MINETUNE_REOPTIMIZE": "false",
    }.items():
        monkeypatch.setenv(name, value)
    fake_llm.responder = answer_by_version
    return load_settings()


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store.open(settings)
    yield s
    s.close()


def answer_by_version(body: dict[str, Any]) -> str:
    """v2 (its system prompt carries GOOD_MARK) gives the accepted answer, v1 a useless one."""
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    question = body["messages"][-1]["content"]
    if GOOD_MARK in system:
        return (QUESTIONS | MARKUP).get(question, BAD)
    return BAD


def seed(store: Store, questions: dict[str, str], spec: str | None = None) -> list[int]:
    """Each question answered twice by v1: the useless answer rated 1, the good one rated 5; then
    v2, whose instructions carry GOOD_MARK."""
    store.create_program(PROGRAM, "You answer questions.", spec)
    version = store.active_version(PROGRAM)
    turns = []
    for question, good in questions.items():
        conv = store.start_conversation(PROGRAM, title=question)
        turn = store.add_turn(conv.id, question)
        for response, stars in ((BAD, 1), (good, 5)):
            attempt = store.add_attempt(
                turn.id,
                version_id=version.id,
                model_spec="openai:fake",
                messages=render_messages(version, question, []),
                response=response,
                latency_ms=1.0,
            )
            store.add_feedback(attempt.id, "explicit", stars=stars)
        turns.append(turn.id)
    store.add_version(PROGRAM, instructions=f"You answer questions. {GOOD_MARK}")
    return turns


def run_cli(*args: str, columns: str = "80") -> Any:
    result = CliRunner().invoke(cli, ["eval", "--program", PROGRAM, *args], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    return result


def test_wilson_interval_matches_known_values() -> None:
    # Closed forms: 0 of n -> (0, z²/(n+z²)); n of n -> (n/(n+z²), 1).
    assert wilson_interval(0, 10) == pytest.approx((0.0, Z * Z / (10 + Z * Z)))
    assert wilson_interval(12, 12) == pytest.approx((12 / (12 + Z * Z), 1.0))
    # Published values (e.g. Newcombe 1998, table I): 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605.
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    low, high = wilson_interval(15, 148)
    assert (round(low, 4), round(high, 4)) == (0.0624, 0.1605)
    # A tally counts ties as half a win: 5 wins, 3 losses, 2 ties -> 6 of 10.
    tally = ev.Tally("judge", 5, 3, 2)
    assert tally.win_rate == 0.6 and tally.interval == pytest.approx(wilson_interval(6, 10))


def test_scoring_exact_and_fuzzy_against_the_reference() -> None:
    item = ev.EvalItem(1, "q", reference="The capital is  Paris.")
    result = ev.score_item(item, "the capital is paris.", "The capital is Lyon.")
    assert (result.exact_a, result.exact_b, result.reference_winner) == (True, False, "a")
    assert result.fuzzy_a == 1.0 and 0.5 < (result.fuzzy_b or 0) < 1.0
    close = ev.score_item(item, "The capital is Paris!", "Nothing at all like it")
    assert close.reference_winner == "a" and close.judge_winner is None
    judged = ev.score_item(ev.EvalItem(2, "q"), "x", "y", judge=lambda _p, answers: [2.0, 4.5])
    assert judged.judge_winner == "b" and judged.reference_winner is None


def test_eval_cli_finds_the_better_version_by_judge(store: Store, fake_llm: FakeOpenAI) -> None:
    seed(store, QUESTIONS)
    result = run_cli("--a", "v1", "--b", "v2", "--json")
    data = json.loads(result.stdout)
    n = len(QUESTIONS)
    assert data["basis"] == "judge" and data["n"] == n  # 24 ratings of two values: the judge is ready
    assert (data["wins"], data["losses"], data["ties"]) == (n, 0, 0)
    assert data["win_rate"] == 1.0
    assert data["low"] == pytest.approx(n / (n + Z * Z)) and data["high"] == 1.0
    assert data["verdict"] == "v2 is better"
    means = data["summary"]["means"]
    assert means["exact_b"] == 1.0 and means["exact_a"] == 0.0
    assert means["judge_b"] > 4 > 2 > means["judge_a"]
    assert data["summary"]["tallies"]["reference"]["wins"] == n
    assert {i["turn_id"] for i in data["items"]} == {i["turn_id"] for i in data["items"] if i["exact_b"]}
    # Every held-out prompt was answered by both versions, with their own system prompts.
    systems = [r["messages"][0]["content"] for r in fake_llm.requests]
    assert sum(GOOD_MARK in s for s in systems) == n and len(systems) == 2 * n
    # The job ran through the one runner and the run is stored with it.
    run = app_eval.latest_runs(store, PROGRAM)[0]
    assert run.id == data["id"] and run.wins == n
    stored, items = evals_db.get_run(store, run.id)
    assert stored.job_id is not None and len(items) == n

    for columns in ("40", "300"):  # the other way round: B (v1) loses every prompt
        text = " ".join(run_cli("--a", "2", "--b", "v1", "--limit", "4", columns=columns).output.split())
        assert "B wins 0%" in text and "0 won, 4 lost, 0 tied" in text and "v2 is better" in text


def test_eval_table_fits_80_columns(store: Store) -> None:
    seed(store, dict(list(QUESTIONS.items())[:3]))
    outcome = app_eval.run(store, load_settings(), PROGRAM, app_eval.arms(store, PROGRAM, "v1", "v2"))
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(summary_table(outcome.run))
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert max(len(line) for line in lines) <= 80
    assert "…" not in "".join(lines)
    column_b = "".join(cells[3].strip() for line in lines if len(cells := line.split("│")) == 5)
    assert outcome.run.model_b in column_b  # wrapped, never cut


def test_eval_without_a_ready_judge_uses_the_accepted_answers_and_holds_out_demos(
    store: Store,
) -> None:
    questions = dict(list(QUESTIONS.items())[:3])  # 8 ratings: too few for the judge
    turns = seed(store, questions | MARKUP)
    pinned_turn = store.turn(turns[0])
    pinned = pinned_turn.attempts[-1]
    active = store.active_version(PROGRAM)
    store.add_version(  # v3 pins turn 0's accepted answer (as DSPy's LabeledFewShot does)
        PROGRAM,
        instructions=active.instructions,
        demo_policy={
            "pinned": [
                {"user": pinned_turn.user_message, "response": pinned.response, "attempt_id": pinned.id}
            ]
        },
    )
    data = json.loads(run_cli("--a", "v1", "--b", "v3", "--json").stdout)
    assert data["basis"] == "reference" and "judge not used" in data["summary"]["judge_note"]
    assert data["summary"]["excluded"] == {"pinned or trained demo": 1}
    assert data["n"] == 3 and data["wins"] == 3 and turns[0] not in {i["turn_id"] for i in data["items"]}
    text = " ".join(run_cli("--a", "v1", "--b", "v3", "--items", columns="40").output.split())
    assert "B wins 100%" in text and "3 won, 0 lost, 0 tied" in text
    assert "1 left out" in text and "[bold]this[/bold]" in text

    # A rule learned from turn 1's critique holds that turn out too (v4 keeps v3's pinned demo).
    critique = store.add_feedback(store.turn(turns[1]).attempts[0].id, "explicit", critique="Name the city")
    store.change_lessons(
        PROGRAM, add=[{"text": "Name the city.", "origin": "reflection", "feedback_id": critique.id}]
    )
    data = json.loads(run_cli("--a", "v1", "--b", "v4", "--json").stdout)
    assert data["summary"]["excluded"] == {"pinned or trained demo": 1, "lesson learned from it": 1}
    assert {i["turn_id"] for i in data["items"]} == set(turns[2:])


def test_eval_adapter_compares_prompt_only_with_the_adapter_and_holds_out_its_training_data(
    store: Store, settings: Settings
) -> None:
    with FakeVLLM() as vllm:  # answers "answer via base" or "answer via adapter DIR"
        spec = f"vllm:base-model@{vllm.base_url}"
        questions = {q: "answer via base" for q in list(QUESTIONS)[:4]}  # 8 ratings: no judge yet
        turns = seed(store, questions, spec)
        trained_on = store.turn(turns[0]).attempts[-1].id
        adapter, _ = adapters_db.publish_adapter(
            store,
            PROGRAM,
            place=lambda i: str(fake_adapter_dir(settings.home / "adapters" / PROGRAM / str(i))),
            serve_spec=lambda path: f"{spec}?adapter={path}",
            method="sft",
            base_model="base-model",
            example_attempt_ids=[trained_on],
        )
        data = json.loads(run_cli("--adapter", "--json").stdout)
    assert data["a"]["label"].endswith("prompt-only") and f"adapter {adapter.id}" in data["b"]["label"]
    assert data["summary"]["excluded"] == {"adapter trained on it": 1}
    assert turns[0] not in {i["turn_id"] for i in data["items"]}
    assert data["basis"] == "reference" and (data["wins"], data["losses"], data["n"]) == (0, 3, 3)
    assert {i["answer_b"] for i in data["items"]} == {f"answer via adapter {adapter.path}"}
    assert [path for path, _ in vllm.calls].count("/v1/load_lora_adapter") == 1


def test_eval_refuses_when_nothing_is_held_out(store: Store) -> None:
    store.create_program(PROGRAM, "You answer questions.")
    store.add_version(PROGRAM, instructions="other")
    result = CliRunner().invoke(cli, ["eval", "--program", PROGRAM, "--a", "v1", "--b", "v2"])
    assert result.exit_code != 0 and "no held-out rated answers" in str(result.exception)


def test_metrics_page_shows_the_latest_runs(settings: Settings, store: Store) -> None:
    seed(store, QUESTIONS)
    first = app_eval.run(store, settings, PROGRAM, app_eval.arms(store, PROGRAM, "v1", "v2"), limit=5)
    second = app_eval.run(store, settings, PROGRAM, app_eval.arms(store, PROGRAM, "v2", "v1"), limit=4)
    with served(settings) as web:
        page = web.client.get("/metrics", params={"program": PROGRAM}, headers={"Accept": "text/html"})
        assert page.status_code == 200
        rows = re.findall(
            r'<tr class="eval-run" data-run="(\d+)" data-n="(\d+)" data-win-rate="([\d.]*)" '
            r'data-low="([\d.]+)" data-high="([\d.]+)"',
            page.text,
        )
        low1, _ = first.run.interval
        _, high2 = second.run.interval
        assert rows == [
            (str(second.run.id), "4", "0.0000", "0.0000", f"{high2:.4f}"),
            (str(first.run.id), "5", "1.0000", f"{low1:.4f}", "1.0000"),
        ]
        assert "v2 is better" in page.text and "B wins" in page.text
        api = web.client.get("/api/metrics", params={"program": PROGRAM}).json()
        assert [(r["id"], r["win_rate"], r["n"]) for r in api["evals"]] == [
            (second.run.id, 0.0, 4),
            (first.run.id, 1.0, 5),
        ]
        empty = web.client.get("/metrics", headers={"Accept": "text/html"}).text
        assert "No evaluations yet" in empty


CANARY = "zq-eval-canary-51c2e"


def test_forget_removes_eval_rows_holding_the_text(
    settings: Settings, store: Store, database_url: str, fake_llm: FakeOpenAI
) -> None:
    secret_question = f"My door code is {CANARY}; what is the capital of country number 99?"
    echo_question = "Repeat what I told you before, please."
    questions = dict(QUESTIONS) | {
        secret_question: f"Noted {CANARY}. The capital of country 99 is City99.",
        echo_question: "You told me nothing yet.",
    }
    turns = seed(store, questions)
    secret_turn, echo_turn = turns[-2], turns[-1]

    def responder(body: dict[str, Any]) -> str:
        if body["messages"][-1]["content"] == echo_question:  # an answer to another turn quoting it
            return f"You said: {secret_question}"
        return answer_by_version(body)

    fake_llm.responder = responder
    outcome = app_eval.run(store, settings, PROGRAM, app_eval.arms(store, PROGRAM, "v1", "v2"))
    assert outcome.run.n == len(questions)
    hits = set(_sql_hits(database_url, CANARY))
    assert {"eval_items.prompt", "eval_items.reference", "eval_items.answer_a"} <= hits, hits

    report = forget(store, settings, turns=[secret_turn])

    assert report.eval_items == 1 and report.eval_items_redacted
    assert _sql_hits(database_url, CANARY) == []
    assert _files_with(settings.home, _db_files(database_url), CANARY.encode()) == []
    run, items = evals_db.get_run(store, outcome.run.id)
    assert len(items) == len(questions) - 1 and secret_turn not in {i.turn_id for i in items}
    echo = next(i for i in items if i.turn_id == echo_turn)
    assert CANARY not in echo.answer_a and "[forgotten]" in echo.answer_a
    # The run is recounted from the items left (the echo item is now a tie or loss for B).
    assert run.summary["forgotten"] == 1 and run.summary["items"] == len(questions) - 1
    assert run.wins + run.losses + run.ties == len(questions) - 1

    forget(store, settings, everything=True)
    assert app_eval.latest_runs(store, PROGRAM) == []  # a run with no item left goes too
