"""The whole Chat Completions surface through the proxy, with the official openai client over real
loopback HTTP against FakeOpenAI: request fields and message shapes reach the upstream as sent,
the upstream's response shape comes back, n>1 choices are rateable attempts, tool calls and
logprobs are stored with the attempt, inline images are stored by hash, refusals keep their status."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from fakes import FakeOpenAI
from minetune.config import load_settings
from minetune.server.app import create_app
from minetune.store import Store
from minetune.store.schema import Attempt
from serverutil import serve_app
from webchat import WORDS_EMBEDDER, fake_spec, word_embedder

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look a thing up",
                                           "parameters": {"type": "object",
                                                          "properties": {"query": {"type": "string"}}}}}]
FIELDS: dict[str, Any] = {
    "tools": TOOLS,
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "stop": ["\n\n", "END"],
    "seed": 7,
    "top_p": 0.9,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.25,
    "logprobs": True,
    "top_logprobs": 2,
    "max_completion_tokens": 64,
    "user": "user-42",
    "metadata": {"team": "docs"},
    "temperature": 0.3,
}


@pytest.fixture(autouse=True)
def words() -> Iterator[str]:
    with word_embedder() as name:
        yield name


@pytest.fixture
def served(fake_llm: FakeOpenAI) -> Iterator[tuple[str, Store]]:
    settings = load_settings(model=fake_spec(fake_llm), embedder=WORDS_EMBEDDER, reoptimize=False)
    store = Store.open(settings)
    with serve_app(create_app(settings)) as url:
        yield url, store
    store.close()


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)


def _attempt(store: Store, rid: str) -> Attempt:
    return store.attempt(int(rid.removeprefix("mt-")))


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_every_documented_field_reaches_the_upstream_unchanged(
    fake_llm: FakeOpenAI, served: tuple[str, Store], streaming: bool
) -> None:
    url, store = served
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
        "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if streaming else {}
    client = _client(url)
    result = client.chat.completions.create(
        model="minetune/default", messages=[{"role": "user", "content": "find the cat"}],
        response_format=schema, stream=streaming, **FIELDS, **extra,  # type: ignore[call-overload]
    )
    sent = fake_llm.last
    for key, value in (FIELDS | {"response_format": schema} | extra).items():
        assert sent[key] == value, key
    assert sent["model"] == "fake" and "max_tokens" not in sent  # the client's own limit only
    if streaming:
        chunks = list(result)
        calls = [c for ch in chunks if ch.choices for c in (ch.choices[0].delta.tool_calls or [])]
        assert calls[0].function.name == "lookup"
        assert chunks[-1].usage is not None and chunks[-1].choices == []
        rid = chunks[0].id
    else:
        reply = result
        assert reply.choices[0].finish_reason == "tool_calls"
        call = reply.choices[0].message.tool_calls[0]
        assert call.function.name == "lookup"
        assert json.loads(call.function.arguments) == {"query": "find the cat"}
        logprobs = reply.choices[0].logprobs
        assert logprobs is not None and logprobs.content and len(logprobs.content[0].top_logprobs) == 2
        assert reply.system_fingerprint == "fp_fake" and reply.usage is not None
        rid = reply.id
    attempt = _attempt(store, rid)
    assert attempt.status == "complete"
    assert attempt.extra is not None and attempt.extra["finish_reason"] == "tool_calls"
    assert attempt.extra["tool_calls"][0]["function"]["name"] == "lookup"
    assert httpx.post(url + "/v1/feedback", json={"response_id": rid, "stars": 4}).status_code == 200


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_tool_call_round_trip(fake_llm: FakeOpenAI, served: tuple[str, Store], streaming: bool) -> None:
    url, store = served
    client = _client(url)
    messages: list[Any] = [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "sunny, 21C"},
    ]
    result = client.chat.completions.create(model="minetune/default", messages=messages, tools=TOOLS,
                                            tool_choice="none", stream=streaming)
    if streaming:
        chunks = list(result)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        rid = chunks[0].id
    else:
        text, rid = result.choices[0].message.content, result.id
    assert text == "tool said: sunny, 21C"
    sent = fake_llm.last["messages"]
    assert sent[0]["role"] == "system" and sent[0]["content"].endswith("Use tools.")
    assert sent[1:] == messages[1:]  # assistant tool_calls and the tool message exactly as sent
    attempt = _attempt(store, rid)
    assert attempt.response == text and attempt.messages[1:] == messages[1:]
    assert store.turn(attempt.turn_id).user_message == "weather in Oslo?"
    assert httpx.post(url + "/v1/feedback", json={"response_id": rid, "stars": 5}).status_code == 200


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_n3_is_three_rateable_attempts_of_one_turn_with_logprobs(
    fake_llm: FakeOpenAI, served: tuple[str, Store], streaming: bool
) -> None:
    url, store = served
    fake_llm.queue("blue is calm")
    raw = httpx.post(url + "/v1/chat/completions", timeout=30, json={
        "model": "minetune/default", "messages": [{"role": "user", "content": "a colour?"}],
        "n": 3, "logprobs": True, "top_logprobs": 1, "stream": streaming})
    assert raw.status_code == 200, raw.text
    ids = raw.headers["x-minetune-response-ids"].split(",")
    assert len(ids) == 3 and raw.headers["x-minetune-response-id"] == ids[0]
    if not streaming:
        body = raw.json()
        assert [c["index"] for c in body["choices"]] == [0, 1, 2]
        assert body["choices"][0]["logprobs"]["content"][0]["token"] == "blue"
        assert body["choices"][0]["logprobs"]["content"][0]["top_logprobs"][0]["logprob"] == -0.5
        assert body["minetune"]["response_ids"] == ids
    else:
        events = [json.loads(line[6:]) for line in raw.text.splitlines()
                  if line.startswith("data: {")]
        assert {c["index"] for e in events for c in e["choices"]} == {0, 1, 2}
        assert raw.text.rstrip().endswith("data: [DONE]")
    attempts = [_attempt(store, rid) for rid in ids]
    assert [a.number for a in attempts] == [1, 2, 3]
    assert len({a.turn_id for a in attempts}) == 1
    texts = ["blue is calm", "blue is calm (choice 2)", "blue is calm (choice 3)"]
    assert [a.response for a in attempts] == texts
    assert all(a.status == "complete" for a in attempts)
    assert attempts[0].extra == {"finish_reason": "stop", "logprobs": {"tokens": 3, "logprob_sum": -1.5},
                                 "index": 0}
    for stars, rid in zip((5, 2, 3), ids, strict=True):
        assert httpx.post(url + "/v1/feedback", json={"response_id": rid, "stars": stars}).status_code == 200
    with store.db.transaction() as s:
        rated = s.scalars(select(Attempt).where(Attempt.turn_id == attempts[0].turn_id)).all()
        assert sorted(fb.stars for a in rated for fb in a.feedback) == [2, 3, 5]


def test_image_and_audio_parts_are_forwarded_and_stored_by_hash(
    fake_llm: FakeOpenAI, served: tuple[str, Store]
) -> None:
    url, store = served
    png = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"x" * 5000).decode()
    audio = base64.b64encode(b"RIFF" + b"a" * 3000).decode()
    content: list[Any] = [
        {"type": "text", "text": "what is in these?"},
        {"type": "image_url", "image_url": {"url": png, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
    ]
    reply = _client(url).chat.completions.create(
        model="minetune/default", messages=[{"role": "user", "content": content}])
    assert fake_llm.last["messages"][-1] == {"role": "user", "content": content}  # forwarded whole
    attempt = _attempt(store, reply.id)
    stored = attempt.messages[-1]["content"]
    assert stored[0] == content[0] and stored[2] == content[2]
    assert stored[1]["image_url"]["url"].startswith("data:image/png;base64,minetune:sha256:")
    assert stored[1]["image_url"]["detail"] == "low"
    assert stored[3]["input_audio"]["data"].startswith("minetune:sha256:")
    assert png[30:80] not in json.dumps(attempt.messages) and audio[10:60] not in json.dumps(attempt.messages)
    assert store.turn(attempt.turn_id).user_message == "what is in these?"


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_a_field_the_upstream_rejects_comes_back_as_its_error_with_its_status(
    fake_llm: FakeOpenAI, served: tuple[str, Store], streaming: bool
) -> None:
    url, store = served
    fake_llm.reject_fields = {"seed"}
    store.program()  # the default program exists (it is created on first use)
    before = store.row_counts()
    with pytest.raises(openai.BadRequestError) as info:
        _client(url).chat.completions.create(model="minetune/default", seed=1, stream=streaming,
                                             messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 400
    assert info.value.body == {"message": "Unrecognized request argument supplied: seed",
                               "type": "invalid_request_error", "param": "seed", "code": None}
    assert store.row_counts() == before
