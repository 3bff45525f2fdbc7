"""Only finished answers count. Over real HTTP on 127.0.0.1 against a slow (or early-ending)
upstream: a server killed with SIGKILL mid-stream, clients that hang up mid-stream and an upstream
that stops without a finish_reason or ``[DONE]`` leave attempts that are visibly unfinished and
never rated, accepted, shown as demos, sent back as history or trained on."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from minetune import review
from minetune.app import exchange
from minetune.app.exchange import Learning, UnfinishedAnswerError
from minetune.config import Settings, load_settings
from minetune.server.app import create_app
from minetune.store import Store
from minetune.store.schema import Attempt
from minetune.store.training import rated_turns
from minetune.train.datasets import build_examples
from serverutil import serve_app
from slowstream import SlowStream
from webchat import WORDS_EMBEDDER, word_embedder
from webusers import rows_unchanged


@pytest.fixture(autouse=True)
def words() -> Iterator[str]:
    with word_embedder() as name:
        yield name


def _settings(upstream: SlowStream) -> Settings:
    return load_settings(model=upstream.spec, reoptimize=False, embedder=WORDS_EMBEDDER)


def _attempts(store: Store) -> list[Attempt]:
    with store.db.transaction() as s:
        return list(s.scalars(select(Attempt).order_by(Attempt.id)))


def _no_learning(settings: Settings) -> Learning:
    return Learning(settings, lambda _store, _program: None)


def _chat_body(content: str) -> dict[str, Any]:
    return {"model": "minetune/default", "messages": [{"role": "user", "content": content}], "stream": True}


def _read_first_delta(lines: Iterator[str]) -> str:
    """Read SSE lines until the first content delta; returns it. (Dropping an httpx line iterator
    closes its connection: keep ``lines`` referenced while the stream should stay open.)"""
    for line in lines:
        if line.startswith("data: {"):
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                return str(delta)
    raise AssertionError("the stream ended before any content")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _server_process(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``minetune serve`` in its own process on a free loopback port."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "minetune.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"minetune serve exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                )
            with suppress(httpx.HTTPError):
                if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError("minetune serve did not start")
            time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
        if proc.stderr is not None:
            proc.stderr.close()


def _wait_settled(store: Store, count: int, timeout: float = 60.0) -> list[Attempt]:
    """The attempts once ``count`` exist and none is streaming (or whatever is there at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        attempts = _attempts(store)
        if (len(attempts) >= count and all(a.status != "streaming" for a in attempts)) or (
            time.monotonic() > deadline
        ):
            return attempts
        time.sleep(0.05)


def _answers(example: Any) -> set[str]:
    """The answer texts of a dataset example (SFT response, DPO chosen/rejected, KTO completion)."""
    return {
        getattr(example, name)
        for name in ("response", "chosen", "rejected", "completion")
        if hasattr(example, name)
    }


def _training_answers(store: Store) -> set[str]:
    texts: set[str] = set()
    for method in ("sft", "dpo", "kto"):
        examples, _, _ = build_examples(store, "default", method)
        texts |= {text for ex in examples for text in _answers(ex)}
    return texts


def _assert_not_an_answer(store: Store, settings: Settings, attempt_id: int) -> None:
    """Nothing treats the attempt as an answer: rating and critique refused, no demo row, no
    dataset row, not in the dataset view."""
    with rows_unchanged(store):
        with pytest.raises(UnfinishedAnswerError, match="only complete answers can be rated"):
            exchange.rate(store, _no_learning(settings), attempt_id, 5)
        with pytest.raises(UnfinishedAnswerError):
            exchange.critique(store, _no_learning(settings), attempt_id, "too short")
    assert all(row[0] != attempt_id for row in store.feedback_rows("default"))
    assert all(a.id != attempt_id for view in review.dataset(store, "default") for a in view.attempts)
    with store.db.transaction() as s:
        text = s.scalar(select(Attempt.response).where(Attempt.id == attempt_id))
    assert text not in _training_answers(store)


def test_kill_9_mid_stream_leaves_no_rateable_attempt(database_url: str, tmp_path: Any) -> None:
    with SlowStream(count=100_000, interval=0.05) as upstream:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINETUNE_")}
        env |= {
            "MINETUNE_HOME": str(tmp_path / "home"),
            "MINETUNE_DATABASE_URL": database_url,
            "MINETUNE_MODEL": upstream.spec,
            "MINETUNE_REOPTIMIZE": "0",
            "MINETUNE_OLLAMA_URL": "http://127.0.0.1:9",
        }
        with (
            _server_process(env) as (proc, url),
            httpx.Client(timeout=30) as client,
            suppress(httpx.HTTPError),
            client.stream("POST", url + "/v1/chat/completions", json=_chat_body("tell me")) as r,
        ):
            assert r.status_code == 200
            rid = r.headers["x-minetune-response-id"]
            lines = r.iter_lines()
            assert _read_first_delta(lines) == "w0 "  # still reading: only the kill cuts the stream
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        settings = load_settings(home=tmp_path / "home", reoptimize=False, embedder=WORDS_EMBEDDER)
        assert settings.resolved_database_url == database_url
        store = Store.open(settings)
        (attempt,) = _attempts(store)
        assert f"mt-{attempt.id}" == rid
        assert attempt.status == "streaming"  # its process died: the next start-up settles it
        _assert_not_an_answer(store, settings, attempt.id)

        with _server_process(env) as (_proc, url):
            assert [a.status for a in _attempts(store)] == ["interrupted"]
            with rows_unchanged(store):
                r = httpx.post(url + "/v1/feedback", json={"response_id": rid, "stars": 5})
            assert r.status_code == 400
            assert "interrupted before it finished" in r.json()["error"]["message"]
        _assert_not_an_answer(store, settings, attempt.id)
        store.close()


def test_client_disconnects_mid_stream_settle_without_garbage_collection(database_url: str) -> None:
    gc.collect()
    gc.disable()  # cleanup must not wait for the collector to close abandoned generators
    try:
        with SlowStream(count=400, interval=0.05) as upstream:
            settings = _settings(upstream)
            store = Store.open(settings)
            with serve_app(create_app(settings)) as url:
                for i in range(10):
                    with (
                        httpx.Client(timeout=30) as client,
                        client.stream("POST", url + "/v1/chat/completions", json=_chat_body(f"q {i}")) as r,
                    ):
                        assert _read_first_delta(r.iter_lines()) == "w0 "
                    # leaving the block hung up mid-stream
                attempts = _wait_settled(store, 10)
            assert len(attempts) == 10
            for attempt in attempts:
                assert attempt.status == "interrupted", (attempt.id, attempt.status)
                assert attempt.response.startswith("w0 ") and upstream.text().startswith(attempt.response)
                assert attempt.response != upstream.text()
                _assert_not_an_answer(store, settings, attempt.id)
            store.close()
    finally:
        gc.enable()


def test_an_upstream_stream_that_ends_early_is_an_error_not_stop() -> None:
    with SlowStream(count=3, interval=0.0, early=True) as upstream:
        settings = _settings(upstream)
        store = Store.open(settings)
        with serve_app(create_app(settings)) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
            chunks = []
            with pytest.raises(openai.APIError, match="ended the stream before the answer was finished"):
                for chunk in client.chat.completions.create(
                    model="minetune/default", messages=[{"role": "user", "content": "hi"}], stream=True
                ):
                    chunks.append(chunk)
            assert "".join(c.choices[0].delta.content or "" for c in chunks) == "w0 w1 w2 "
            assert all(c.choices[0].finish_reason is None for c in chunks)  # never "stop"
            (attempt,) = _attempts(store)
            assert (attempt.status, attempt.response) == ("interrupted", "w0 w1 w2 ")
            # It is no history: the turn has no complete answer.
            conversation = review.turn(store, attempt.turn_id).conversation_id
            assert store.history(conversation) == []
            # The web page shows it as interrupted and refuses to rate it.
            r = httpx.post(url + f"/api/attempts/{attempt.id}/rate", json={"stars": 5})
            assert r.status_code == 400 and "interrupted" in r.json()["error"]["message"]
            view = review.attempt(store, attempt.id)
            assert view.status == "interrupted"
            _assert_not_an_answer(store, settings, attempt.id)

            # The web chat reports the early end as an error event and stores nothing.
            with rows_unchanged(store):
                r = httpx.post(url + "/api/chat", json={"message": "hello"}, timeout=30)
            events = [json.loads(line) for line in r.text.splitlines() if line.strip()]
            assert events[-1]["type"] == "error" and "ended the stream" in events[-1]["message"]
            assert not any(e["type"] == "done" for e in events)
        store.close()


def test_half_answers_are_no_history_prior_demo_or_training_row() -> None:
    """Filters on their own: even with feedback stored on an interrupted attempt (bypassing the
    policy, as old data could), it is no demo row, no dataset row and no history."""
    settings = load_settings(reoptimize=False, embedder=WORDS_EMBEDDER)
    store = Store.open(settings)
    conversation = store.start_conversation()
    turn = store.add_turn(conversation.id, "what is 2+2?")
    fields = {"model_spec": "m", "messages": [{"role": "user", "content": "what is 2+2?"}], "latency_ms": 1.0}
    half = store.add_attempt(turn.id, response="It is", status="interrupted", **fields)
    whole = store.add_attempt(turn.id, response="It is 4.", **fields)
    store.add_feedback(half.id, "explicit", stars=5)
    exchange.rate(store, _no_learning(settings), whole.id, 5)

    assert [row[0] for row in store.feedback_rows("default")] == [whole.id]
    (record,) = rated_turns(store, "default")
    assert [a.status for a in record.attempts] == ["interrupted", "complete"]
    # The prompt may come from the half answer's stored messages (the exact prompt sent); its
    # text is never an answer: no SFT response, no DPO chosen or rejected, no KTO completion.
    assert _training_answers(store) == {"It is 4."}
    sft, _, _ = build_examples(store, "default", "sft")
    assert [ex.response for ex in sft] == ["It is 4."]
    assert store.history(conversation.id) == [("what is 2+2?", "It is 4.")]
    (view,) = review.dataset(store, "default")
    assert [a.id for a in view.attempts] == [whole.id]

    lone = store.add_turn(conversation.id, "and 3+3?")
    store.add_attempt(lone.id, response="It", status="interrupted", **fields)
    assert store.history(conversation.id) == [("what is 2+2?", "It is 4.")]
    store.close()
