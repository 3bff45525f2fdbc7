"""``/v1/responses`` over real loopback HTTP with the official openai client: the Responses API
translated onto the chat-completions fake upstream, stored, rateable and continued, streaming and not."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any, NamedTuple

import httpx
import openai
import pytest
from sqlalchemy import select

from fakes import FakeOpenAI
from minetune.config import Settings, load_settings
from minetune.errors import ModelError
from minetune.models.base import Completion, CompletionStream, Message
from minetune.server.app import create_app
from minetune.store import Store
from minetune.store.schema import Attempt
from serverutil import serve_app
from webchat import WORDS_EMBEDDER, fake_spec, word_embedder


@pytest.fixture(autouse=True)
def words() -> Iterator[str]:
    """Demo retrieval with the tiny bag-of-words embedder, so it runs without loading MiniLM."""
    with word_embedder() as name:
        yield name


class Local(NamedTuple):
    settings: Settings
    store: Store


@pytest.fixture
def local(fake_llm: FakeOpenAI) -> Iterator[Local]:
    settings = load_settings(model=fake_spec(fake_llm), embedder=WORDS_EMBEDDER, reoptimize=False)
    store = Store.open(settings)
    yield Local(settings, store)
    store.close()


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)


def _attempt_id(response_id: str) -> int:
    assert response_id.startswith("mt-") and response_id[3:].isdigit(), response_id
    return int(response_id[3:])


def _respond(client: openai.OpenAI, streaming: bool, **request: Any) -> tuple[str, str, list[str]]:
    """(response id, output text, event types) of one Responses call, streamed or not."""
    request.setdefault("model", "minetune")
    if not streaming:
        response = client.responses.create(**request)
        assert response.object == "response" and response.status == "completed"
        return response.id, response.output_text, []
    with client.responses.stream(**request) as stream:  # the SDK helper validates every event
        kinds: list[str] = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.status == "completed"
    return final.id, final.output_text, kinds


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_responses_answer_with_the_program_and_store_the_exact_prompt(
    fake_llm: FakeOpenAI, local: Local, streaming: bool
) -> None:
    fake_llm.queue("Winston is your cat, a grey tabby who naps all day.")
    settings, store = local
    store.add_version(instructions="You are Timmy.")
    with serve_app(create_app(settings)) as url:
        rid, text, kinds = _respond(
            _client(url),
            streaming,
            model="minetune/default",
            instructions="Answer in English.",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "What's my cat's name?"}]}],
            temperature=0.3,
            max_output_tokens=50,
            metadata={"case": "one"},
        )
    assert text == "Winston is your cat, a grey tabby who naps all day."
    sent = fake_llm.last
    assert sent["messages"] == [
        {"role": "system", "content": "You are Timmy.\n\nAnswer in English."},
        {"role": "user", "content": "What's my cat's name?"},
    ]
    assert (sent["temperature"], sent["max_tokens"], sent.get("stream", False)) == (0.3, 50, streaming)
    attempt = store.attempt(_attempt_id(rid))
    assert attempt.messages == sent["messages"] and attempt.response == text
    assert attempt.status == "complete"
    if streaming:
        assert kinds[:4] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ]
        assert kinds.count("response.output_text.delta") > 1
        assert kinds[-4:] == [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]


def test_the_response_object_has_usage_metadata_and_output_items(fake_llm: FakeOpenAI, local: Local) -> None:
    fake_llm.queue("Two words.")
    with serve_app(create_app(local.settings)) as url:
        response = _client(url).responses.create(model="minetune", input="hi", metadata={"k": "v"})
        raw = httpx.post(url + "/v1/responses", json={"input": "hello"})
    assert response.model == "minetune/default" and response.metadata == {"k": "v"}
    assert response.usage is not None and response.usage.output_tokens == 2
    [item] = response.output
    assert item.type == "message" and item.role == "assistant"
    assert [(p.type, p.text) for p in item.content] == [("output_text", "Two words.")]  # type: ignore[union-attr]
    assert raw.status_code == 200 and raw.headers["x-minetune-response-id"] == raw.json()["id"]
    assert raw.json()["output"][0]["content"][0]["text"] == "reply 2"


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_feedback_previous_response_id_and_praise_continue_the_conversation(
    fake_llm: FakeOpenAI, local: Local, streaming: bool
) -> None:
    fake_llm.queue("A long answer about Winston the cat.", "Winston.", "Glad it helped!")
    settings, store = local
    with serve_app(create_app(settings)) as url:
        client = _client(url)
        first_id, first, _ = _respond(client, streaming, input="What's my cat's name?")
        r = httpx.post(
            url + "/v1/feedback", json={"response_id": first_id, "stars": 2, "critique": "too long"}
        )
        assert r.status_code == 200 and r.json()["ok"] is True
        second_id, second, _ = _respond(
            client, streaming, input="Shorter, please.", previous_response_id=first_id
        )
        third_id, _, _ = _respond(client, streaming, input="Perfect, thanks!", previous_response_id=second_id)

    # The stored exchange continues: earlier messages and answers come before the new input.
    assert fake_llm.last["messages"][1:] == [
        {"role": "user", "content": "What's my cat's name?"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Shorter, please."},
        {"role": "assistant", "content": second},
        {"role": "user", "content": "Perfect, thanks!"},
    ]
    attempts = [store.attempt(_attempt_id(rid)) for rid in (first_id, second_id, third_id)]
    assert [(f.kind, f.stars, f.critique) for f in attempts[0].feedback] == [("explicit", 2, "too long")]
    # The praise in the third input marks the second answer 5 stars.
    assert [(f.kind, f.stars, f.text) for f in attempts[1].feedback] == [("praise", 5, "Perfect, thanks!")]
    turns = [store.turn(a.turn_id) for a in attempts]
    assert len({t.conversation_id for t in turns}) == 1
    assert [t.user_message for t in turns] == [
        "What's my cat's name?",
        "Shorter, please.",
        "Perfect, thanks!",
    ]


def test_an_input_list_quoting_an_answer_is_praise_like_chat_completions(
    fake_llm: FakeOpenAI, local: Local
) -> None:
    fake_llm.queue("Winston.")
    with serve_app(create_app(local.settings)) as url:
        client = _client(url)
        first = client.responses.create(input="What's my cat's name?")
        quoting: Any = [
            {"role": "user", "content": "What's my cat's name?"},
            {"role": "assistant", "content": [{"type": "output_text", "text": first.output_text}]},
            {"role": "user", "content": "Nice one!"},
        ]
        client.responses.create(input=quoting)
    feedback = local.store.attempt(_attempt_id(first.id)).feedback
    assert [(f.kind, f.stars) for f in feedback] == [("praise", 5)]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"store": False}, "store=false"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"text": {"format": {"type": "json_object"}}}, "text"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "item_reference"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input_file"),
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools"),
        ({"top_p": 0.5}, "top_p"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]}, "function_call"),
    ],
)
def test_fields_that_cannot_be_honoured_are_a_400_and_nothing_goes_upstream(
    fake_llm: FakeOpenAI, local: Local, extra: dict[str, Any], needle: str
) -> None:
    with serve_app(create_app(local.settings)) as url:
        r = httpx.post(url + "/v1/responses", json={"input": "hi"} | extra)
    status = 404 if needle == "previous_response_id" else 400
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"
    assert fake_llm.requests == []
    assert local.store.stats()["attempts"] == 0


def test_upstream_errors_are_502_and_store_nothing(fake_llm: FakeOpenAI, local: Local) -> None:
    with serve_app(create_app(local.settings)) as url:
        for stream in (False, True):
            fake_llm.fail_next(500, "the GPU caught fire")
            r = httpx.post(url + "/v1/responses", json={"input": "hi", "stream": stream})
            assert r.status_code == 502 and "the GPU caught fire" in r.json()["error"]["message"]
    assert local.store.stats()["attempts"] == 0


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


def test_a_stream_that_breaks_ends_with_response_failed_and_is_stored_interrupted() -> None:
    settings = load_settings(reoptimize=False, embedder=WORDS_EMBEDDER)
    store = Store.open(settings)
    store.programs()
    with serve_app(create_app(settings, model=BreaksMidStream())) as url:
        events = list(_client(url).responses.create(model="minetune", input="hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["response.output_text.delta", "response.failed"]
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.error is not None
    assert "upstream went away mid-stream" in failed.response.error.message
    with store.db.transaction() as s:
        (attempt,) = s.scalars(select(Attempt)).all()
    assert (attempt.status, attempt.response) == ("interrupted", "Half an ans")
    store.close()
