"""Bounded resources of ``minetune serve`` (issue 11 item 2), measured as a hostile client would.

Runs ``minetune serve`` in a subprocess (fresh MINETUNE_HOME, SQLite, the fake upstream of
tests/fakes.py answering after ``--delay`` seconds) and prints:

1. latency of ``GET /login``, a static file and ``POST /v1/feedback`` idle, then while
   ``--slow`` requests wait on the slow upstream (p50 / max over ``--samples`` each);
2. how many of those slow requests were answered 200 and how many 429 (per-user cap);
3. for chunked bodies of 100 MB and 1 GB (no token): the status, the bytes the client got to
   send before the server stopped reading, and the server's peak RSS growth.

    .venv/bin/python bench/limits.py [--slow 45] [--delay 20] [--samples 20] [--user-concurrency 64]
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakes import FakeOpenAI  # noqa: E402
from test_limits import post_chunked  # noqa: E402

MB = 1024 * 1024
T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _timed(fn: Callable[[], object], samples: int) -> tuple[float, float]:
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slow", type=int, default=45)
    parser.add_argument("--delay", type=float, default=20.0)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--user-concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home, FakeOpenAI() as fake:
        port = _free_port()
        env = os.environ | {
            "MINETUNE_HOME": home,
            "MINETUNE_REOPTIMIZE": "0",
            "MINETUNE_MODEL": f"openai-compatible:fake@{fake.base_url}",
            "MINETUNE_USER_CONCURRENCY": str(args.user_concurrency),
        }
        code = "import sys; from minetune.cli import main; sys.argv[0] = 'minetune'; main()"
        proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port)], env=env)
        try:
            run(port, psutil.Process(proc.pid), fake, args)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def run(port: int, server: psutil.Process, fake: FakeOpenAI, args: argparse.Namespace) -> None:
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/login", timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    http = httpx.Client(base_url=url, timeout=120)
    body = {"model": "minetune", "messages": [{"role": "user", "content": "hello"}]}
    response_id = http.post("/v1/chat/completions", json=body).json()["id"]
    static = "/static/" + sorted(p.name for p in (ROOT / "src/minetune/server/static").iterdir())[0]
    probes = {
        "GET /login": lambda: http.get("/login").raise_for_status(),
        f"GET {static}": lambda: http.get(static).raise_for_status(),
        "POST /v1/feedback": lambda: http.post(
            "/v1/feedback", json={"response_id": response_id, "stars": 4}
        ).raise_for_status(),
    }
    idle = {name: _timed(fn, args.samples) for name, fn in probes.items()}
    # The rating made a demo: this request loads the demo embedder (MiniLM), so the slow phase
    # measures the pools, not 45 requests waiting for the first model load.
    http.post("/v1/chat/completions", json=body).raise_for_status()
    fake.delay = args.delay

    def slow_call(i: int) -> int:
        streamed = body | {"stream": i % 3 == 0}
        return httpx.post(f"{url}/v1/chat/completions", json=streamed, timeout=120).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(args.slow) as pool:
        futures = [pool.submit(slow_call, i) for i in range(args.slow)]
        expected = 2 + min(args.slow, args.user_concurrency)  # and the two quick ones before
        while len(fake.requests) < expected and time.monotonic() - started < args.delay / 4:
            time.sleep(0.05)
        at_upstream = time.monotonic() - started
        waiting = len(fake.requests) - 2
        busy = {name: _timed(fn, args.samples) for name, fn in probes.items()}
        measured_in_flight = time.monotonic() - started < args.delay
        statuses = [f.result() for f in futures]
    fake.delay = 0
    print(f"{args.slow} requests to a {args.delay:g} s upstream (user_concurrency={args.user_concurrency}); "
          f"{waiting} at the upstream after {at_upstream:.2f} s; "
          f"probes done while in flight: {measured_in_flight}")
    print("| probe | idle p50 ms | idle max ms | busy p50 ms | busy max ms |\n|---|---:|---:|---:|---:|")
    for name in probes:
        print(f"| {name} | {idle[name][0] * 1000:.1f} | {idle[name][1] * 1000:.1f} | "
              f"{busy[name][0] * 1000:.1f} | {busy[name][1] * 1000:.1f} |")
    print(f"slow requests: {statuses.count(200)} × 200, {statuses.count(429)} × 429, "
          f"other: {[s for s in statuses if s not in (200, 429)]}")

    print("\n| chunked body (no token) | status | client sent MB | server peak RSS growth MB | s |")
    print("|---|---:|---:|---:|---:|")
    for size in (100 * MB, 1024 * MB):
        t0 = time.perf_counter()
        post = functools.partial(post_chunked, port, "/v1/chat/completions", size)
        (status, sent, _answer), growth = _peak_growth(server, post)
        took = time.perf_counter() - t0
        print(f"| {size // MB} MB | {status} | {sent / MB:.1f} | {growth / MB:.1f} | {took:.2f} |")


def _peak_growth(server: psutil.Process, fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()``'s result and the server's peak RSS growth (bytes) while it ran, sampled every 5 ms."""
    baseline = server.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
    finally:
        done.set()
        sampler.join()
    return result, peak - baseline


if __name__ == "__main__":
    main()
