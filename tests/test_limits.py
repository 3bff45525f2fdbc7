"""Bounded resources over real loopback HTTP: slow upstream calls run on their own pool (pages and
feedback stay fast), each user has a cap on answers in flight, the upstream timeout is a setting,
and a chunked body is refused at the limit as it arrives (server in a subprocess, RSS measured)."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from fakes import FakeOpenAI
from minetune.config import load_settings
from minetune.server.app import MAX_BODY_BYTES, create_app
from minetune.store.db import Database, open_engine
from minetune.store.users import issue_token
from serverutil import serve_app
from webchat import WORDS_EMBEDDER, web_settings, word_embedder

MB = 1024 * 1024


@pytest.fixture(autouse=True)
def words() -> Iterator[str]:
    """Demo retrieval with the tiny bag-of-words embedder, so no request waits for MiniLM to load."""
    with word_embedder() as name:
        yield name


def _completion(url: str, text: str, stream: bool = False) -> httpx.Response:
    body = {"model": "minetune", "messages": [{"role": "user", "content": text}], "stream": stream}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def _wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_45_slow_upstream_requests_do_not_slow_login_or_feedback(fake_llm: FakeOpenAI) -> None:
    delay = 8.0
    settings = web_settings(fake_llm, embedder=WORDS_EMBEDDER, user_concurrency=64)
    with serve_app(create_app(settings)) as url:
        first = _completion(url, "a quick one")
        assert first.status_code == 200
        response_id = first.json()["id"]
        fake_llm.delay = delay
        started = time.monotonic()
        with ThreadPoolExecutor(45) as clients:
            slow = [clients.submit(_completion, url, f"slow {i}", i % 3 == 0) for i in range(45)]
            _wait_for(lambda: len(fake_llm.requests) == 46, delay - 3, "45 requests at the upstream")
            timings: dict[str, list[float]] = {"login": [], "feedback": []}
            with httpx.Client(base_url=url, timeout=30) as http:
                for stars in (5, 4, 3, 4, 5):
                    t0 = time.perf_counter()
                    assert http.get("/login").status_code == 200
                    timings["login"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    rated = http.post("/v1/feedback", json={"response_id": response_id, "stars": stars})
                    timings["feedback"].append(time.perf_counter() - t0)
                    assert rated.status_code == 200, rated.text
            # The measurements above were taken while all 45 were still waiting on the upstream.
            assert time.monotonic() - started < delay
            assert not any(f.done() for f in slow)
            statuses = [f.result().status_code for f in slow]
    assert statuses == [200] * 45
    assert max(timings["login"]) < 0.5, timings
    assert max(timings["feedback"]) < 0.5, timings


def test_a_user_with_too_many_answers_in_flight_gets_429_with_retry_after(fake_llm: FakeOpenAI) -> None:
    settings = web_settings(fake_llm, embedder=WORDS_EMBEDDER, user_concurrency=2)
    with serve_app(create_app(settings)) as url, ThreadPoolExecutor(2) as clients:
        fake_llm.delay = 3.0
        held = [clients.submit(_completion, url, f"slow {i}") for i in range(2)]
        _wait_for(lambda: len(fake_llm.requests) == 2, 2.5, "2 requests at the upstream")
        refused = _completion(url, "one too many")
        chat = httpx.post(f"{url}/api/chat", json={"message": "and from the web UI"}, timeout=30)
        for response in (refused, chat):
            assert response.status_code == 429, response.text
            assert response.headers["retry-after"].isdigit()
            assert "in flight" in response.json()["error"]["message"]
        assert [f.result().status_code for f in held] == [200, 200]
        fake_llm.delay = 0
        assert _completion(url, "now there is room").status_code == 200  # the slots were given back
    assert len(fake_llm.requests) == 3


def test_the_upstream_timeout_is_a_setting(fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINETUNE_UPSTREAM_TIMEOUT", "1")
    settings = web_settings(fake_llm, embedder=WORDS_EMBEDDER)
    assert settings.request_timeout == 1.0
    fake_llm.delay = 4.0
    with serve_app(create_app(settings)) as url:
        t0 = time.perf_counter()
        response = _completion(url, "too slow")
        took = time.perf_counter() - t0
    assert response.status_code == 502, response.text
    assert "did not answer within 1s" in response.json()["error"]["message"]
    assert took < 3.5


# -- body limit, against `minetune serve` in a subprocess ------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served_process(isolated_env: Path) -> Iterator[tuple[int, psutil.Process, str]]:
    """``minetune serve`` in a subprocess with one token issued; (port, process, token)."""
    isolated_env.mkdir(parents=True, exist_ok=True)
    db = Database(open_engine(load_settings().resolved_database_url))
    token = issue_token(db, "alice")
    db.close()
    port = _free_port()
    env = os.environ | {"MINETUNE_REOPTIMIZE": "0"}  # no embedder warm-up growing the RSS meanwhile
    code = "import sys; from minetune.cli import main; sys.argv[0] = 'minetune'; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port)], env=env)
    try:
        _wait_for(lambda: _accepts(port) or proc.poll() is not None, 30, "the server to start")
        assert proc.poll() is None, "minetune serve exited"
        yield port, psutil.Process(proc.pid), token
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def post_chunked(port: int, path: str, total: int, token: str | None = None) -> tuple[int, int, bytes]:
    """POST ``total`` bytes to ``path`` with chunked transfer encoding, over a raw socket, reading
    the answer as soon as one comes; (status, bytes of body sent, answer body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"{auth}Transfer-Encoding: chunked\r\n\r\n"
    )
    sock.sendall(head.encode())
    piece = b"x" * (64 * 1024)
    framed = b"%x\r\n%s\r\n" % (len(piece), piece)
    sent = 0
    try:
        while sent < total and not select.select([sock], [], [], 0)[0]:
            sock.sendall(framed)
            sent += len(piece)
        if sent >= total:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server stopped reading and closed: the answer is already on its way
    answer = b""
    try:
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except ConnectionResetError:
        pass
    sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, sent, answer.split(b"\r\n\r\n", 1)[-1]


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 1 << 30


def test_a_chunked_100mb_body_is_refused_at_the_limit_with_little_memory(
    served_process: tuple[int, psutil.Process, str],
) -> None:
    port, server, token = served_process
    # Code paths loaded first, so the RSS baseline holds them: a small chunked body is read whole.
    small = post_chunked(port, "/v1/feedback", 10, token)
    assert small[0] == 400, small  # read and parsed ("xxx…" is not JSON), not refused for size
    assert post_chunked(port, "/v1/chat/completions", 2 * MAX_BODY_BYTES, token)[0] == 413
    baseline = server.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], server.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        results = {
            "no token": post_chunked(port, "/v1/chat/completions", 100 * MB),
            "token": post_chunked(port, "/v1/chat/completions", 100 * MB, token),
            "web api": post_chunked(port, "/api/chat", 100 * MB, token),
        }
    finally:
        done.set()
        sampler.join()
    growth = (peak[0] - baseline) / MB
    for name, (status, sent, body) in results.items():
        assert status == 413, (name, status, body[:200])
        assert b"Request body too large" in body, name
        assert sent < 40 * MB, (name, sent)  # reading stopped near the 4 MB limit, not at 100 MB
    assert growth < 50, f"server RSS grew {growth:.1f} MB"
    assert server.is_running()
