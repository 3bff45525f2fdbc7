"""Reliability of ``minetune serve`` under faults, over real HTTP on 127.0.0.1 (issue 11).

Three tables:

1. **kill -9**: ratings posted to ``/v1/feedback`` by a few threads while streams are in flight;
   the server is killed with SIGKILL; then acknowledged ratings are looked up in the store
   (lost = acknowledged but not stored), and half answers are checked: none may be complete or
   rated, and after a restart none may still be ``streaming``. SQLite, and PostgreSQL with
   ``--postgres-url`` (that database's ``public`` schema is dropped and recreated).
2. **N streams × T seconds**: N clients stream answers from a slow fake upstream for T seconds,
   every fifth one hanging up mid-stream; errors, p50/p99 time to the last event, records lost
   (a stream the client saw end with ``[DONE]`` whose attempt is not complete with that text),
   half answers left ``streaming`` or stored as complete, and the server's RSS growth.
3. **hostile inputs**: a list of malformed requests; clean = answered 4xx (not 5xx, not a dropped
   connection) and the next request on a fresh connection still served.

    .venv/bin/python bench/reliability.py                 # SQLite only, small defaults (~1-2 min)
    .venv/bin/python bench/reliability.py --streams 50 --seconds 60 --postgres-url postgresql://...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

# -- a slow fake upstream ---------------------------------------------------------------------------


class Upstream:
    """OpenAI-compatible on 127.0.0.1: streams ``count`` chunks one every ``interval`` s, then
    ``finish_reason`` and ``[DONE]``; non-streaming requests get the whole text at once."""

    def __init__(self, count: int, interval: float) -> None:
        self.count, self.interval = count, interval
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def text(self) -> str:
        return "".join(f"w{i} " for i in range(self.count))

    @property
    def spec(self) -> str:
        return f"openai-compatible:bench@http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(up: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if not body.get("stream"):
                message = {"role": "assistant", "content": up.text()}
                data = json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data.encode())
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            with suppress(OSError):
                for i in range(up.count):
                    self._send(
                        {"choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
                    )
                    time.sleep(up.interval)
                self._send({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                self.wfile.write(b"data: [DONE]\n\n")

        def _send(self, payload: dict[str, Any]) -> None:
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            self.wfile.flush()

    return Handler


# -- the server under test --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(home: Path, database_url: str, model: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``minetune serve`` in its own process; yields (process, base URL)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINETUNE_")}
    env |= {
        "MINETUNE_HOME": str(home),
        "MINETUNE_DATABASE_URL": database_url,
        "MINETUNE_MODEL": model,
        "MINETUNE_REOPTIMIZE": "0",
        "MINETUNE_OLLAMA_URL": "http://127.0.0.1:9",
        # One user runs every stream here: lift the per-user slot limit (bench/limits.py measures it),
        # so N × T measures stream handling rather than 429s.
        "MINETUNE_USER_CONCURRENCY": "1024",
    }
    command = [sys.executable, "-m", "minetune.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError("minetune serve exited at start-up")
            with suppress(httpx.HTTPError):
                if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("minetune serve did not start")
            time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_store(home: Path, database_url: str) -> Any:
    from minetune.config import load_settings
    from minetune.store import Store

    os.environ["MINETUNE_DATABASE_URL"] = database_url
    return Store.open(load_settings(home=home, reoptimize=False))


def fresh_postgres(url: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def chat(client: httpx.Client, url: str, content: str, stream: bool = False) -> httpx.Response:
    body = {"model": "minetune/default", "messages": [{"role": "user", "content": content}], "stream": stream}
    return client.post(url + "/v1/chat/completions", json=body)


# -- 1. kill -9 -------------------------------------------------------------------------------------


def kill_nine(backend: str, database_url: str, seconds: float, workers: int = 4) -> dict[str, Any]:
    """Ratings acknowledged vs stored, and half answers, across a SIGKILL of the server."""
    from minetune.store.schema import Attempt, Feedback

    home = Path(tempfile.mkdtemp(prefix="mt-rel-"))
    up = Upstream(count=100_000, interval=0.05)  # streams that never finish on their own
    acked: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    try:
        with serve(home, database_url, up.spec) as (proc, url):
            with httpx.Client(timeout=30) as client:  # answers to rate: complete, non-streaming
                ids = [chat(client, url, f"q{i}").json()["id"] for i in range(8)]

            def rater(n: int) -> None:
                with httpx.Client(timeout=10) as c:
                    k = 0
                    while not stop.is_set():
                        k += 1
                        body = {"response_id": ids[(n + k) % len(ids)], "stars": 1 + k % 5}
                        try:
                            r = c.post(url + "/v1/feedback", json=body)
                        except httpx.HTTPError:
                            return
                        if r.status_code == 200:
                            with lock:
                                acked.append(int(r.json()["feedback_id"]))

            streams: list[tuple[httpx.Response, Iterator[str]]] = []
            stream_clients = [httpx.Client(timeout=30) for _ in range(3)]
            for n, c in enumerate(stream_clients):  # half answers in flight at the kill
                body = {
                    "model": "minetune/default",
                    "messages": [{"role": "user", "content": f"s{n}"}],
                    "stream": True,
                }
                response = c.send(
                    c.build_request("POST", url + "/v1/chat/completions", json=body), stream=True
                )
                lines = response.iter_lines()  # kept: dropping it would hang up
                for line in lines:
                    if '"content": "w' in line:
                        break
                streams.append((response, lines))
            threads = [threading.Thread(target=rater, args=(n,)) for n in range(workers)]
            for t in threads:
                t.start()
            time.sleep(seconds)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            stop.set()
            for t in threads:
                t.join()
            for (response, _lines), c in zip(streams, stream_clients, strict=True):
                with suppress(httpx.HTTPError):
                    response.close()
                c.close()
        store = open_store(home, database_url)
        with store.db.transaction() as s:
            stored = set(s.scalars(select(Feedback.id).where(Feedback.id.in_(acked)))) if acked else set()
            statuses = dict(s.execute(select(Attempt.status, func.count()).group_by(Attempt.status)).all())
            rated_half = s.scalar(
                select(func.count()).select_from(Feedback).join(Attempt).where(Attempt.status != "complete")
            )
        with serve(home, database_url, up.spec):  # start-up settles what the dead process left
            pass
        with store.db.transaction() as s:
            after = dict(s.execute(select(Attempt.status, func.count()).group_by(Attempt.status)).all())
        store.close()
    finally:
        up.close()
    return {
        "backend": backend,
        "acknowledged": len(acked),
        "stored": len(stored),
        "lost": len(acked) - len(stored),
        "half answers at kill": statuses.get("streaming", 0),
        "rated half answers": rated_half or 0,
        "streaming after restart": after.get("streaming", 0),
        "interrupted after restart": after.get("interrupted", 0),
    }


# -- 2. N streams x T seconds -----------------------------------------------------------------------


def streams(database_url: str, n: int, seconds: float, chunks: int, interval: float) -> dict[str, Any]:
    """N clients streaming for T seconds, every fifth stream hung up after its first delta."""
    from minetune.store.schema import Attempt

    home = Path(tempfile.mkdtemp(prefix="mt-rel-"))
    up = Upstream(count=chunks, interval=interval)
    done: list[tuple[str, float]] = []  # (response id, seconds) of streams that ended with [DONE]
    hung: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    try:
        with serve(home, database_url, up.spec) as (proc, url):
            rss_before = rss_kib(proc.pid)
            deadline = time.monotonic() + seconds

            def client(k: int) -> None:
                j = 0
                with httpx.Client(timeout=60) as c:
                    while time.monotonic() < deadline:
                        j += 1
                        hang_up = j % 5 == 0
                        body = {
                            "model": "minetune/default",
                            "messages": [{"role": "user", "content": f"client {k} question {j}"}],
                            "stream": True,
                        }
                        start = time.perf_counter()
                        try:
                            with c.stream("POST", url + "/v1/chat/completions", json=body) as r:
                                rid = r.headers.get("x-minetune-response-id", "")
                                if r.status_code != 200:
                                    raise RuntimeError(f"HTTP {r.status_code}")
                                text, ended = [], False
                                for line in r.iter_lines():
                                    if line == "data: [DONE]":
                                        ended = True
                                    elif line.startswith("data: {"):
                                        event = json.loads(line[6:])
                                        if "error" in event:
                                            raise RuntimeError(event["error"]["message"])
                                        delta = (
                                            event["choices"][0]["delta"].get("content")
                                            if event["choices"]
                                            else None
                                        )
                                        if delta:
                                            text.append(delta)
                                            if hang_up:
                                                break
                            with lock:
                                if hang_up:
                                    hung.append(rid)
                                elif ended and "".join(text) == up.text():
                                    done.append((rid, time.perf_counter() - start))
                                else:
                                    errors.append(f"{rid}: ended without [DONE]")
                        except (httpx.HTTPError, RuntimeError) as exc:
                            with lock:
                                errors.append(f"{type(exc).__name__}: {exc}")
                        if hang_up:  # a fresh connection after hanging up
                            c.close()
                            c = httpx.Client(timeout=60)  # noqa: PLW2901 - replaced on purpose

            threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            store = open_store(home, database_url)
            settle = time.monotonic() + 30
            while time.monotonic() < settle:
                with store.db.transaction() as s:
                    left = s.scalar(
                        select(func.count()).select_from(Attempt).where(Attempt.status == "streaming")
                    )
                if not left:
                    break
                time.sleep(0.2)
            rss_after = rss_kib(proc.pid)
            with store.db.transaction() as s:
                rows = {a.id: (a.status, a.response) for a in s.scalars(select(Attempt))}
            store.close()
    finally:
        up.close()
    lost = sum(1 for rid, _ in done if rows.get(int(rid[3:])) != ("complete", up.text()))
    hung_ids = [int(rid[3:]) for rid in hung if rid]
    latencies = sorted(t for _, t in done)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    return {
        "streams": len(done) + len(hung) + len(errors),
        "finished": len(done),
        "hung up": len(hung),
        "errors": len(errors),
        "error sample": errors[:3],
        "p50 s": round(statistics.median(latencies), 3) if latencies else None,
        "p99 s": round(pct(0.99), 3) if latencies else None,
        "records lost": lost,
        "hang-ups interrupted": sum(1 for i in hung_ids if rows.get(i, ("",))[0] == "interrupted"),
        "hang-ups complete (ran to the end)": sum(
            1 for i in hung_ids if rows.get(i) == ("complete", up.text())
        ),
        "half answers streaming/complete-looking": sum(
            1
            for i in hung_ids
            if rows.get(i, ("",))[0] == "streaming"
            or (rows.get(i, ("",))[0] == "complete" and rows[i][1] != up.text())
        ),
        "RSS before MiB": round(rss_before / 1024, 1),
        "RSS growth MiB": round((rss_after - rss_before) / 1024, 1),
    }


# -- 3. hostile inputs ------------------------------------------------------------------------------

BIG = str(2**63)
HOSTILE: list[tuple[str, str, Any, dict[str, str]]] = [
    # (method, path, body: dict → JSON, bytes → raw, None → none, headers)
    ("GET", f"/api/conversations/{BIG}", None, {}),
    ("GET", f"/api/attempts/{BIG}/why", None, {}),
    ("POST", f"/api/attempts/{BIG}/rate", {"stars": 5}, {}),
    ("POST", f"/api/attempts/{BIG}/retry", {}, {}),
    ("GET", "/api/conversations/-1", None, {}),
    ("GET", f"/?c={BIG}", None, {}),
    ("POST", "/api/chat", {"message": "hi", "conversation_id": int(BIG)}, {}),
    ("POST", "/api/chat", b'{"message": "\\ud800"}', {"Content-Type": "application/json"}),
    ("POST", "/api/chat", {"message": ""}, {}),
    ("POST", "/api/chat", b"not json", {"Content-Type": "application/json"}),
    ("POST", "/api/chat", b"[" * 100_000 + b"]" * 100_000, {"Content-Type": "application/json"}),
    ("POST", "/api/attempts/1/rate", {"stars": "9" * 5000}, {}),
    ("POST", "/api/attempts/1/rate", {"stars": 5, "critique": "\ud800"}, {}),
    (
        "POST",
        "/v1/chat/completions",
        b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
        {"Content-Type": "application/json"},
    ),
    ("POST", "/v1/chat/completions", {"messages": []}, {}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, {}),
    (
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "video", "video": "x"}]}]},
        {},
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
        {},
    ),
    ("POST", "/v1/chat/completions", b"\xff\xfe", {"Content-Type": "application/json"}),
    ("POST", "/v1/feedback", {"response_id": "mt-" + "9" * 30, "stars": 5}, {}),
    ("POST", "/v1/feedback", {"response_id": "mt-1", "stars": 10**100}, {}),
    ("POST", "/v1/feedback", {"response_id": "mt-1", "stars": "5"}, {}),
    ("POST", "/v1/feedback", {"response_id": ["mt-1"], "stars": 5}, {}),
    (
        "POST",
        "/v1/feedback",
        b'{"response_id": "mt-1", "stars": 5, "critique": "\\udfff"}',
        {"Content-Type": "application/json"},
    ),
    ("GET", "/api/dataset?min_stars=" + "9" * 5000, None, {}),
    ("GET", "/api/conversations?program=" + "x" * 10_000, None, {}),
]


def hostile(database_url: str) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="mt-rel-"))
    up = Upstream(count=3, interval=0.0)
    clean, dirty = 0, []
    try:
        with serve(home, database_url, up.spec) as (_proc, url), httpx.Client(timeout=30) as client:
            for method, path, body, headers in HOSTILE:
                kwargs: dict[str, Any] = {"headers": headers}
                if isinstance(body, bytes):
                    kwargs["content"] = body
                elif body is not None:
                    try:
                        kwargs["content"] = json.dumps(body).encode("utf-8", "surrogatepass")
                    except (TypeError, ValueError):
                        kwargs["content"] = json.dumps(body, ensure_ascii=True).encode()
                    kwargs["headers"] = {"Content-Type": "application/json"} | headers
                try:
                    r = client.request(method, url + path, **kwargs)
                    status = r.status_code
                except httpx.HTTPError as exc:
                    status = -1
                    dirty.append(f"{method} {path[:40]}: {type(exc).__name__}")
                    client = httpx.Client(timeout=30)  # noqa: PLW2901 - a fresh connection
                    continue
                follow = client.get(url + "/v1/models").status_code
                if 400 <= status < 500 and follow == 200:
                    clean += 1
                else:
                    dirty.append(f"{method} {path[:40]} → {status} (then {follow})")
    finally:
        up.close()
    return {"tried": len(HOSTILE), "clean (4xx, server still serving)": clean, "not clean": dirty}


# -- report -----------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    keys = [k for k in rows[0] if not isinstance(rows[0][k], list)]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10, help="concurrent streaming clients (N)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long they stream (T)")
    parser.add_argument("--chunks", type=int, default=40, help="chunks per upstream answer")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between upstream chunks")
    parser.add_argument("--kill-after", type=float, default=3.0, help="seconds of ratings before kill -9")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("MINETUNE_BENCH_POSTGRES_URL"),
        help="also run on this PostgreSQL database (its public schema is wiped)",
    )
    args = parser.parse_args()

    sqlite = lambda: f"sqlite:///{tempfile.mkdtemp(prefix='mt-rel-db-')}/minetune.db"  # noqa: E731
    print(
        f"# reliability.py — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}"
    )
    print(
        f"parameters: streams={args.streams} seconds={args.seconds:g} chunks={args.chunks} "
        f"interval={args.interval:g} kill_after={args.kill_after:g}\n"
    )

    kills = [kill_nine("sqlite", sqlite(), args.kill_after)]
    if args.postgres_url:
        kills.append(kill_nine("postgresql", fresh_postgres(args.postgres_url), args.kill_after))
    print("## kill -9 during ratings and streams\n")
    print(table(kills) + "\n")

    print(f"## {args.streams} streams × {args.seconds:g} s (SQLite; every 5th stream hangs up)\n")
    result = streams(sqlite(), args.streams, args.seconds, args.chunks, args.interval)
    print(table([result]))
    if result["error sample"]:
        print("errors, first few:", "; ".join(result["error sample"]))
    print()

    print("## hostile inputs\n")
    found = hostile(sqlite())
    print(table([found]))
    for line in found["not clean"]:
        print(f"- not clean: {line}")


if __name__ == "__main__":
    main()
