"""End to end: the loop over real loopback HTTP and a tiny local model, checking what is stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes import FakeOpenAI
from minetune import Session
from minetune.config import load_settings
from minetune.errors import FeedbackError, MinetuneError, ModelError
from minetune.store import Store


def _session(fake: FakeOpenAI, database_url: str | None = None, **overrides: object) -> Session:
    settings = load_settings(database_url=database_url, **overrides)
    return Session(Store.open(settings), settings, model=f"openai-compatible:fake@{fake.base_url}")


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_rate_critique_retry_until_five(fake_llm: FakeOpenAI, database_url: str, streaming: bool) -> None:
    fake_llm.queue(
        "Winston is your cat. He is a grey tabby who likes treats and naps all day long.", "Winston."
    )
    deltas: list[str] = []
    on_delta = deltas.append if streaming else None
    with _session(fake_llm, database_url) as chat:
        first = chat.send("What's my cat's name?", on_delta=on_delta)
        chat.rate(2, "too long, keep it to one word")
        second = chat.retry(on_delta=on_delta)
        chat.rate(5)

        assert [r.get("stream", False) for r in fake_llm.requests] == [streaming, streaming]
        if streaming:
            assert "".join(deltas) == first.text + second.text
        # The second request carries the first answer, its stars and the critique.
        sent = fake_llm.requests[1]["messages"]
        assert sent[0]["role"] == "system"
        assert sent[1] == {"role": "user", "content": "What's my cat's name?"}
        assert sent[2]["content"] == first.text
        assert "rated 2/5" in sent[3]["content"] and "too long, keep it to one word" in sent[3]["content"]

        turn = chat.store.turn(second.turn_id)
        assert [a.response for a in turn.attempts] == [first.text, "Winston."]
        assert [a.messages for a in turn.attempts] == [fake_llm.requests[0]["messages"], sent]
        assert turn.attempts[1].critique_used == "too long, keep it to one word"
        assert [[(f.kind, f.stars, f.critique) for f in a.feedback] for a in turn.attempts] == [
            [("explicit", 2, "too long, keep it to one word")],
            [("explicit", 5, None)],
        ]
        assert turn.attempts_to_5 == 2 and turn.score == 0.5
        assert all(a.model_spec.startswith("openai-compatible:fake@") for a in turn.attempts)
        assert all(a.latency_ms > 0 and a.prompt_tokens and a.completion_tokens for a in turn.attempts)
        assert turn.attempts[0].version_id == chat.version.id


def test_history_is_carried_and_retries_are_fresh_samples(fake_llm: FakeOpenAI) -> None:
    with _session(fake_llm) as chat:
        chat.send("My cat is Winston.")
        chat.send("What's my cat's name?")
        messages = fake_llm.last["messages"]
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
        assert messages[1]["content"] == "My cat is Winston." and messages[2]["content"] == "reply 1"
        retry = chat.retry("mention him by name")
        # A new request was made (never a cached answer) and the critique was recorded on attempt 1.
        assert len(fake_llm.requests) == 3 and retry.text == "reply 3"
        assert "mention him by name" in fake_llm.last["messages"][-1]["content"]
        # The retry keeps the earlier turn as history but not the turn being retried twice.
        assert [m["content"] for m in fake_llm.last["messages"][1:4]] == [
            "My cat is Winston.",
            "reply 1",
            "What's my cat's name?",
        ]


def test_retry_limit(fake_llm: FakeOpenAI) -> None:
    with _session(fake_llm, retry_limit=2) as chat:
        chat.send("hello")
        chat.retry()
        with pytest.raises(MinetuneError, match="retry limit"):
            chat.retry()
        assert len(fake_llm.requests) == 2


def test_until_five_stops_at_five(fake_llm: FakeOpenAI) -> None:
    ratings = iter([(1, "wrong"), (3, "closer"), (5, None)])
    with _session(fake_llm) as chat:
        responses = chat.until_five("Name my cat", lambda _r: next(ratings))
        assert [r.number for r in responses] == [1, 2, 3]
        assert chat.store.turn(responses[-1].turn_id).attempts_to_5 == 3
        assert "closer" in fake_llm.last["messages"][-1]["content"]


def test_praise_captures_previous_answer(fake_llm: FakeOpenAI) -> None:
    with _session(fake_llm) as chat:
        first = chat.send("What's my cat's name?")
        chat.send("Good one, Timmy!")
        assert chat.last_praise is not None
        chat.send("not good at all")  # a negation is not praise
        chat.send("thanks for nothing")
        captures = chat.store.captures()
        assert len(captures) == 1
        capture = captures[0]
        assert capture.user_message == "What's my cat's name?"
        assert capture.response == first.text
        assert capture.praise == "Good one, Timmy!"
        assert capture.system_prompt == first.messages[0]["content"]
        assert capture.metadata["attempt_id"] == first.attempt_id
        stats = chat.store.stats()
        assert stats["ratings"]["5"] == 1 and stats["captures"] == 1


def test_praise_does_not_override_an_explicit_rating(fake_llm: FakeOpenAI) -> None:
    with _session(fake_llm) as chat:
        chat.send("Tell me a joke")
        chat.rate(3)
        chat.send("perfect")
        assert chat.store.stats()["ratings"] == {"1": 0, "2": 0, "3": 1, "4": 0, "5": 0}
        assert chat.store.stats()["captures"] == 1


def test_bad_input_changes_nothing(fake_llm: FakeOpenAI) -> None:
    with _session(fake_llm) as chat:
        with pytest.raises(FeedbackError):
            chat.rate(5)  # nothing to rate yet
        chat.send("hello")
        chat.rate(4)
        before = chat.store.row_counts()
        for stars in (0, 6, "x", 2.5):
            with pytest.raises(FeedbackError, match="1 to 5"):
                chat.rate(stars)  # type: ignore[arg-type]
        with pytest.raises(MinetuneError, match="empty"):
            chat.send("   ")
        with pytest.raises(MinetuneError, match="limit"):
            chat.send("x" * 200_001)
        fake_llm.fail_next(500, "upstream exploded")
        with pytest.raises(ModelError):
            chat.send("this call fails")
        assert chat.store.row_counts() == before


def test_unknown_and_unreachable_models(tmp_path: Path) -> None:
    settings = load_settings()
    with Session(Store.open(settings), settings, model="gpt-4:o") as chat, pytest.raises(ModelError):
        chat.send("hi")
    with Session(Store.open(settings), settings, model="openai-compatible:m@http://127.0.0.1:9/v1") as chat:
        with pytest.raises(ModelError, match="127.0.0.1:9"):
            chat.send("hi")
        assert chat.store.row_counts()["turns"] == 0


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_local_hf_model_end_to_end(tiny_model_dir: Path, streaming: bool) -> None:
    settings = load_settings(max_tokens=12)
    deltas: list[str] = []
    with Session(Store.open(settings), settings, model=f"hf:{tiny_model_dir}") as chat:
        first = chat.send("hello there", on_delta=deltas.append if streaming else None)
        chat.rate(1, "say something sensible")
        second = chat.retry()
        chat.rate(5)
        turn = chat.store.turn(second.turn_id)
        assert [a.number for a in turn.attempts] == [1, 2]
        assert turn.attempts[0].messages[-1] == {"role": "user", "content": "hello there"}
        assert "say something sensible" in turn.attempts[1].messages[-1]["content"]
        assert turn.attempts[0].response == first.text
        assert all(a.completion_tokens and a.prompt_tokens for a in turn.attempts)
        assert turn.attempts_to_5 == 2
        assert turn.attempts[0].model_spec == f"hf:{tiny_model_dir}"
        if streaming:
            assert "".join(deltas) == first.text


def test_an_open_session_follows_the_active_versions_model(fake_llm: FakeOpenAI) -> None:
    """A new version with another model (an adapter a continual update activated, or a model chosen
    on the setup page) is used from the next message of a session that was already open."""
    settings = load_settings()
    store = Store.open(settings)
    store.create_program("p", "You help.", f"openai-compatible:fake@{fake_llm.base_url}")
    with FakeOpenAI() as other, Session(store, settings, "p") as chat:
        chat.send("first question")
        assert len(fake_llm.requests) == 1 and not other.requests
        store.add_version("p", note="lesson only")  # same model: the built model is kept
        chat.send("second question")
        assert len(fake_llm.requests) == 2
        store.add_version("p", note="new model", model_spec=f"openai-compatible:fake@{other.base_url}")
        chat.send("third question")
        assert len(fake_llm.requests) == 2 and other.last["messages"][-1]["content"] == "third question"
