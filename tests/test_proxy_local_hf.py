"""A local ``hf:`` model behind the proxy (the tiny random model of tests/conftest.py, loaded for
real): every Chat Completions field and message shape it cannot honour is refused with an
OpenAI-shaped 400 naming the field, streamed or not, and nothing is stored; a plain request is
answered. Slow: it loads torch and transformers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from minetune.config import load_settings
from minetune.server.app import create_app
from minetune.store import Store
from serverutil import serve_app
from webchat import WORDS_EMBEDDER, word_embedder

pytestmark = pytest.mark.slow

USER = [{"role": "user", "content": "hello"}]
TOOL_FOLLOW_UP = [
    {"role": "user", "content": "weather?"},
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
]
IMAGE = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                      {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
# (request fields, messages, the param the error must name)
REFUSED: list[tuple[dict[str, Any], list[Any], str]] = [
    ({"tools": TOOLS}, USER, "tools"),
    ({"tool_choice": "none"}, USER, "tool_choice"),
    ({"logprobs": True}, USER, "logprobs"),
    ({"top_logprobs": 2}, USER, "top_logprobs"),
    ({"n": 2}, USER, "n"),
    ({"response_format": {"type": "json_object"}}, USER, "response_format"),
    ({"stop": ["\n"]}, USER, "stop"),
    ({"seed": 3}, USER, "seed"),
    ({"top_p": 0.5}, USER, "top_p"),
    ({"presence_penalty": 0.5}, USER, "presence_penalty"),
    ({}, TOOL_FOLLOW_UP, "messages"),
    ({}, IMAGE, "messages"),
]


@pytest.fixture
def served(tiny_model_dir: Path) -> Iterator[tuple[str, Store]]:
    with word_embedder():
        settings = load_settings(model=f"hf:{tiny_model_dir}", embedder=WORDS_EMBEDDER, reoptimize=False)
        store = Store.open(settings)
        with serve_app(create_app(settings)) as url:
            yield url, store
        store.close()


def test_a_local_model_refuses_what_it_cannot_honour_with_an_openai_400(served: tuple[str, Store]) -> None:
    url, store = served
    store.program()  # the default program exists before counting rows
    before = store.row_counts()
    for streaming in (False, True):
        for fields, messages, param in REFUSED:
            body = {"model": "minetune/default", "messages": messages, "stream": streaming, **fields}
            response = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
            assert response.status_code == 400, (param, response.text)
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error" and error["param"] == param, error
            assert param in error["message"] and "local backend" in error["message"]
    assert store.row_counts() == before  # nothing stored, nothing generated
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:  # the official client sees an OpenAI error
        client.chat.completions.create(model="minetune/default", messages=USER, tools=TOOLS)  # type: ignore[arg-type]
    assert info.value.status_code == 400 and isinstance(info.value.body, dict)
    assert info.value.body["param"] == "tools"
    reply = client.chat.completions.create(model="minetune/default", messages=USER,  # type: ignore[arg-type]
                                           max_tokens=3, temperature=0)
    assert reply.id.startswith("mt-") and reply.choices[0].finish_reason in ("stop", "length")
    assert store.attempt(int(reply.id.removeprefix("mt-"))).status == "complete"
