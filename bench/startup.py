"""Start-up time of the CLI (`minetune --help`, `minetune stats`) and of `minetune serve` (from
launch until it answers its first HTTP request) against bare Python.

Heavy ML libraries must be imported lazily. Targets (issue 12): `minetune serve` answers HTTP in
< 1 s, `minetune stats` < 0.5 s, `--help` < 1 s. The peers in the same run: bare `python -c pass`
(the floor), a bare FastAPI+uvicorn app serving one route (the floor for `serve`) and
`python -c "import transformers"` (what an eager import of the ML stack would add).

    .venv/bin/python bench/startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_S = {"minetune serve": 1.0, "minetune stats": 0.5}  # issue 12; --help: 1.0
BARE_APP = """
import sys, uvicorn
from fastapi import FastAPI
app = FastAPI()
@app.get("/static/app.css")
def css() -> str:
    return "ok"
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def target(name: str) -> float:
    return next((t for prefix, t in TARGET_S.items() if name.startswith(prefix)), 1.0)


def timed(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return samples


def serve_ready(
    cli: list[str], env: dict[str, str], runs: int, bare: bool = False, path: str = "/static/app.css"
) -> list[float]:
    """Seconds from launching `minetune serve` (or the bare FastAPI+uvicorn app, the floor)
    until it serves ``path`` over HTTP (a static file; ``/`` is the first page, with templates)."""
    import socket
    import urllib.request

    samples = []
    for _ in range(runs):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        start = time.perf_counter()
        command = [cli[0], "-c", BARE_APP, str(port)] if bare else [*cli, "serve", "--port", str(port)]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1).read()
                    break
                except OSError:
                    if proc.poll() is not None:
                        raise RuntimeError("minetune serve exited before answering") from None
                    time.sleep(0.01)
            samples.append(time.perf_counter() - start)
        finally:
            proc.terminate()
            proc.wait()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "MINETUNE_HOME": home}
        py = sys.executable
        cli = [py, "-m", "minetune.cli"]
        subprocess.run([*cli, "stats"], env=env, check=True, capture_output=True)  # create + migrate once
        rows = [
            ("python -c pass (floor)", [py, "-c", "pass"]),
            ("minetune --help", [*cli, "--help"]),
            ("minetune stats", [*cli, "stats"]),
            ("minetune stats --json", [*cli, "stats", "--json"]),
            ("python -c 'import transformers' (peer)", [py, "-c", "import transformers"]),
        ]
        measured = [(name, lambda cmd=cmd: timed(cmd, env, 1)) for name, cmd in rows]
        serve = ("minetune serve (until it answers HTTP)", lambda: serve_ready(cli, env, 1))
        floor = ("bare FastAPI+uvicorn app (serve floor)", lambda: serve_ready(cli, env, 1, True))
        page = ("serve, until the first page GET / (info)", lambda: serve_ready(cli, env, 1, path="/"))
        measured[4:4] = [floor, serve, page]
        # Round robin (one sample of every row per round), so a load change on the shared VM
        # hits every row alike instead of the rows measured while it lasted.
        samples: dict[str, list[float]] = {name: [] for name, _ in measured}
        for _ in range(args.runs):
            for name, measure in measured:
                samples[name] += measure()
        print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, {args.runs} runs each, "
              f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}")
        print(f"{'command':<42} {'median s':>9} {'p90 s':>7} {'max s':>7}  target")
        for name, _ in measured:
            ordered = sorted(samples[name])
            p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
            verdict = ("ok" if p90 < target(name) else "SLOW") if name.startswith("minetune") else ""
            print(f"{name:<42} {statistics.median(ordered):>9.3f} {p90:>7.3f} {ordered[-1]:>7.3f}  {verdict}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
