"""Start-up time of the CLI: `minetune --help` and `minetune stats` against bare Python.

Heavy ML libraries must be imported lazily, so both commands should start well under 1 s.
The peers in the same run: bare `python -c pass` (the floor) and `python -c "import transformers"`
(what an eager import of the ML stack would add).

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

TARGET_S = 1.0


def timed(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
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
        print(f"{'command':<42} {'median s':>9} {'p90 s':>7} {'max s':>7}  target")
        for name, cmd in rows:
            samples = sorted(timed(cmd, env, args.runs))
            p90 = samples[min(len(samples) - 1, int(0.9 * len(samples)))]
            verdict = ("ok" if p90 < TARGET_S else "SLOW") if name.startswith("minetune") else ""
            print(f"{name:<42} {statistics.median(samples):>9.3f} {p90:>7.3f} {samples[-1]:>7.3f}  {verdict}")


if __name__ == "__main__":
    main()
