"""Tool-call follow-ups and cut n>1 streams through the proxy, with the official openai client over
real loopback HTTP: a client that sends back the assistant ``tool_calls`` message and the ``tool``
results continues the stored conversation of that answer (found by its tool call ids, the messages
before them breaking ties, also after a restart); a client that cuts an n>1 stream keeps the
choices the upstream had already finished ``complete`` and only the others ``interrupted``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from sqlalchemy import func, select

from fakes import FakeOpenAI
from minetune.config import Settings, load_settings
from minetune.server.app import create_app
from minetune.store import Store
from minetune.store.schema import Attempt, Feedback
from serverutil import serve_app
from webchat import WORDS_EMBEDDER, fake_spec, word_embedder

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look a thing up",
                                           "parameters": {"type": "object",
                                                          "properties": {"query": {"type": "string"}}}}}]


@pytest.fixture(autouse=True)
def words() -> Iterator[str]:
    with word_embedder() as name:
        yield name


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)


def _attempt(store: Store, rid: str) -> Attempt:
    return store.attempt(int(rid.removeprefix("mt-")))


def _conversation(store: Store, rid: str) -> int:
    return store.turn(_attempt(store, rid).turn_id).conversation_id


def _ask_with_tools(client: openai.OpenAI, question: str, streaming: bool) -> tuple[str, dict[str, Any]]:
    """Ask ``question`` with a tool; the response id and the assistant message as a client keeps it."""
    messages: Any = [{"role": "user", "content": question}]
    if not streaming:
        reply = client.chat.completions.create(model="minetune/default", messages=messages, tools=TOOLS)
        assert reply.choices[0].finish_reason == "tool_calls"
        return reply.id, reply.choices[0].message.model_dump(exclude_none=True)
    calls: dict[int, dict[str, Any]] = {}
    rid = ""
    for chunk in client.chat.completions.create(model="minetune/default", messages=messages, tools=TOOLS,
                                                stream=True):
        rid = chunk.id
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"type": "function", "function": {"arguments": ""}})
                if call.id:
                    slot["id"] = call.id
                if call.function and call.function.name:
                    slot["function"]["name"] = call.function.name
                if call.function and call.function.arguments:
                    slot["function"]["arguments"] += call.function.arguments
    return rid, {"role": "assistant", "content": None, "tool_calls": [calls[i] for i in sorted(calls)]}


def _answer_tool(client: openai.OpenAI, question: str, assistant: dict[str, Any], result: str,
                 streaming: bool) -> tuple[str, str]:
    """Send the tool's result back; the response id and the answer's text."""
    messages: Any = [{"role": "user", "content": question}, assistant,
                     {"role": "tool", "tool_call_id": assistant["tool_calls"][0]["id"], "content": result}]
    if not streaming:
        reply = client.chat.completions.create(model="minetune/default", messages=messages, tools=TOOLS)
        return reply.id, reply.choices[0].message.content or ""
    chunks = list(client.chat.completions.create(model="minetune/default", messages=messages, tools=TOOLS,
                                                 stream=True))
    return chunks[0].id, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.fixture
def settings(fake_llm: FakeOpenAI) -> Settings:
    return load_settings(model=fake_spec(fake_llm), embedder=WORDS_EMBEDDER, reoptimize=False)


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_a_tool_call_follow_up_continues_the_stored_conversation(
    fake_llm: FakeOpenAI, settings: Settings, streaming: bool
) -> None:
    store = Store.open(settings)
    question = "Perfect, now: the weather in Oslo?"  # praise words, but no previous answer yet
    with serve_app(create_app(settings)) as url:
        client = _client(url)
        first, assistant = _ask_with_tools(client, question, streaming)
        assert assistant["tool_calls"][0]["id"] == "call_fake_1"
        second, text = _answer_tool(client, question, assistant, "sunny, 21C", streaming)
    assert text == "tool said: sunny, 21C"
    assert fake_llm.last["messages"][-2]["tool_calls"] == assistant["tool_calls"]  # forwarded as sent
    assert _conversation(store, second) == _conversation(store, first)
    turns = [store.turn(_attempt(store, rid).turn_id) for rid in (first, second)]
    assert [t.index for t in turns] == [turns[0].index, turns[0].index + 1]
    with store.db.transaction() as s:  # the tool result is not the user's praise of the tool call
        assert s.scalar(select(func.count()).select_from(Feedback)) == 0
    assert _attempt(store, second).status == "complete"
    store.close()


def test_the_follow_up_is_found_in_the_store_after_a_restart_and_ties_go_to_the_same_history(
    fake_llm: FakeOpenAI, database_url: str
) -> None:
    """The fake gives every tool call the same id: two conversations made the same call, and the
    follow-up of the older one (sent to a fresh server, so nothing is remembered in memory) joins
    the conversation whose messages it carries. On SQLite and PostgreSQL (the search reads JSON)."""
    settings = load_settings(model=fake_spec(fake_llm), embedder=WORDS_EMBEDDER, reoptimize=False)
    assert settings.resolved_database_url == database_url
    store = Store.open(settings)
    with serve_app(create_app(settings)) as url:
        oslo, oslo_call = _ask_with_tools(_client(url), "weather in Oslo?", streaming=False)
        rome, rome_call = _ask_with_tools(_client(url), "weather in Rome?", streaming=False)
    assert oslo_call["tool_calls"][0]["id"] == rome_call["tool_calls"][0]["id"]
    assert _conversation(store, oslo) != _conversation(store, rome)
    with serve_app(create_app(settings)) as url:  # a restart: a new gateway, an empty memory
        follow_up, _ = _answer_tool(_client(url), "weather in Oslo?", oslo_call, "rain, 12C", streaming=False)
        other_call = {"role": "assistant", "content": None,
                      "tool_calls": [dict(oslo_call["tool_calls"][0], id="call_x")]}
        unknown, _ = _answer_tool(_client(url), "weather in Oslo?", other_call, "rain", streaming=False)
    assert _conversation(store, follow_up) == _conversation(store, oslo)
    assert _conversation(store, unknown) not in (_conversation(store, oslo), _conversation(store, rome))
    store.close()


# -- a cut n>1 stream ----------------------------------------------------------------------------


class TwoChoiceUpstream:
    """A loopback chat completions server whose stream finishes choice 0 at once, then sends
    choice 1 a word every 50 ms, unfinished, until the reader goes away (``gone`` is set when it
    noticed) or ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.gone = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                base = {"id": "chatcmpl-two", "object": "chat.completion.chunk", "created": 1, "model": "two"}

                def send(data: str) -> None:
                    self.wfile.write(data.encode())
                    self.wfile.flush()

                def event(index: int, delta: dict[str, Any], finish: str | None = None) -> None:
                    choice = {"index": index, "delta": delta, "finish_reason": finish}
                    send(f"data: {json.dumps(base | {'choices': [choice]})}\n\n")

                try:
                    event(0, {"role": "assistant", "content": "whole answer"})
                    event(0, {}, "stop")
                    event(1, {"role": "assistant", "content": "half "})
                    deadline = time.monotonic() + 20
                    while not upstream.release.is_set() and time.monotonic() < deadline:
                        time.sleep(0.05)
                        event(1, {"content": "more "})
                    event(1, {"content": "answer"})
                    event(1, {}, "stop")
                    send("data: [DONE]\n\n")
                except OSError:
                    upstream.gone.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        serve = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02})
        serve.daemon = True
        serve.start()

    @property
    def spec(self) -> str:
        return f"openai-compatible:two@http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _settled(store: Store, attempt_ids: list[int], timeout: float = 10.0) -> list[Attempt]:
    deadline = time.monotonic() + timeout
    while True:
        attempts = [store.attempt(a) for a in attempt_ids]
        if all(a.status != "streaming" for a in attempts) or time.monotonic() > deadline:
            return attempts
        time.sleep(0.05)


def test_a_cut_n2_stream_keeps_the_finished_choice_complete_and_interrupts_the_other() -> None:
    upstream = TwoChoiceUpstream()
    settings = load_settings(model=upstream.spec, embedder=WORDS_EMBEDDER, reoptimize=False)
    store = Store.open(settings)
    try:
        with serve_app(create_app(settings)) as url:
            stream = _client(url).chat.completions.create(
                model="minetune/default", messages=[{"role": "user", "content": "two answers"}],
                n=2, stream=True)
            ids = stream.response.headers["x-minetune-response-ids"].split(",")
            seen: list[tuple[int, str]] = []
            for chunk in stream:
                seen += [(c.index, c.delta.content or "") for c in chunk.choices]
                if (1, "half ") in seen:
                    break
            stream.close()  # the client goes away with choice 1 unfinished
            attempts = _settled(store, [int(rid.removeprefix("mt-")) for rid in ids])
            assert upstream.gone.wait(10)  # the proxy closed its upstream stream too
            assert (0, "whole answer") in seen
            assert [a.status for a in attempts] == ["complete", "interrupted"]
            assert attempts[0].response == "whole answer"
            assert attempts[1].response.startswith("half ") and "answer" not in attempts[1].response
            assert attempts[0].extra is not None and attempts[0].extra["finish_reason"] == "stop"
            assert attempts[1].extra is not None and attempts[1].extra.get("finish_reason") is None
            rate = _client(url).post("/feedback", cast_to=object,
                                     body={"response_id": ids[0], "stars": 5})
            assert isinstance(rate, dict) and rate["ok"] is True  # the finished choice is an answer
            with pytest.raises(openai.APIStatusError):  # the half one is not
                _client(url).post("/feedback", cast_to=object, body={"response_id": ids[1], "stars": 5})
    finally:
        store.close()
        upstream.close()
