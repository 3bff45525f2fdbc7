"""Benchmark: importing a generated ChatGPT export of 5k, 20k and 50k conversations.

Each export is streamed to a temporary folder (conversations.json + message_feedback.json), in the
shape of a real export: a hidden system root, 2-6 turns, an edited (branched) question in every
fifth conversation, an image answer in every seventh, and a thumbs rating on every tenth. Each
size is imported by a fresh subprocess into an empty SQLite store (``learn=False``: rebuilding
demos embeds every accepted answer, which is measured elsewhere), which reports conversations per
second and its peak resident memory (``ru_maxrss``) next to its resident memory just before the
import. Peak memory should stay flat as the file grows.

    .venv/bin/python bench/import.py                 # 5000, 20000, 50000
    .venv/bin/python bench/import.py --sizes 1000,5000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

WORDS = [
    *("the", "a", "cat", "plan", "trip", "code", "python", "river", "bread", "light", "window", "music"),
    *("answer", "question", "garden", "winter", "because", "quickly", "simple", "example", "function"),
    *("market", "letter", "friend", "morning", "paper", "system", "value", "table"),
]


def _text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def _node(
    node_id: str, parent: str | None, role: str | None, text: Any, t: float, **extra: Any
) -> dict[str, Any]:
    if role is None:
        return {"id": node_id, "message": None, "parent": parent, "children": []}
    content = extra.pop("content", None) or {"content_type": "text", "parts": [text]}
    metadata = extra.pop("metadata", {})
    message = {
        "id": node_id,
        "author": {"role": role, "name": None, "metadata": {}},
        "create_time": t,
        "update_time": None,
        "content": content,
        "status": "finished_successfully",
        "end_turn": role == "assistant",
        "weight": extra.pop("weight", 1.0),
        "metadata": metadata,
        "recipient": "all",
    }
    return {"id": node_id, "message": message, "parent": parent, "children": []}


def conversation(i: int, rng: random.Random) -> tuple[dict[str, Any], str | None]:
    """One synthetic conversation and the id of a message to rate (or None)."""
    t = 1_700_000_000.0 + i * 60
    cid = f"conv-{i:07d}"
    mapping: dict[str, dict[str, Any]] = {}

    def add(node: dict[str, Any]) -> str:
        mapping[node["id"]] = node
        if node["parent"] is not None:
            mapping[node["parent"]]["children"].append(node["id"])
        return str(node["id"])

    last = add(_node(f"{cid}-root", None, None, None, t))
    last = add(
        _node(
            f"{cid}-sys",
            last,
            "system",
            "",
            t,
            weight=0.0,
            metadata={"is_visually_hidden_from_conversation": True},
        )
    )
    answer = None
    for k in range(rng.randint(2, 6)):
        if k == 1 and i % 5 == 0:  # an edited question: the first version stays as an abandoned branch
            old = add(_node(f"{cid}-u{k}-old", last, "user", _text(rng, 8, 30), t + k))
            add(
                _node(
                    f"{cid}-a{k}-old",
                    old,
                    "assistant",
                    _text(rng, 30, 120),
                    t + k,
                    metadata={"model_slug": "gpt-4o"},
                )
            )
        user = add(_node(f"{cid}-u{k}", last, "user", _text(rng, 8, 40), t + k + 0.5))
        if k == 2 and i % 7 == 0:
            image = {"content_type": "multimodal_text", "parts": [{"content_type": "image_asset_pointer"}]}
            last = add(_node(f"{cid}-a{k}", user, "assistant", None, t + k + 0.7, content=image))
            continue
        answer = add(
            _node(
                f"{cid}-a{k}",
                user,
                "assistant",
                _text(rng, 40, 160),
                t + k + 0.9,
                metadata={"model_slug": "gpt-4o"},
            )
        )
        last = answer
    conv = {
        "title": _text(rng, 2, 6),
        "create_time": t,
        "update_time": t + 10,
        "mapping": mapping,
        "current_node": last,
        "conversation_id": cid,
        "id": cid,
        "default_model_slug": "gpt-4o",
    }
    return conv, (answer if i % 10 == 0 else None)


def _write_array(fh: TextIO, items: Any) -> int:
    fh.write("[")
    n = 0
    for item in items:
        fh.write(",\n" if n else "\n")
        fh.write(json.dumps(item))
        n += 1
    fh.write("\n]\n")
    return n


def generate(folder: Path, size: int, seed: int = 7) -> int:
    """Write an export of ``size`` conversations, streaming; returns its size in bytes."""
    rng = random.Random(seed)
    rated: list[tuple[str, str]] = []

    def conversations() -> Any:
        for i in range(size):
            conv, message = conversation(i, rng)
            if message:
                rated.append((conv["id"], message))
            yield conv

    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "conversations.json").open("w", encoding="utf-8") as fh:
        _write_array(fh, conversations())
    with (folder / "message_feedback.json").open("w", encoding="utf-8") as fh:
        _write_array(
            fh,
            (
                {
                    "id": m,
                    "conversation_id": c,
                    "rating": "thumbsUp" if n % 3 else "thumbsDown",
                    "create_time": 1.7e9,
                }
                for n, (c, m) in enumerate(rated)
            ),
        )
    return sum(f.stat().st_size for f in folder.iterdir())


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(export: Path, home: Path) -> None:
    """Runs in a subprocess: import the export into an empty store and report as JSON."""
    os.environ["MINETUNE_HOME"] = str(home)
    from minetune.config import load_settings
    from minetune.io.importers import import_file
    from minetune.store import Store

    settings = load_settings()
    store = Store.open(settings)
    store.program()
    baseline = _rss_mb()
    start = time.perf_counter()
    report = import_file(store, settings, export, learn=False)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "elapsed_s": elapsed,
                "conversations": report.conversations,
                "turns": report.turns,
                "ratings": report.ratings,
                "skipped": report.skipped,
                "baseline_mb": baseline,
                "peak_mb": peak,
                "db_mb": (home / "minetune.db").stat().st_size / 2**20,
            }
        )
    )
    store.close()


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="5000,20000,50000", help="comma-separated conversation counts")
    parser.add_argument("--child", nargs=2, metavar=("EXPORT", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]))
        return
    print(f"minetune import benchmark · {dt.datetime.now().isoformat(timespec='seconds')}")
    print(
        f"machine: {_cpu()}, {os.cpu_count()} CPUs · {platform.system()} {platform.release()} · "
        f"Python {platform.python_version()} · SQLite {sqlite3.sqlite_version}"
    )
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="minetune-bench-") as tmp:
            export, home = Path(tmp) / "export", Path(tmp) / "home"
            t0 = time.perf_counter()
            nbytes = generate(export, size)
            gen_s = time.perf_counter() - t0
            result = subprocess.run(
                [sys.executable, __file__, "--child", str(export), str(home)],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                sys.exit(f"import of {size} conversations failed:\n{result.stderr}")
            r = json.loads(result.stdout.strip().splitlines()[-1])
            rows.append((size, nbytes / 2**20, gen_s, r))
            print(
                f"  {size:>6} conversations: generated {nbytes / 2**20:.0f} MB in {gen_s:.0f} s, "
                f"imported in {r['elapsed_s']:.1f} s",
                flush=True,
            )
    print()
    print(
        "| conversations | export MB | turns | ratings | import s | conversations/s "
        "| RSS before MB | peak RSS MB | growth MB | store MB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for _size, mb, _gen, r in rows:
        rate = r["conversations"] / r["elapsed_s"]
        print(
            f"| {r['conversations']:,} | {mb:.0f} | {r['turns']:,} | {r['ratings']:,} | {r['elapsed_s']:.1f} "
            f"| {rate:,.0f} | {r['baseline_mb']:.0f} | {r['peak_mb']:.0f} "
            f"| {r['peak_mb'] - r['baseline_mb']:.0f} | {r['db_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
