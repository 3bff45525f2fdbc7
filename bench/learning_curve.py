"""Learning curves: simulated users through the real ``Session``, per arm, before and after a
change of taste. Prints per-window tables and the goals of issue 13, and plots bench/learning_curve.png.

    .venv/bin/python bench/learning_curve.py --arms prompt            # three prompt-path arms, seconds
    nice -n 10 .venv/bin/python bench/learning_curve.py --arms weights  # pretrains the tiny LM once (cached)
    .venv/bin/python bench/learning_curve.py --plot-only                # table and plot from saved results

What is simulated (the full specifications are in the docstrings of bench/learning/):

* **users** (:mod:`learning.user`): four hidden tastes over style axes — length short/long,
  format bullets/prose, tone formal/casual, and for coding questions the code language. Stars are
  5 − 2 × missed axes (at least 1), one star off with probability 0.15; critiques name up to two
  missed axes in natural words ("too long, keep it short"); 40% of 5★ answers are praised in the
  next message ("perfect, thanks!") instead of rated; retries until 5★ or the retry limit (5).
* **the change** after ``--before`` interactions: ``taste`` — same home questions, two of three
  axes flipped (the demo trap of issue 13); ``domain`` — a career change to coding questions with a
  new taste, while old-domain probes (held-out home questions, scored against the old taste,
  never stored) measure retention.
* **prompt path**: a steerable stand-in model (:mod:`learning.standin`) that follows lesson rules
  and imitates the demos in its rendered prompt, else samples styles at random — it measures
  minetune's plumbing (demo selection, lessons, retries, praise), not a real LLM's obedience.
* **weight path**: a tiny Llama pretrained here on CPU (:mod:`learning.tinylm`) learning through
  LoRA SFT, continual updates with replay and the gate, and domain adapters with routing
  (:mod:`learning.weights`).

Reported per window of 10 interactions (means over users): first-attempt stars (as the user gave
them) and attempts to 5★ (the limit when it never came).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning.arms import (  # noqa: E402
    PROMPT_ARMS,
    Interaction,
    Run,
    Schedule,
    Window,
    after,
    first_window_at_least,
    run_prompt_arm,
    windows,
)
from learning.user import TASTES  # noqa: E402

BENCH = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("MINETUNE_BENCH_CACHE", Path.home() / ".cache" / "minetune-bench"))
RESULTS = BENCH / ".cache" / "learning_curve.json"
WINDOW = 10


def _save(key: str, runs: list[Run], schedule: Schedule) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved[key] = {
        "schedule": asdict(schedule),
        "runs": [asdict(r) for r in runs],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": os.getloadavg()[0],
    }
    RESULTS.write_text(json.dumps(saved, indent=1))


def _load() -> dict[str, tuple[Schedule, list[Run], str]]:
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    out = {}
    for key, entry in saved.items():
        runs = []
        for r in entry["runs"]:
            run = Run(
                r["arm"],
                r["user"],
                r["seed"],
                [Interaction(**i) for i in r["interactions"]],
                r["probes"],
                r["notes"],
            )
            runs.append(run)
        out[key] = (Schedule(**entry["schedule"]), runs, f"{entry['date']}, load {entry['load']:.1f}")
    return out


def summarise(key: str, schedule: Schedule, runs: list[Run], when: str) -> list[Window]:
    wins = windows(runs, WINDOW)
    print(
        f"\n## {key}: {len(runs)} user(s), {schedule.before} + {schedule.after} interactions, "
        f"change = {schedule.change} ({when})"
    )
    print("| window | phase | first-attempt ★ | attempts to 5★ | solved |")
    print("|---|---|---:|---:|---:|")
    for w in wins:
        print(
            f"| {w.start + 1}-{w.start + WINDOW} | {'after' if w.phase else 'before'} | {w.first_stars:.2f} "
            f"| {w.attempts:.2f} | {w.solved:.0%} |"
        )
    late = after(wins, 0, 20)
    if late:
        print(
            f"after 20 interactions: {statistics.fmean(w.first_stars for w in late):.2f}★ first attempt, "
            f"{statistics.fmean(w.attempts for w in late):.2f} attempts"
        )
    reach = first_window_at_least(wins, 0, 4.0)
    back = first_window_at_least(wins, 1, 4.0)
    print(
        f"first window ≥ 4.0★: {reach if reach else 'never'} interactions in; after the change: "
        f"{back if back else 'never'} interactions in"
    )
    probes = {k: statistics.fmean(r.probes[k] for r in runs) for k in runs[0].probes}
    if probes:
        print("old-domain probes (true ★): " + ", ".join(f"{k} {v:.2f}" for k, v in probes.items()))
        if schedule.change == "domain" and probes.get("at change"):
            print(
                f"retention: {probes['at end'] / probes['at change']:.0%} of the old-domain score "
                "at the change"
            )
    for r in runs:
        for n in r.notes:
            print(f"  note ({r.user}): {n}")
    return wins


def plot(results: dict[str, tuple[Schedule, list[Run], str]], out: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("\nno plot: matplotlib is missing (pip install -e '.[bench]')")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = sorted({key.split(" / ")[0] for key in results})
    fig, axes = plt.subplots(2, len(scenarios), figsize=(6 * len(scenarios), 7), squeeze=False)
    for col, scenario in enumerate(scenarios):
        for key, (schedule, runs, _) in sorted(results.items()):
            if key.split(" / ")[0] != scenario:
                continue
            wins = windows(runs, WINDOW)
            xs = [w.start + WINDOW for w in wins]
            label = key.split(" / ")[1]
            axes[0][col].plot(xs, [w.first_stars for w in wins], marker="o", label=label)
            axes[1][col].plot(xs, [w.attempts for w in wins], marker="o", label=label)
            change = schedule.before
        for row in (0, 1):
            axes[row][col].axvline(change, color="grey", linestyle="--", linewidth=1)
            axes[row][col].set_xlabel("interactions")
        axes[0][col].set_title(scenario)
        axes[0][col].set_ylabel("mean first-attempt stars")
        axes[0][col].set_ylim(1, 5.1)
        axes[0][col].axhline(4.0, color="grey", linewidth=0.5)
        axes[1][col].set_ylabel("attempts to 5★ (limit 5)")
        axes[1][col].set_ylim(1, 5.1)
        axes[0][col].legend(fontsize=8)
    fig.suptitle("minetune learning curves (dashed line: the taste change)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"\nplot: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default="prompt", help="prompt, weights, all, or one arm's name")
    parser.add_argument("--change", default="taste,domain", help="prompt-path scenarios: taste, domain")
    parser.add_argument("--users", type=int, default=len(TASTES))
    parser.add_argument("--seeds", type=int, default=2, help="runs per user (prompt path)")
    parser.add_argument("--before", type=int, default=60)
    parser.add_argument("--after", type=int, default=60)
    parser.add_argument("--weight-before", type=int, default=200)
    parser.add_argument("--weight-after", type=int, default=80)
    parser.add_argument("--weight-users", type=int, default=1)
    parser.add_argument("--plot", type=Path, default=BENCH / "learning_curve.png")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()

    if not args.plot_only:
        prompt_arms = [a for a in PROMPT_ARMS if args.arms in ("prompt", "all", a)]
        for change in args.change.split(","):
            schedule = Schedule(args.before, args.after, change)
            for arm in prompt_arms:
                started = time.perf_counter()
                runs = []
                for taste in TASTES[: args.users]:
                    for seed in range(args.seeds):
                        with tempfile.TemporaryDirectory() as home:
                            runs.append(run_prompt_arm(arm, taste, 1000 * seed + 7, schedule, Path(home)))
                print(f"[{change} / {arm}: {time.perf_counter() - started:.0f} s]")
                _save(f"{change} change, prompt path / {arm}", runs, schedule)
        from learning.weights import WEIGHT_ARMS

        weight_arms = [a for a in WEIGHT_ARMS if args.arms in ("weights", "all", a)]
        if weight_arms:
            import torch
            from learning import tinylm
            from learning.weights import run_weight_arm

            torch.set_num_threads(2)
            model_dir = tinylm.pretrained(CACHE)
            schedule = Schedule(args.weight_before, args.weight_after, "domain")
            for arm in weight_arms:
                started = time.perf_counter()
                runs = []
                for taste in TASTES[: args.weight_users]:
                    with tempfile.TemporaryDirectory() as home:
                        runs.append(run_weight_arm(arm, taste, 7, schedule, Path(home), model_dir))
                print(f"[weights / {arm}: {time.perf_counter() - started:.0f} s]")
                _save(f"domain change, weight path (tiny LM) / {arm}", runs, schedule)

    results = _load()
    for key, (schedule, runs, when) in sorted(results.items()):
        summarise(key, schedule, runs, when)
    plot(results, args.plot)


if __name__ == "__main__":
    main()
