"""One rating, every door: chat's ``/rate``, ``minetune rate``, the web route, ``/v1/feedback`` and
the library ``Session`` store the same rows and learn the same things (a rule from the critique,
a demo from the accepted answer, the continual buffer noted)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from fakes import FakeOpenAI
from minetune import Session
from minetune.cli import app as cli
from minetune.config import Settings, load_settings
from minetune.learn.reoptimize import Learner
from minetune.server.app import create_app
from minetune.store import Store, browse
from serverutil import serve_app
from webchat import fake_spec, word_embedder

QUESTION = "What is my cat called?"
ANSWER = "Your cat is called Winston, a grey tabby."
CRITIQUE = "use bullet points"
RULE = "Use bullet points."


@pytest.fixture(autouse=True)
def words() -> Iterator[str]:
    with word_embedder() as name:
        yield name


@pytest.fixture
def noted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Programs noted for a continual update (the buffer check itself needs a local base model)."""
    calls: list[str] = []
    monkeypatch.setattr(
        "minetune.app.jobs.note_accepted", lambda store, settings, program, *a, **k: calls.append(program)
    )
    return calls


def _env(monkeypatch: pytest.MonkeyPatch, fake: FakeOpenAI) -> Settings:
    for name, value in {
        "MINETUNE_MODEL": fake_spec(fake),
        "MINETUNE_EMBEDDER": "test-words",
        "MINETUNE_REOPTIMIZE": "1",
        "MINETUNE_CONTINUAL": "1",
    }.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def _answer(settings: Settings) -> int:
    """One stored answer to rate, made by the library (what chat does for its own answer)."""
    with Session(Store.open(settings), settings) as session:
        return session.send(QUESTION).attempt_id


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def via_chat(settings: Settings, fake: FakeOpenAI) -> None:
    script = f"{QUESTION}\n/rate 2 {CRITIQUE}\n/rate 5\n"
    result = CliRunner().invoke(cli, ["chat"], input=script)
    assert result.exit_code == 0, result.output
    assert f"learned: {RULE}" in result.output


def via_cli_rate(settings: Settings, fake: FakeOpenAI) -> None:
    attempt = _answer(settings)
    for args in (["rate", "2", CRITIQUE, "--attempt", str(attempt)], ["rate", "5"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert f"Rated attempt {attempt}" in result.output


def via_library(settings: Settings, fake: FakeOpenAI) -> None:
    with Session(Store.open(settings), settings) as session:
        session.send(QUESTION)
        session.rate(2, CRITIQUE)
        session.rate(5)


def _over_http(path: Callable[[int], str], body: Callable[[int, int, str | None], dict[str, Any]]) -> Any:
    def rate(settings: Settings, fake: FakeOpenAI) -> None:
        attempt = _answer(settings)
        store = Store.open(settings)
        try:
            with serve_app(create_app(settings)) as url:
                for stars, critique in ((2, CRITIQUE), (5, None)):
                    response = httpx.post(url + path(attempt), json=body(attempt, stars, critique))
                    assert response.status_code == 200, response.text
                    if critique:  # learning runs in the background: wait for the rule's version
                        _wait_for(lambda: store.active_version().number == 2, "the rule")
        finally:
            store.close()

    return rate


via_web = _over_http(
    lambda attempt: f"/api/attempts/{attempt}/rate",
    lambda attempt, stars, critique: {"stars": stars, "critique": critique},
)
via_proxy = _over_http(
    lambda attempt: "/v1/feedback",
    lambda attempt, stars, critique: {"response_id": f"mt-{attempt}", "stars": stars}
    | ({"critique": critique} if critique else {}),
)


def _snapshot(settings: Settings) -> dict[str, Any]:
    """What was stored and learned, without ids or times."""
    store = Store.open(settings)
    try:
        [conversation] = browse.conversations(store, "default")
        [turn_id] = store.conversation_turn_ids(conversation.id)
        turn = store.turn(turn_id)
        version = store.active_version()
        demos, _ = Learner(store, settings, "default").demos_for("What is my cat called again?")
        return {
            "feedback": [[(f.kind, f.stars, f.critique) for f in a.feedback] for a in turn.attempts],
            "attempts_to_5": turn.attempts_to_5,
            "lessons": [(lesson.text, lesson.origin, lesson.status) for lesson in store.lessons()],
            "version": (version.number, [item["text"] for item in version.lessons]),
            "demos": [(d.user, d.response, d.stars) for d in demos],
        }
    finally:
        store.close()


@pytest.mark.parametrize(
    "interface",
    [via_chat, via_cli_rate, via_web, via_proxy, via_library],
    ids=["chat", "minetune-rate", "web", "v1-feedback", "library"],
)
def test_the_same_rating_is_stored_and_learned_the_same_way_through_every_interface(
    interface: Callable[[Settings, FakeOpenAI], None],
    fake_llm: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    noted: list[str],
) -> None:
    settings = _env(monkeypatch, fake_llm)
    fake_llm.queue(ANSWER)
    fake_llm.reflection_replies.append(f'{{"rule": "{RULE}", "supersedes": []}}')

    interface(settings, fake_llm)

    assert _snapshot(settings) == {
        "feedback": [[("explicit", 2, CRITIQUE), ("explicit", 5, None)]],
        "attempts_to_5": 1,
        "lessons": [(RULE, "reflection", "active")],
        "version": (2, [RULE]),
        "demos": [(QUESTION, ANSWER, 5)],
    }
    assert noted == ["default"]  # the 5-star rating accepted the answer; the 2-star one did not
    assert len(fake_llm.reflection_requests) == 1
    assert CRITIQUE in fake_llm.reflection_requests[0]["messages"][-1]["content"]
