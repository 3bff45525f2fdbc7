"""Added latency of minetune's OpenAI-compatible proxy, side by side with LiteLLM's proxy (issue 5).

Every arm talks to the same loopback upstream (bench/proxy_upstream.py: a fixed answer streamed as
20 SSE chunks, or one JSON body, with no artificial delay), with the same client (raw asyncio
HTTP/1.1, one keep-alive connection per concurrent stream, identical request bodies):

- ``direct``   client -> upstream (the floor);
- ``minetune`` client -> ``minetune serve --model openai-compatible:fake@<upstream>`` with a fresh
  MINETUNE_HOME whose store is seeded with rated turns (capture on, demo retrieval on: every request
  is stored and gets demos retrieved by embedding its message);
- ``litellm``  client -> ``litellm --config`` (pinned ``litellm[proxy]==1.106.2`` in its own venv,
  bench/.litellm-venv, created on first use; never a project dependency) with the upstream as an
  ``openai/`` model, no database, telemetry off, local cost map.

Per arm, mode (stream / json) and concurrency: time to first content chunk (TTFB; for json, the
first byte of the response) and total time, p50 and p99, the overhead added over ``direct`` at the
same percentile, and the CPU the proxy process tree spent per request. Arms are interleaved and the
whole set is repeated ``--rounds`` times; every number printed is the median over rounds.

    .venv/bin/python bench/proxy.py [--requests 200] [--concurrency 1,50] [--rounds 3] [--skip-litellm]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psutil

BENCH = Path(__file__).resolve().parent
LITELLM_VENV = BENCH / ".litellm-venv"
LITELLM_REQUIREMENT = "litellm[proxy]==1.106.2"
PROGRAM = "default"
LITELLM_KEY = "sk-bench-" + "0123456789abcdef" * 4  # loopback only; LiteLLM refuses to start without one
REQUEST_TIMEOUT_S = 60.0
WARMUP_TIMEOUT_S = 180.0

sys.path.insert(0, str(BENCH))
from proxy_upstream import ANSWER  # noqa: E402

TOPICS = ["cat", "tax return", "python error", "recipe", "trip to Rome", "budget", "poem", "meeting",
          "workout", "garden", "car repair", "birthday gift", "resume", "sleep", "coffee", "essay"]
ASKS = ["What should I know about my {t}?", "Can you help with the {t}?", "Give me one tip for the {t}.",
        "Summarise the {t} in two lines.", "Explain the {t} simply.", "What's a good name for my {t}?"]


def message(i: int) -> str:
    """The i-th user message: varied, so nothing downstream can serve it from a cache."""
    return ASKS[i % len(ASKS)].format(t=TOPICS[(i // len(ASKS)) % len(TOPICS)]) + f" (request {i})"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- client -------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One request: seconds to the first content (or first byte) and to the end; error when it failed."""

    ttfb: float = 0.0
    total: float = 0.0
    error: str | None = None


class Connection:
    """One keep-alive HTTP/1.1 connection that sends chat completion requests and times them."""

    def __init__(self, port: int, api_key: str) -> None:
        self.port = port
        self.api_key = api_key
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(self, body: dict[str, Any], timeout: float) -> Sample:
        payload = json.dumps(body).encode()
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
                f"authorization: Bearer {self.api_key}\r\n\r\n").encode()
        try:
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
            start = time.perf_counter()
            self._writer.write(head + payload)
            return await asyncio.wait_for(self._read(start, bool(body.get("stream"))), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.close()
            return Sample(error=f"{type(exc).__name__}: {exc}"[:200])

    async def _read(self, start: float, stream: bool) -> Sample:
        assert self._reader is not None
        head = await self._reader.readuntil(b"\r\n\r\n")
        first_byte = time.perf_counter() - start
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip().lower()
        content = SseContent() if stream and status == 200 else None
        raw = bytearray()
        first_content: float | None = None
        async for data in self._body(headers):
            if content is None:
                raw += data
            elif content.feed(data) and first_content is None:
                first_content = time.perf_counter() - start
        total = time.perf_counter() - start
        if headers.get("connection") == "close" or ("content-length" not in headers
                                                     and headers.get("transfer-encoding") != "chunked"):
            await self.close()
        if status != 200:
            return Sample(error=f"HTTP {status}: {bytes(raw[:200]).decode(errors='replace')}")
        if content is not None:
            if content.text != ANSWER:
                return Sample(error=f"streamed text differs from the upstream answer: {content.text[:80]!r}")
            return Sample(first_content or total, total)
        text = json.loads(raw)["choices"][0]["message"]["content"]
        if text != ANSWER:
            return Sample(error=f"answer differs from the upstream answer: {text[:80]!r}")
        return Sample(first_byte, total)

    async def _body(self, headers: dict[str, str]) -> Any:
        """The response body as it arrives (chunked, sized, or up to EOF)."""
        assert self._reader is not None
        reader = self._reader
        if headers.get("transfer-encoding") == "chunked":
            while True:
                size = int((await reader.readline()).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                data = await reader.readexactly(size + 2)
                yield data[:-2]
        elif "content-length" in headers:
            remaining = int(headers["content-length"])
            while remaining > 0:
                data = await reader.read(min(remaining, 65536))
                if not data:
                    raise asyncio.IncompleteReadError(b"", remaining)
                remaining -= len(data)
                yield data
        else:
            while data := await reader.read(65536):
                yield data


@dataclass
class SseContent:
    """Accumulates ``data:`` events; ``feed`` says whether the bytes carried answer text."""

    text: str = ""
    _buffer: bytes = b""

    def feed(self, data: bytes) -> bool:
        self._buffer += data.replace(b"\r\n", b"\n")
        *events, self._buffer = self._buffer.split(b"\n\n")
        got = False
        for event in events:
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if not payload or payload == b"[DONE]":
                    continue
                for choice in json.loads(payload).get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        self.text += piece
                        got = True
        return got


async def run_batch(arm: Arm, stream: bool, requests: int, concurrency: int, first: int,
                    timeout: float = REQUEST_TIMEOUT_S) -> list[Sample]:
    """``requests`` chat completions over ``concurrency`` connections, each worker back to back."""
    counter = itertools.count(first)
    end = first + requests
    samples: list[Sample] = []

    async def worker() -> None:
        connection = Connection(arm.port, arm.api_key)
        try:
            while (i := next(counter)) < end:
                messages = [{"role": "user", "content": message(i)}]
                body: dict[str, Any] = {"model": arm.model, "messages": messages, "temperature": 0.7,
                                        "max_tokens": 256}
                if stream:
                    body["stream"] = True
                samples.append(await connection.request(body, timeout))
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


# -- servers ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server subprocess, its log, and the CPU its process tree has used."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def cpu_seconds(self) -> float:
        try:
            root = psutil.Process(self.process.pid)
            total = 0.0
            for proc in [root, *root.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
            return total
        except psutil.Error:
            return float("nan")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start(name: str, cmd: list[str], env: dict[str, str], port: int, logs: Path, stack: ExitStack) -> Server:
    log = logs / f"{name}.log"
    handle: IO[bytes] = stack.enter_context(log.open("wb"))
    process = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=logs)
    server = Server(name, process, port, log)
    stack.callback(server.stop)
    return server


def wait_ready(server: Server, timeout: float = 120.0) -> None:
    """Wait until the server answers HTTP on its port; fail with its log when it dies or hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1) as sock:
                sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
                if sock.recv(12).startswith(b"HTTP/1."):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{server.name} did not answer on port {server.port} within {timeout:g}s:\n"
                     f"{server.log_tail()}")


def start_upstream(logs: Path, stack: ExitStack) -> Server:
    port = free_port()
    cmd = [sys.executable, str(BENCH / "proxy_upstream.py"), "--port", str(port)]
    server = start("upstream", cmd, dict(os.environ), port, logs, stack)
    wait_ready(server, 30)
    return server


def seed_minetune(env: dict[str, str], spec: str, turns: int) -> None:
    """Rate ``turns`` answers through ``minetune chat`` (real store, real demo index, real embedder)."""
    lines: list[str] = []
    for i in range(turns):
        lines += [f"Seed question {i}: " + message(10_000 + i), f"/rate {5 if i % 4 else 2}", "/new"]
    result = subprocess.run([sys.executable, "-m", "minetune.cli", "chat", "--model", spec],
                            input="\n".join(lines) + "\n", env=env, capture_output=True, text=True)
    if result.returncode != 0:
        output = result.stdout[-2000:] + result.stderr[-2000:]
        raise SystemExit(f"seeding the minetune store failed:\n{output}")


def start_minetune(upstream: Server, home: Path, seed_turns: int, extra_env: dict[str, str], logs: Path,
                   stack: ExitStack) -> Server:
    spec = f"openai-compatible:fake@http://127.0.0.1:{upstream.port}/v1"
    # One user sends every stream here: the per-user in-flight limit (16 by default) is raised
    # above the bench's concurrency so that it measures latency, not the limit's 429s.
    env = {**os.environ, "MINETUNE_HOME": str(home), "MINETUNE_REOPTIMIZE": "true",
           "MINETUNE_USER_CONCURRENCY": "256"}
    for name in ("MINETUNE_DATABASE_URL", "MINETUNE_MODEL", "MINETUNE_EMBEDDER"):
        env.pop(name, None)
    seed_minetune(env, spec, seed_turns)
    port = free_port()
    cmd = [sys.executable, "-m", "minetune.cli", "serve", "--port", str(port), "--model", spec]
    server = start("minetune", cmd, {**env, **extra_env}, port, logs, stack)
    wait_ready(server)
    return server


def ensure_litellm() -> tuple[Path, str]:
    """The LiteLLM venv's ``litellm`` executable and version, creating the venv on first use."""
    python = LITELLM_VENV / "bin" / "python"
    executable = LITELLM_VENV / "bin" / "litellm"
    if not executable.exists():
        print(f"Installing {LITELLM_REQUIREMENT} into {LITELLM_VENV} (first run only; a few minutes)...",
              file=sys.stderr, flush=True)
        try:
            if not python.exists():
                subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", LITELLM_REQUIREMENT], check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            shutil.rmtree(LITELLM_VENV, ignore_errors=True)
            raise SystemExit(
                f"Could not install {LITELLM_REQUIREMENT} into {LITELLM_VENV} ({exc}). Install it there by "
                "hand, or run with --skip-litellm to measure minetune against direct only.") from None
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True, text=True, check=True).stdout.strip()
    return executable, version


def start_litellm(upstream: Server, executable: Path, logs: Path, stack: ExitStack) -> Server:
    config = logs / "litellm.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "model_list": [{"model_name": "fake", "litellm_params": {
            "model": "openai/fake", "api_base": f"http://127.0.0.1:{upstream.port}/v1", "api_key": "bench"}}],
        "litellm_settings": {"telemetry": False},
        "general_settings": {"master_key": LITELLM_KEY},
    }, indent=2))
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
           "LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE": "True"}
    for name in ("DATABASE_URL", "LITELLM_MASTER_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(name, None)
    port = free_port()
    cmd = [str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
           "--num_workers", "1"]
    server = start("litellm", cmd, env, port, logs, stack)
    wait_ready(server, 180)
    return server


# -- measurement --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    name: str
    port: int
    model: str
    cpu_of: Server  # whose CPU is charged to this arm: the proxy's (the upstream's for direct)
    api_key: str = "bench"


@dataclass
class Cell:
    """Per-round statistics of one (mode, concurrency, arm)."""

    rounds: list[dict[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.rounds)


def summarize(samples: list[Sample], cpu_s: float) -> dict[str, float]:
    ttfb = [s.ttfb * 1000 for s in samples if s.error is None]
    total = [s.total * 1000 for s in samples if s.error is None]
    if not ttfb:
        return {}
    return {"ttfb50": percentile(ttfb, 0.50), "ttfb99": percentile(ttfb, 0.99),
            "total50": percentile(total, 0.50), "total99": percentile(total, 0.99),
            "cpu": cpu_s * 1000 / len(samples)}


async def warm_up(arm: Arm, modes: list[str], concurrency: int) -> None:
    """First requests load the embedder and fill the pools; they are not measured."""
    for mode in modes:
        for sample in await run_batch(arm, mode == "stream", 3, 1, 90_000, WARMUP_TIMEOUT_S):
            if sample.error:
                raise SystemExit(f"{arm.name}: warm-up request failed: {sample.error}")
        await run_batch(arm, mode == "stream", concurrency, concurrency, 91_000,
                        WARMUP_TIMEOUT_S)


async def measure(arms: list[Arm], modes: list[str], levels: list[int], requests: int, rounds: int,
                  pause: float, profile_dir: Path | None = None) -> dict[tuple[str, int, str], Cell]:
    cells: dict[tuple[str, int, str], Cell] = {}
    for arm in arms:
        print(f"warming up {arm.name}...", file=sys.stderr, flush=True)
        await warm_up(arm, modes, max(levels))
    with ExitStack() as profilers:
        if profile_dir is not None:
            for arm in arms[1:]:
                profilers.enter_context(py_spy(arm.cpu_of, profile_dir / f"{arm.name}.txt"))
        await _rounds(arms, modes, levels, requests, rounds, pause, cells)
    return cells


async def _rounds(arms: list[Arm], modes: list[str], levels: list[int], requests: int, rounds: int,
                  pause: float, cells: dict[tuple[str, int, str], Cell]) -> None:
    index = 0
    for round_number in range(rounds):
        for mode, level in itertools.product(modes, levels):
            shift = (round_number + levels.index(level)) % len(arms)
            for arm in arms[shift:] + arms[:shift]:  # rotate the order so no arm always goes first
                await asyncio.sleep(pause)  # let background work of the previous batch settle
                cpu_before = arm.cpu_of.cpu_seconds()
                samples = await run_batch(arm, mode == "stream", requests, level, index)
                await asyncio.sleep(pause)  # charge work done after the responses (capture) to this batch
                cpu = arm.cpu_of.cpu_seconds() - cpu_before
                index += requests
                cell = cells.setdefault((mode, level, arm.name), Cell())
                cell.requests += len(samples)
                cell.errors += [s.error for s in samples if s.error]
                if stats := summarize(samples, cpu):
                    cell.rounds.append(stats)
            print(f"round {round_number + 1}/{rounds}: {mode} x{level} done", file=sys.stderr, flush=True)


@contextmanager
def py_spy(server: Server, output: Path) -> Iterator[None]:
    """Sample every thread of ``server``'s process tree with py-spy while the block runs."""
    executable = shutil.which("py-spy") or str(LITELLM_VENV / "bin" / "py-spy")
    if not Path(executable).exists():
        raise SystemExit(f"--profile-dir needs py-spy: {LITELLM_VENV}/bin/python -m pip install py-spy")
    cmd = [executable, "record", "--pid", str(server.process.pid), "--subprocesses", "--rate", "100",
           "--format", "raw", "--nonblocking", "-o", str(output)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.kill()


def profile_summary(path: Path, top: int = 25) -> Iterator[str]:
    """The functions with the largest share of py-spy samples (inclusive), from a raw (collapsed) file."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            name, _, where = frame.partition(" (")
            where = where.split(":", 1)[0].split("site-packages/")[-1].split("/src/")[-1]
            key = f"{name} ({where})"
            inclusive[key] = inclusive.get(key, 0) + int(count)
    yield f"{path.stem}: {total} samples; share of samples that include each function:"
    for key, samples in sorted(inclusive.items(), key=lambda item: -item[1])[:top]:
        yield f"  {100 * samples / max(total, 1):5.1f}%  {key}"


def report(cells: dict[tuple[str, int, str], Cell], arms: list[Arm], modes: list[str],
           levels: list[int]) -> Iterator[str]:
    yield (f"{'mode':<6} {'conc':>4} {'arm':<9} {'ok/n':>9} {'ttfb p50':>9} {'ttfb p99':>9} "
           f"{'total p50':>9} {'total p99':>9} {'+ttfb p50':>9} {'+ttfb p99':>9} "
           f"{'+total p50':>10} {'+total p99':>10} {'cpu ms/req':>10}")
    verdicts = []
    for mode, level in itertools.product(modes, levels):
        direct = cells.get((mode, level, "direct"))
        for arm in arms:
            cell = cells.get((mode, level, arm.name))
            if cell is None or not cell.rounds:
                yield f"{mode:<6} {level:>4} {arm.name:<9} all requests failed"
                continue
            ok = f"{cell.requests - len(cell.errors)}/{cell.requests}"
            values = [cell.median(k) for k in ("ttfb50", "ttfb99", "total50", "total99")]
            added = ["" if direct is None or arm.name == "direct" or not direct.rounds
                     else f"{v - direct.median(k):+.2f}"
                     for v, k in zip(values, ("ttfb50", "ttfb99", "total50", "total99"), strict=True)]
            cpu = cell.median("cpu")
            yield (f"{mode:<6} {level:>4} {arm.name:<9} {ok:>9} " + " ".join(f"{v:>9.2f}" for v in values)
                   + f" {added[0]:>9} {added[1]:>9} {added[2]:>10} {added[3]:>10} {cpu:>10.2f}")
        mine, peer = cells.get((mode, level, "minetune")), cells.get((mode, level, "litellm"))
        if direct and direct.rounds and mine and mine.rounds and peer and peer.rounds:
            keys = ("ttfb50", "ttfb99", "total50", "total99") if mode == "stream" else ("total50", "total99")
            met = {k: mine.median(k) - direct.median(k) <= peer.median(k) - direct.median(k) for k in keys}
            verdict = "met" if all(met.values()) else "MISSED"
            detail = ", ".join(f"{k[:-2]} p{k[-2:]} {'yes' if ok else 'no'}" for k, ok in met.items())
            verdicts.append(f"{mode} x{level}: minetune's added latency <= LiteLLM's: {verdict} ({detail})")
    yield ""
    yield from verdicts
    for (mode, level, name), cell in cells.items():
        if cell.errors:
            yield f"{name} {mode} x{level}: {len(cell.errors)} errors, e.g. {cell.errors[0]}"


def source_revision() -> str:
    """The commit measured, with ``+dirty`` when src/ has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=BENCH.parent, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--", "src") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per arm, mode, level and round")
    parser.add_argument("--concurrency", default="1,50", help="comma-separated concurrent streams")
    parser.add_argument("--modes", default="stream,json", help="stream and/or json (non-streaming)")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions; numbers are medians over rounds")
    parser.add_argument("--seed-turns", type=int, default=40, help="rated turns seeded into minetune's store")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds of quiet before and after a batch")
    parser.add_argument("--skip-litellm", action="store_true", help="measure direct and minetune only")
    parser.add_argument("--skip-minetune", action="store_true", help="measure direct and LiteLLM only")
    parser.add_argument("--minetune-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for minetune serve (experiments, e.g. OMP_NUM_THREADS=1)")
    parser.add_argument("--json", type=Path, help="also write the medians to this JSON file")
    parser.add_argument("--profile-dir", type=Path, help="record the proxies with py-spy into this folder "
                        "(sampling slows them: profile runs are not for the table)")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not levels or min(levels) < 1 or args.requests < 1 or set(modes) - {"stream", "json"} or not modes:
        parser.error("--concurrency takes positive integers, --modes stream and/or json, --requests >= 1")
    if any("=" not in item for item in args.minetune_env):
        parser.error("--minetune-env takes KEY=VALUE")
    extra_env = dict(item.split("=", 1) for item in args.minetune_env)
    if args.profile_dir:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    litellm = None if args.skip_litellm else ensure_litellm()

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-proxy-")))
        upstream = start_upstream(work, stack)
        arms = [Arm("direct", upstream.port, "fake", upstream)]
        if not args.skip_minetune:
            print("seeding minetune and starting minetune serve...", file=sys.stderr, flush=True)
            mine = start_minetune(upstream, work / "home", args.seed_turns, extra_env, work, stack)
            arms.append(Arm("minetune", mine.port, f"minetune/{PROGRAM}", mine))
        if litellm is not None:
            print("starting the LiteLLM proxy...", file=sys.stderr, flush=True)
            peer = start_litellm(upstream, litellm[0], work, stack)
            arms.append(Arm("litellm", peer.port, "fake", peer, LITELLM_KEY))
        cells = asyncio.run(measure(arms, modes, levels, args.requests, args.rounds, args.pause,
                                    args.profile_dir))

    load = os.getloadavg()
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.system()} {platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()} · load average (1 min) "
          f"{load_before[0]:.2f} before, {load[0]:.2f} after · "
          f"LiteLLM {litellm[1] if litellm else 'skipped'} · minetune {source_revision()}")
    print(f"{args.requests} requests per cell and round, {args.rounds} rounds (medians over rounds), "
          f"{args.seed_turns} seeded rated turns; times in ms; +x = added over direct at the same percentile"
          + (f"; minetune env {' '.join(args.minetune_env)}" if args.minetune_env else ""))
    for line in report(cells, arms, modes, levels):
        print(line)
    if args.json:
        medians = {f"{mode} x{level} {name}": {"requests": cell.requests, "errors": len(cell.errors),
                                                **{k: cell.median(k) for k in cell.rounds[0]}}
                   for (mode, level, name), cell in cells.items() if cell.rounds}
        args.json.write_text(json.dumps({
            "when": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "load_before": load_before[0], "load_after": load[0],
            "litellm": litellm[1] if litellm else None, "minetune": source_revision(),
            "minetune_env": args.minetune_env,
            "requests": args.requests, "rounds": args.rounds, "cells": medians}, indent=1))
    if args.profile_dir:
        for arm in arms[1:]:
            path = args.profile_dir / f"{arm.name}.txt"
            if path.exists():
                print()
                for line in profile_summary(path):
                    print(line)


if __name__ == "__main__":
    main()
