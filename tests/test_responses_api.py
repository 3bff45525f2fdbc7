"""``/v1/responses`` over real loopback HTTP with the official openai client: the Responses API
translated onto the chat-completions fake upstream, stored, rateable and continued, streaming and not."""

from __future__ import annotations

import json
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
        ({"text": {"format": {"type": "json_schema"}}}, "json_schema"),
        ({"text": {"verbosity": "low"}}, "text"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "item_reference"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input_file"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}, "file_id"),
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, "function tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"input": [{"type": "function_call_output", "output": "1"}]}, "call_id"),
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


WEATHER: Any = {
    "type": "function",
    "name": "weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}
CHAT_WEATHER = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}


def _create(client: openai.OpenAI, streaming: bool, **request: Any) -> tuple[Any, list[Any]]:
    """(final response, events) of one Responses call, streamed (through the SDK's stream helper,
    which checks every event against the snapshot it builds) or not."""
    request.setdefault("model", "minetune")
    if not streaming:
        return client.responses.create(**request), []
    with client.responses.stream(**request) as stream:
        events = list(stream)
        final = stream.get_final_response()
    return final, events


@pytest.mark.parametrize("via", ["previous_response_id", "input_list"])
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_function_tools_round_trip_are_stored_and_rateable(
    fake_llm: FakeOpenAI, local: Local, streaming: bool, via: str
) -> None:
    settings, store = local
    with serve_app(create_app(settings)) as url:
        client = _client(url)
        called, events = _create(
            client, streaming, input="Weather in Paris?", tools=[WEATHER], tool_choice="auto",
            parallel_tool_calls=False,
        )  # fmt: skip
        # The upstream got the chat form of the tools, and answered with a tool call.
        asked = fake_llm.requests[-1]
        assert asked["tools"] == [CHAT_WEATHER]
        assert (asked["tool_choice"], asked["parallel_tool_calls"]) == ("auto", False)
        assert asked["messages"][1:] == [{"role": "user", "content": "Weather in Paris?"}]
        assert called.status == "completed" and called.output_text == ""
        [call] = called.output
        assert call.type == "function_call"
        assert (call.name, call.call_id, json.loads(call.arguments)) == (
            "weather", "call_fake_1", {"query": "Weather in Paris?"},
        )  # fmt: skip
        assert [t.name for t in called.tools] == ["weather"]
        if streaming:
            kinds = [e.type for e in events]
            assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
            assert "response.function_call_arguments.delta" in kinds
            assert kinds[-3:] == [
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
            done = next(e for e in events if e.type == "response.function_call_arguments.done")
            assert done.arguments == call.arguments and done.item_id == call.id
        # The tool call is stored with the attempt, and the response is rateable.
        first = store.attempt(_attempt_id(called.id))
        assert first.status == "complete"
        assert first.extra is not None and first.extra["finish_reason"] == "tool_calls"
        [stored_call] = first.extra["tool_calls"]
        assert stored_call["id"] == "call_fake_1" and stored_call["function"]["name"] == "weather"
        r = httpx.post(url + "/v1/feedback", json={"response_id": called.id, "stars": 4})
        assert r.status_code == 200, r.text

        output = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24C"}
        if via == "previous_response_id":
            answered, _ = _create(
                client, streaming, previous_response_id=called.id, input=[output], tools=[WEATHER]
            )
        else:
            items: Any = [{"role": "user", "content": "Weather in Paris?"}]
            items += [item.model_dump(exclude_none=True) for item in called.output] + [output]
            answered, _ = _create(client, streaming, input=items, tools=[WEATHER])
        r = httpx.post(url + "/v1/feedback", json={"response_id": answered.id, "stars": 5})
        assert r.status_code == 200, r.text

    assert answered.status == "completed" and answered.output_text == "tool said: sunny, 24C"
    assert fake_llm.last["messages"][1:] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_fake_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": call.arguments},
                },
            ],
        },  # fmt: skip
        {"role": "tool", "tool_call_id": "call_fake_1", "content": "sunny, 24C"},
    ]
    second = store.attempt(_attempt_id(answered.id))
    assert second.response == "tool said: sunny, 24C" and second.messages == fake_llm.last["messages"]
    # The answer joins the tool call's conversation; both ratings are stored.
    turns = [store.turn(a.turn_id) for a in (first, second)]
    assert turns[0].conversation_id == turns[1].conversation_id
    assert [(f.kind, f.stars) for f in store.attempt(first.id).feedback] == [("explicit", 4)]
    assert [(f.kind, f.stars) for f in store.attempt(second.id).feedback] == [("explicit", 5)]


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_json_schema_top_p_tool_choice_and_images_reach_upstream(
    fake_llm: FakeOpenAI, local: Local, streaming: bool
) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    image = "data:image/png;base64," + "iVBORw0KGgo" * 50
    fake_llm.queue("a red square")
    with serve_app(create_app(local.settings)) as url:
        response, _ = _create(
            _client(url),
            streaming,
            input=[{"role": "user", "content": [
                {"type": "input_text", "text": "What is in this picture?"},
                {"type": "input_image", "image_url": image, "detail": "low"},
            ]}],
            text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
            top_p=0.5,
            temperature=0.2,
            max_output_tokens=40,
            tools=[WEATHER],
            tool_choice="none",
        )  # fmt: skip
    sent = fake_llm.last
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    assert (sent["top_p"], sent["temperature"], sent["max_tokens"]) == (0.5, 0.2, 40)
    assert (sent["tools"], sent["tool_choice"]) == ([CHAT_WEATHER], "none")
    assert sent["messages"][1:] == [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
    ]}]  # fmt: skip
    assert json.loads(response.output_text) == {"answer": "a red square"}
    assert response.text.format.type == "json_schema" and response.top_p == 0.5
    attempt = local.store.attempt(_attempt_id(response.id))
    assert attempt.response == response.output_text
    # The image is stored by hash, never the data.
    part = attempt.messages[-1]["content"][1]
    assert part["image_url"]["url"].startswith("data:image/png;base64,minetune:sha256:")
    assert "iVBORw0KGgo" not in json.dumps(attempt.messages)


def test_json_object_output_and_local_backends_refuse_what_they_cannot_honour(
    fake_llm: FakeOpenAI, local: Local
) -> None:
    with serve_app(create_app(local.settings)) as url:
        response = _client(url).responses.create(
            model="minetune", input="Give JSON.", text={"format": {"type": "json_object"}}
        )
    assert fake_llm.last["response_format"] == {"type": "json_object"}
    assert json.loads(response.output_text) == {"answer": "reply 1"}
    settings = load_settings(reoptimize=False, embedder=WORDS_EMBEDDER)
    with serve_app(create_app(settings, model=BreaksMidStream())) as url:
        r = httpx.post(url + "/v1/responses", json={"input": "hi", "top_p": 0.5})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "top_p"
