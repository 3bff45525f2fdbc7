"""Demo retrieval quality and latency of the fast query embedder against MiniLM (issue 12).

Builds a rated dataset locally (no network): a few hundred varied chat messages across many
topics and phrasings, each with a seeded star rating. Accepted ones (>= 4 stars, as the default
demo policy) are the demo candidates; held-out messages are the queries. For each query it
compares the fast embedder's top-k candidates with MiniLM's own top-k (recall@k), and the demos
the real selector (``DemoIndex.select``, default policy: relevance x stars, MMR) picks with each.
Then it times ``encode`` per query, single and batched, for both embedders in the same run.

    .venv/bin/python bench/embed_recall.py [--fast minilm-int8] [--runs 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time

import numpy as np

from minetune.learn.demos import Candidate, DemoIndex, policy_with_defaults
from minetune.learn.embed import load_embedder

TOPICS: dict[str, list[str]] = {
    "python": [
        "sort a list of dicts by a key",
        "read a CSV file with pandas",
        "write a decorator that retries",
        "use asyncio.gather with a timeout",
        "type hint a function that returns a generator",
        "profile a slow loop",
        "package a CLI with pyproject.toml",
    ],
    "javascript": [
        "debounce an input handler",
        "fetch JSON and handle errors",
        "deep clone an object",
        "use async iterators in Node",
        "bundle a library with esbuild",
    ],
    "sql": [
        "find duplicate rows in PostgreSQL",
        "write a window function for running totals",
        "index a column used in LIKE queries",
        "explain a slow join plan",
    ],
    "git": [
        "undo the last commit but keep the changes",
        "rebase a feature branch onto main",
        "find which commit introduced a bug",
        "remove a large file from history",
    ],
    "linux": [
        "find which process listens on a port",
        "rotate logs with logrotate",
        "mount a disk at boot with fstab",
        "limit a process's memory with systemd",
    ],
    "cooking": [
        "make a sourdough starter",
        "cook risotto without stirring constantly",
        "substitute eggs in a cake",
        "keep guacamole from browning",
        "season a cast iron pan",
    ],
    "baking": ["get a crisp pie crust", "fix bread that does not rise", "make macarons without cracks"],
    "travel": [
        "pack for two weeks with only a carry-on",
        "get over jet lag quickly",
        "plan three days in Lisbon",
        "find cheap flights to Japan",
        "travel with a toddler on a train",
    ],
    "fitness": [
        "start running as a beginner",
        "build a home workout without equipment",
        "stretch after a long day of sitting",
        "train for a first half marathon",
    ],
    "nutrition": [
        "eat more protein as a vegetarian",
        "plan cheap healthy lunches for the week",
        "cut down on sugar without cravings",
    ],
    "sleep": ["fall asleep faster", "stop waking up at 3am", "nap without feeling groggy"],
    "finance": [
        "build an emergency fund",
        "pay off credit card debt faster",
        "understand index funds versus ETFs",
        "make a monthly budget that sticks",
    ],
    "career": [
        "ask for a raise",
        "write a cover letter for a career change",
        "prepare for a system design interview",
        "give feedback to a peer without friction",
    ],
    "writing": [
        "write a strong opening line for a short story",
        "make my emails shorter",
        "write a wedding toast",
        "edit a blog post for clarity",
        "write a haiku about autumn",
    ],
    "math": [
        "explain Bayes' theorem with an example",
        "compute the derivative of x^x",
        "understand eigenvalues intuitively",
        "solve a quadratic equation by completing the square",
    ],
    "physics": [
        "explain why the sky is blue",
        "understand time dilation",
        "explain how a transformer (electrical) works",
    ],
    "history": [
        "summarise the causes of World War I",
        "explain the fall of the Roman Republic",
        "describe the Silk Road's importance",
    ],
    "gardening": ["grow tomatoes on a balcony", "get rid of aphids naturally", "start a compost heap"],
    "pets": ["stop a puppy from biting", "introduce a new cat to the house", "choose food for an old dog"],
    "parenting": ["get a toddler to sleep through the night", "talk to a teenager about screen time"],
    "music": [
        "learn guitar chords faster",
        "understand the circle of fifths",
        "practice piano with little time",
    ],
    "language": ["learn Spanish verbs", "improve my French pronunciation", "remember Japanese kanji"],
    "ml": [
        "choose a learning rate for fine-tuning",
        "explain LoRA in simple terms",
        "evaluate a classifier on imbalanced data",
        "pick an embedding model for search",
    ],
    "home": ["fix a dripping tap", "remove mould from a bathroom ceiling", "paint a room without streaks"],
    "cars": ["check tyre pressure", "jump start a car", "decide between leasing and buying a car"],
    "mental": [
        "deal with stress before an exam",
        "stop procrastinating on big tasks",
        "meditate for beginners",
    ],
    "legal": ["understand a rental deposit dispute", "write a simple freelance contract"],
    "shopping": ["choose a laptop for programming", "pick running shoes", "buy a used bike safely"],
}

TEMPLATES = [
    "How do I {t}?",
    "What's the best way to {t}?",
    "Can you explain how to {t}?",
    "{T}: any tips?",
    "I'm trying to {t} but it isn't working. What am I doing wrong?",
    "Quick question: how to {t}",
    "Give me a step-by-step guide to {t}.",
    "What should a beginner know to {t}?",
    "My friend asked me how to {t} and I had no idea — help?",
    "In two sentences, how would you {t}?",
    "Is there a simple way to {t} on a tight budget?",
    "Explain like I'm five: how do you {t}?",
]
SMALLTALK = [
    "thanks!",
    "hi",
    "what can you do?",
    "tell me a joke",
    "good morning",
    "ok",
    "why?",
    "can you repeat that more briefly",
    "that's wrong, try again",
    "write it as a bullet list",
]


def dataset(seed: int = 12) -> tuple[list[tuple[str, int]], list[str]]:
    """(rated candidate messages with stars, held-out query messages), deterministic."""
    rng = random.Random(seed)
    rated: list[tuple[str, int]] = []
    queries: list[str] = []
    for tasks in TOPICS.values():
        for task in tasks:
            phrasings = rng.sample(TEMPLATES, 4)
            texts = [p.format(t=task, T=task[0].upper() + task[1:]) for p in phrasings]
            for text in texts[:3]:
                rated.append((text, rng.choice([2, 3, 4, 4, 5, 5, 5])))
            queries.append(texts[3])
    for text in SMALLTALK:
        rated.append((text, rng.choice([3, 4, 5])))
    # Cross-topic queries that are not a rephrasing of any one candidate.
    names = list(TOPICS)
    for _ in range(60):
        a, b = rng.sample(names, 2)
        queries.append(f"I need help with {rng.choice(TOPICS[a])} and also {rng.choice(TOPICS[b])}.")
    return rated, queries


def top_k(matrix: np.ndarray, query: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-(matrix @ query))[:k].tolist())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def time_encode(embedder: object, texts: list[str], runs: int, batch: int) -> tuple[float, float]:
    """(p50, p99) milliseconds per query for encode() of ``batch`` texts at a time."""
    encode = embedder.encode  # type: ignore[attr-defined]
    encode(texts[:batch])  # warm
    per_query: list[float] = []
    for i in range(runs):
        chunk = [texts[(i * batch + j) % len(texts)] for j in range(batch)]
        start = time.perf_counter()
        encode(chunk)
        per_query.append((time.perf_counter() - start) * 1000 / batch)
    return statistics.median(per_query), percentile(per_query, 99)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", default="minilm-int8")
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    os.environ.setdefault("MINETUNE_HOME", tempfile.mkdtemp(prefix="minetune-bench-"))

    rated, queries = dataset()
    candidates = [(text, stars) for text, stars in rated if stars >= 4]
    print(
        f"dataset: {len(rated)} rated messages, {len(candidates)} accepted (>= 4 stars), "
        f"{len(queries)} held-out queries"
    )
    t0 = time.perf_counter()
    base = load_embedder("minilm")
    t1 = time.perf_counter()
    fast = load_embedder(args.fast)
    t2 = time.perf_counter()
    print(
        f"load: minilm {t1 - t0:.2f} s, {args.fast} {t2 - t1:.2f} s "
        "(includes a one-time export if not cached)"
    )

    texts = [t for t, _ in candidates]
    indexes = {}
    vectors = {}
    for name, emb in (("minilm", base), (args.fast, fast)):
        cand = emb.encode(texts)
        # Candidates are embedded in batches (index sync); a query alone, as on the request path.
        vectors[name] = (cand, np.stack([emb.encode([q])[0] for q in queries]))
        index = DemoIndex()
        for i, (text, stars) in enumerate(candidates):
            index.upsert(Candidate(i, i, i, text, "an answer " * 20, stars), cand[i])
        indexes[name] = index

    base_c, base_q = vectors["minilm"]
    fast_c, fast_q = vectors[args.fast]
    print(
        f"\nrecall@k of {args.fast} against MiniLM's own top-k ({len(queries)} queries, "
        f"{len(candidates)} candidates):"
    )
    print("| k | recall@k |\n|---:|---:|")
    for k in (1, 3, 5, 10):
        recall = statistics.mean(
            len(top_k(base_c, base_q[i], k) & top_k(fast_c, fast_q[i], k)) / k for i in range(len(queries))
        )
        print(f"| {k} | {recall:.3f} |")
    policy = policy_with_defaults(None)
    same = []
    for i in range(len(queries)):
        a = {d.turn_id for d in indexes["minilm"].select(base_q[i], policy)}
        b = {d.turn_id for d in indexes[args.fast].select(fast_q[i], policy)}
        if a or b:
            same.append(len(a & b) / max(len(a), len(b)))
    print(
        f"\nselected demos (default policy, k={policy['k']}, MMR, min_similarity "
        f"{policy['min_similarity']}): overlap {statistics.mean(same):.3f} over {len(same)} queries"
    )
    cos = float(np.mean(np.sum(base_q * fast_q, axis=1)))
    print(f"mean cosine(minilm, {args.fast}) of the same query: {cos:.4f}")

    print(
        f"\nencode latency per query, ms ({args.runs} runs each; load "
        f"{os.getloadavg()[0]:.2f}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}):"
    )
    print("| embedder | batch | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    pool = queries + texts
    for name, emb in (("minilm", base), (args.fast, fast)):
        for batch in (1, 64):
            runs = args.runs if batch == 1 else max(10, args.runs // 10)
            p50, p99 = time_encode(emb, pool, runs, batch)
            print(f"| {name} | {batch} | {p50:.2f} | {p99:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
