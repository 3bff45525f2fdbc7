"""The OpenAI-compatible learning proxy over real loopback HTTP: the official openai client and
plain httpx against ``minetune serve``'s app, a fake upstream that records what it was sent, and
the store checked afterwards."""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterator
from typing import Any, NamedTuple

import httpx
import openai
import pytest
from sqlalchemy import select

from fakes import FakeOpenAI
from minetune.config import Settings, load_settings
from minetune.errors import MinetuneError, ModelError
from minetune.gateway import program_for_model
from minetune.models.base import Completion, CompletionStream, Message
from minetune.server.app import create_app
from minetune.store import Store
from minetune.store.schema import Attempt, Conversation, Turn
from minetune.store.users import issue_token
from serverutil import serve_app
from webchat import WORDS_EMBEDDER, fake_spec, word_embedder
from webusers import rows_unchanged


@pytest.fixture(autouse=True)
def words() -> Iterator[str]:
    """Demo retrieval with the tiny bag-of-words embedder, so it runs without loading MiniLM."""
    with word_embedder() as name:
        yield name


def _settings(fake: FakeOpenAI, **overrides: Any) -> Settings:
    overrides.setdefault("reoptimize", False)
    return load_settings(model=fake_spec(fake), embedder=WORDS_EMBEDDER, **overrides)


class Local(NamedTuple):
    settings: Settings
    store: Store


@pytest.fixture
def local(fake_llm: FakeOpenAI) -> Iterator[Local]:
    """Settings talking to the fake model and a Store on their database (closed afterwards)."""
    settings = _settings(fake_llm)
    store = Store.open(settings)
    yield Local(settings, store)
    store.close()


def _client(url: str, token: str = "x") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0)


def _conversation(store: Store, conversation_id: int) -> tuple[str, list[str]]:
    """(source, user messages of its turns in order) of a stored conversation."""
    with store.db.transaction() as s:
        conv = s.get(Conversation, conversation_id)
        assert conv is not None
        turns = s.scalars(select(Turn).where(Turn.conversation_id == conversation_id).order_by(Turn.index))
        return conv.source, [t.user_message for t in turns]


def _attempt_id(response_id: str) -> int:
    assert response_id.startswith("mt-") and response_id[3:].isdigit(), response_id
    return int(response_id[3:])


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_openai_client_answers_and_the_exact_upstream_prompt_is_stored(
    fake_llm: FakeOpenAI, local: Local, streaming: bool
) -> None:
    fake_llm.queue("Winston is your cat, a grey tabby who naps all day.")
    settings, store = local
    store.add_version(instructions="You are Timmy.")
    messages: list[Any] = [
        {"role": "system", "content": "Answer in English."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "What's my"}, {"type": "text", "text": "cat's name?"}],
        },
    ]
    with serve_app(create_app(settings)) as url:
        client = _client(url)
        if streaming:
            chunks = list(
                client.chat.completions.create(model="minetune/default", messages=messages, stream=True)
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            ids = {c.id for c in chunks}
            assert len(ids) == 1 and chunks[-1].choices[0].finish_reason == "stop"
            rid = ids.pop()
            assert {c.model for c in chunks} == {"minetune/default"}
        else:
            reply = client.chat.completions.create(model="minetune/default", messages=messages)
            text, rid = reply.choices[0].message.content or "", reply.id
            assert reply.object == "chat.completion" and reply.model == "minetune/default"
            assert reply.usage is not None and reply.usage.completion_tokens == 11
            assert reply.choices[0].finish_reason == "stop" and reply.created > 0

    assert text == "Winston is your cat, a grey tabby who naps all day."
    sent = fake_llm.last["messages"]
    # The program's prompt first, the client's system message kept after it; the user's content
    # parts are passed as sent (the turn's text joins them).
    assert sent == [
        {"role": "system", "content": "You are Timmy.\n\nAnswer in English."},
        {"role": "user", "content": messages[1]["content"]},
    ]
    assert fake_llm.last.get("stream", False) is streaming
    attempt = store.attempt(_attempt_id(rid))
    assert attempt.messages == sent and attempt.response == text
    assert attempt.version_id == store.active_version().id
    assert attempt.model_spec.startswith("openai-compatible:fake@") and attempt.latency_ms > 0
    assert attempt.prompt_tokens and attempt.completion_tokens == 11
    turn = store.turn(attempt.turn_id)
    assert turn.user_message == "What's my\ncat's name?"
    assert _conversation(store, turn.conversation_id) == ("proxy", ["What's my\ncat's name?"])


def test_models_list_programs_and_model_names_select_them(fake_llm: FakeOpenAI, local: Local) -> None:
    settings, store = local
    store.create_program("timmy", instructions="You are Little Timmy.")
    with serve_app(create_app(settings)) as url:
        client = _client(url)
        assert [m.id for m in client.models.list()] == ["minetune/default", "minetune/timmy"]
        listing = httpx.get(url + "/v1/models").json()
        assert listing["object"] == "list" and {m["object"] for m in listing["data"]} == {"model"}

        for model, program in [
            ("minetune/timmy", "timmy"),
            ("gpt-4o-mini", "default"),
            ("minetune", "default"),
        ]:
            reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
            assert reply.model == f"minetune/{program}"
            expected = "You are Little Timmy." if program == "timmy" else "You are a helpful assistant."
            assert fake_llm.last["messages"][0] == {"role": "system", "content": expected}

        with rows_unchanged(store), pytest.raises(openai.NotFoundError, match="No program named 'nobody'"):
            client.chat.completions.create(
                model="minetune/nobody", messages=[{"role": "user", "content": "hi"}]
            )
    assert program_for_model("minetune/") == "default" and program_for_model(None) == "default"


def test_plain_http_sse_stream_and_response_id_header(fake_llm: FakeOpenAI) -> None:
    fake_llm.queue("one two three four five six seven")
    settings = _settings(fake_llm)
    body = {
        "model": "minetune/default",
        "messages": [{"role": "user", "content": "count"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with (
        serve_app(create_app(settings)) as url,
        httpx.stream("POST", url + "/v1/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        rid = r.headers["x-minetune-response-id"]
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert {e["id"] for e in events} == {rid} and {e["object"] for e in events} == {"chat.completion.chunk"}
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == "one two three four five six seven"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 7

    fake_llm.queue("plain")
    with serve_app(create_app(settings)) as url:
        r = httpx.post(url + "/v1/chat/completions", json=body | {"stream": False})
    assert r.status_code == 200 and r.headers["x-minetune-response-id"] == r.json()["id"]
    store = Store.open(settings)
    assert store.attempt(_attempt_id(rid)).response == text
    store.close()


def _chat(client: openai.OpenAI, messages: list[Any], model: str = "minetune/default") -> tuple[str, str]:
    reply = client.chat.completions.create(model=model, messages=messages)
    return reply.id, reply.choices[0].message.content or ""


def test_feedback_in_band_praise_and_turns_continue_the_conversation(
    fake_llm: FakeOpenAI, local: Local
) -> None:
    fake_llm.queue("A long answer about Winston the cat.", "Winston.", "Glad it helped!")
    settings, store = local
    with serve_app(create_app(settings)) as url:
        client = _client(url)
        history: list[Any] = [{"role": "user", "content": "What's my cat's name?"}]
        first_id, first = _chat(client, history)

        r = httpx.post(
            url + "/v1/feedback", json={"response_id": first_id, "stars": 2, "critique": " too long "}
        )
        assert r.status_code == 200 and r.json() == {"ok": True, "feedback_id": r.json()["feedback_id"]}
        feedback = store.feedback(r.json()["feedback_id"])
        assert (feedback.attempt_id, feedback.kind, feedback.stars, feedback.critique) == (
            _attempt_id(first_id),
            "explicit",
            2,
            "too long",
        )

        history += [{"role": "assistant", "content": first}, {"role": "user", "content": "Shorter, please."}]
        second_id, second = _chat(client, history)
        history += [{"role": "assistant", "content": second}, {"role": "user", "content": "Perfect, thanks!"}]
    with serve_app(create_app(settings)) as url:  # a restarted server finds the answer in the store
        third_id, _ = _chat(_client(url), history)

    # The client owns the history: it is passed upstream as sent, after the program's prompt.
    assert fake_llm.last["messages"][1:] == history
    first_attempt, second_attempt = (
        store.attempt(_attempt_id(first_id)),
        store.attempt(_attempt_id(second_id)),
    )
    # The praise in the third message marks the second answer 5 stars (the first keeps its rating).
    assert [(f.kind, f.stars, f.text) for f in second_attempt.feedback] == [("praise", 5, "Perfect, thanks!")]
    assert [(f.kind, f.stars) for f in first_attempt.feedback] == [("explicit", 2)]
    assert store.turn(second_attempt.turn_id).attempts_to_5 == 1
    # All three turns are one stored conversation, in order.
    conversation = store.turn(first_attempt.turn_id).conversation_id
    third_turn = store.turn(store.attempt(_attempt_id(third_id)).turn_id)
    assert third_turn.conversation_id == conversation == store.turn(second_attempt.turn_id).conversation_id
    assert _conversation(store, conversation) == (
        "proxy",
        ["What's my cat's name?", "Shorter, please.", "Perfect, thanks!"],
    )
    assert store.stats()["captures"] == 1


def test_praise_of_an_explicitly_rated_answer_keeps_the_rating(fake_llm: FakeOpenAI, local: Local) -> None:
    settings, store = local
    with serve_app(create_app(settings)) as url:
        client = _client(url)
        rid, text = _chat(client, [{"role": "user", "content": "hello"}])
        assert httpx.post(url + "/v1/feedback", json={"response_id": rid, "stars": 3}).status_code == 200
        _chat(
            client,
            [
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": text},
                {"role": "user", "content": "Nice one!"},
            ],
        )
    feedback = store.attempt(_attempt_id(rid)).feedback
    assert [(f.kind, f.stars, f.text) for f in feedback] == [
        ("explicit", 3, None),
        ("praise", None, "Nice one!"),
    ]


def test_quoting_a_deleted_answer_starts_a_new_conversation(fake_llm: FakeOpenAI, local: Local) -> None:
    settings, store = local
    with serve_app(create_app(settings)) as url:
        client = _client(url)
        rid, text = _chat(client, [{"role": "user", "content": "hello"}])
        store.delete_conversation(store.turn(store.attempt(_attempt_id(rid)).turn_id).conversation_id)
        quoted = [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": text},
            {"role": "user", "content": "Perfect!"},
        ]
        new_id, _ = _chat(client, quoted)
    turn = store.turn(store.attempt(_attempt_id(new_id)).turn_id)
    assert _conversation(store, turn.conversation_id) == ("proxy", ["Perfect!"])
    assert store.stats()["feedback"]["praise"] == 0


def _wait_for(condition: Any, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_feedback_teaches_the_next_prompt(fake_llm: FakeOpenAI) -> None:
    fake_llm.queue("Winston.", "Some answer.", "Another answer.")
    fake_llm.reflection_replies.append('{"rule": "Answer in one sentence.", "supersedes": []}')
    settings = _settings(fake_llm, reoptimize=True)
    store = Store.open(settings)
    with serve_app(create_app(settings)) as url:
        client = _client(url)
        rid, _ = _chat(client, [{"role": "user", "content": "What is my cat called?"}])
        assert httpx.post(url + "/v1/feedback", json={"response_id": rid, "stars": 5}).json()["ok"] is True
        # An accepted answer becomes a demo for a similar message.
        second_id, _ = _chat(client, [{"role": "user", "content": "What is my cat called again?"}])
        system = fake_llm.last["messages"][0]["content"]
        assert "User: What is my cat called?\nAssistant: Winston." in system
        assert store.attempt(_attempt_id(second_id)).demo_attempt_ids == [_attempt_id(rid)]
        # A critique is distilled into a lesson in the background; it reaches the next prompt.
        critique = {"response_id": second_id, "stars": 2, "critique": "too wordy"}
        assert httpx.post(url + "/v1/feedback", json=critique).status_code == 200
        _wait_for(lambda: store.active_version().number > 1, "the lesson's version")
        _chat(client, [{"role": "user", "content": "Tell me about dogs."}])
    assert "- Answer in one sentence." in fake_llm.last["messages"][0]["content"]
    assert "too wordy" in fake_llm.reflection_requests[0]["messages"][-1]["content"]
    store.close()


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert isinstance(message, str) and message
    return message


def test_bad_input_is_a_clear_4xx_and_changes_nothing(fake_llm: FakeOpenAI, local: Local) -> None:
    settings, store = local
    token = issue_token(store.db, "alice")
    auth = {"Authorization": f"Bearer {token}"}
    with serve_app(create_app(settings, require_auth=True)) as url:
        rid, _ = _chat(_client(url, token), [{"role": "user", "content": "hi"}])
        with rows_unchanged(store):
            chat, feedback = url + "/v1/chat/completions", url + "/v1/feedback"

            def post(target: str, **kwargs: Any) -> httpx.Response:
                return httpx.post(target, headers=auth | kwargs.pop("headers", {}), timeout=30, **kwargs)

            json_headers = {"Content-Type": "application/json"}
            assert "not valid JSON" in _error(post(chat, content=b'{"model": ', headers=json_headers), 400)
            assert "not valid JSON" in _error(post(feedback, content=b"stars=5", headers=json_headers), 400)
            assert "JSON object" in _error(post(feedback, json=[rid, 5]), 400)
            for stars in (0, 6):
                message = _error(post(feedback, json={"response_id": rid, "stars": stars}), 400)
                assert "from 1 to 5" in message
            assert "stars" in _error(post(feedback, json={"response_id": rid, "stars": "five"}), 422)
            assert "Unknown response id 'mt-999999'" in _error(
                post(feedback, json={"response_id": "mt-999999", "stars": 5}), 404
            )
            assert "Unknown response id 'chatcmpl-1'" in _error(
                post(feedback, json={"response_id": "chatcmpl-1", "stars": 5}), 404
            )
            huge = {"model": "minetune/default", "messages": [{"role": "user", "content": "x" * 10_000_000}]}
            assert "too large" in _error(post(chat, json=huge), 413)
            long = {"messages": [{"role": "user", "content": "x" * 250_000}]}
            assert "250,000 characters; the limit is 200,000" in _error(post(chat, json=long), 413)
            ends_with_answer = {
                "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
            }
            assert "last message must be the user's" in _error(post(chat, json=ends_with_answer), 400)
            video = {"messages": [{"role": "user", "content": [{"type": "video", "video": {"url": "x"}}]}]}
            assert "video content part; expected one of" in _error(post(chat, json=video), 400)
            assert "role" in _error(post(chat, json={"messages": [{"role": "robot", "content": "x"}]}), 422)
            assert "messages" in _error(post(chat, json={"messages": []}), 422)
            assert "Invalid token" in _error(
                httpx.post(
                    chat,
                    json={"messages": [{"role": "user", "content": "hi"}]},
                    headers={"Authorization": "Bearer mt_wrong"},
                ),
                401,
            )
            with pytest.raises(openai.AuthenticationError):
                _client(url, "mt_wrong").chat.completions.create(
                    model="minetune/default", messages=[{"role": "user", "content": "hi"}]
                )
    assert len(fake_llm.requests) == 1  # nothing bad reached upstream


def test_upstream_errors_are_502_with_the_message_and_no_key(
    fake_llm: FakeOpenAI, local: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINETUNE_API_KEY", "sk-very-secret-key")
    settings, store = local
    store.programs()
    body = {"model": "minetune/default", "messages": [{"role": "user", "content": "hi"}]}
    with rows_unchanged(store), serve_app(create_app(settings)) as url:
        for stream in (False, True):
            fake_llm.fail_next(500, "the GPU caught fire")
            message = _error(httpx.post(url + "/v1/chat/completions", json=body | {"stream": stream}), 502)
            assert "the GPU caught fire" in message
        fake_llm.fail_next(401, "Incorrect API key provided: sk-very-secret-key")
        message = _error(httpx.post(url + "/v1/chat/completions", json=body), 502)
        assert "rejected the API key" in message and "sk-very-secret-key" not in message
    assert fake_llm.headers[-1]["authorization"] == "Bearer sk-very-secret-key"


class BreaksMidStream:
    """A model whose stream fails after its first delta."""

    spec = "test:breaks-mid-stream"

    def complete(self, messages: list[Message], **_: Any) -> Completion:
        raise ModelError("not used")

    def stream(self, messages: list[Message], **_: Any) -> CompletionStream:
        def deltas() -> Generator[str, None, Completion]:
            yield "Half an ans"
            raise ModelError("upstream went away mid-stream")

        return CompletionStream(deltas())


def test_a_stream_that_breaks_reports_the_error_and_is_stored_interrupted(tmp_path: Any) -> None:
    settings = load_settings(reoptimize=False, embedder=WORDS_EMBEDDER)
    store = Store.open(settings)
    store.programs()
    with serve_app(create_app(settings, model=BreaksMidStream())) as url:
        stream = _client(url).chat.completions.create(
            model="minetune/default", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        received: list[str] = []
        with pytest.raises(openai.APIError, match="upstream went away mid-stream"):
            for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
        with store.db.transaction() as s:
            (attempt,) = s.scalars(select(Attempt)).all()
        # What arrived is kept, visibly interrupted; it is no answer: rating it is refused.
        assert (attempt.status, attempt.response) == ("interrupted", "Half an ans")
        with rows_unchanged(store):
            r = httpx.post(url + "/v1/feedback", json={"response_id": f"mt-{attempt.id}", "stars": 5})
        assert r.status_code == 400 and "interrupted" in r.json()["error"]["message"]
    assert "".join(received) == "Half an ans"
    store.close()


def test_users_are_isolated(fake_llm: FakeOpenAI, database_url: str) -> None:
    settings = _settings(fake_llm)
    assert settings.resolved_database_url == database_url
    alice_store, bob_store = Store.open(settings, "alice"), Store.open(settings, "bob")
    alice, bob = issue_token(alice_store.db, "alice"), issue_token(alice_store.db, "bob")
    alice_store.create_program("diary", instructions="You keep Alice's secrets.")
    fake_llm.queue("Alice's secret answer.")
    with serve_app(create_app(settings, require_auth=True)) as url:
        rid, text = _chat(_client(url, alice), [{"role": "user", "content": "my secret"}], "minetune/diary")
        bob_client = _client(url, bob)
        assert [m.id for m in bob_client.models.list()] == ["minetune/default"]
        assert {m.id for m in _client(url, alice).models.list()} == {"minetune/default", "minetune/diary"}
        with pytest.raises(openai.NotFoundError, match="No program named 'diary'"):
            _chat(bob_client, [{"role": "user", "content": "hi"}], "minetune/diary")

        with rows_unchanged(alice_store):
            foreign = httpx.post(
                url + "/v1/feedback",
                json={"response_id": rid, "stars": 1},
                headers={"Authorization": f"Bearer {bob}"},
            )
            unknown_id = f"mt-{_attempt_id(rid) + 1000}"
            unknown = httpx.post(
                url + "/v1/feedback",
                json={"response_id": unknown_id, "stars": 1},
                headers={"Authorization": f"Bearer {bob}"},
            )
            assert _error(foreign, 404) == _error(unknown, 404).replace(unknown_id, rid)

        # Bob quoting Alice's answer (and praising it) neither continues nor rates her conversation.
        bob_id, _ = _chat(
            bob_client,
            [
                {"role": "user", "content": "my secret"},
                {"role": "assistant", "content": text},
                {"role": "user", "content": "Perfect!"},
            ],
        )
        bob_turn = bob_store.turn(bob_store.attempt(_attempt_id(bob_id)).turn_id)
        alice_turn = alice_store.turn(alice_store.attempt(_attempt_id(rid)).turn_id)
        assert bob_turn.conversation_id != alice_turn.conversation_id and bob_turn.index == 0
        assert alice_store.attempt(_attempt_id(rid)).feedback == []
        assert alice_store.stats()["turns"] == 1

        anonymous = httpx.get(url + "/v1/models")
        assert "Authentication required" in _error(anonymous, 401)
        assert _error(httpx.post(url + "/v1/feedback", json={"response_id": rid, "stars": 5}), 401)
    alice_store.close()
    bob_store.close()


def test_a_public_host_without_tokens_is_refused(tmp_path: Any) -> None:
    with pytest.raises(MinetuneError, match="without authentication"):
        create_app(load_settings(), host="0.0.0.0")
