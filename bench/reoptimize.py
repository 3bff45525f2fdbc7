"""Latency of one re-optimization after one new feedback, against rebuilding DSPy optimizers.

For 100, 1k and 10k stored rated turns this measures, on the same data and the same embedder
(offline all-MiniLM-L6-v2):

- minetune: ``Learner.on_feedback`` after one new rating (1-5 stars; the new turn's message was
  embedded when it was sent, as in the chat loop) — the incremental demo-index sync plus the
  drift-aware credit update: the rating is credited to the demos that answer was shown (every
  stored attempt was shown 3 demos, and each new one is shown what ``demos_for`` chose for it);
- minetune: choosing demos for a new message (``demos_for``: embed the message + select by
  similarity x posterior weight);
- DSPy ``LabeledFewShot(k=3).compile`` over the accepted examples (rebuilt from scratch);
- DSPy ``KNNFewShot(k=3, trainset, vectorizer=Embedder(minilm))`` construction, which embeds
  the whole trainset again (what "re-optimizing" with it after one new example costs).

    .venv/bin/python bench/reoptimize.py [--sizes 100 1000 10000] [--repeats 50] [--no-dspy]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="dspy-cache-"))

TOPICS = [
    "cat",
    "dog",
    "tax return",
    "python error",
    "recipe",
    "trip to Rome",
    "budget",
    "poem",
    "meeting",
    "workout",
    "garden",
    "car repair",
    "birthday gift",
    "resume",
    "sleep",
    "coffee",
    "history essay",
]
ASKS = [
    "What should I know about my {t}?",
    "Can you help with the {t}?",
    "Give me one tip for the {t}.",
    "Summarise the {t} in two lines.",
    "What's a good name for my {t}?",
    "Explain the {t} simply.",
]


def message(i: int, rng: random.Random) -> str:
    return rng.choice(ASKS).format(t=rng.choice(TOPICS)) + f" (case {i})"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def build_store(home: Path, n: int, embedder, rng: random.Random):  # type: ignore[no-untyped-def]
    """A store with ``n`` rated turns (about 70% accepted) and their stored embeddings, bulk-inserted."""
    from sqlalchemy import insert

    from minetune.config import load_settings
    from minetune.learn.embed import to_bytes
    from minetune.store import Store
    from minetune.store.schema import Attempt, Conversation, Feedback, Turn, TurnEmbedding

    settings = load_settings(home=home, reoptimize=True)
    store = Store.open(settings)
    program = store.program()
    texts = [message(i, rng) for i in range(n)]
    vectors = embedder.encode(texts)
    with store.db.transaction() as s:
        conv = Conversation(program_id=program.id, title="bench", source="bench")
        s.add(conv)
        s.flush()
        s.execute(
            insert(Turn),
            [
                {"id": i + 1, "conversation_id": conv.id, "index": i, "user_message": t}
                for i, t in enumerate(texts)
            ],
        )
        s.execute(
            insert(Attempt),
            [
                {
                    "id": i + 1,
                    "turn_id": i + 1,
                    "number": 1,
                    "version_id": program.active_version_id,
                    "model_spec": "bench",
                    "messages": [{"role": "user", "content": t}],
                    "response": f"answer {i}",
                    "latency_ms": 1.0,
                    # The lineage the credit update walks: each answer was shown 3 earlier ones.
                    "demo_attempt_ids": rng.sample(range(1, i + 1), 3) if i >= 3 else [],
                }
                for i, t in enumerate(texts)
            ],
        )
        s.execute(
            insert(Feedback),
            [
                {"attempt_id": i + 1, "kind": "explicit", "stars": rng.choice([2, 3, 4, 5, 5])}
                for i in range(n)
            ],
        )
        s.execute(
            insert(TurnEmbedding),
            [
                {"turn_id": i + 1, "model": settings.embedder, "dim": embedder.dim, "vector": to_bytes(v)}
                for i, v in enumerate(vectors)
            ],
        )
    return store, settings, conv.id, texts


def bench_size(
    n: int, repeats: int, embedder, rng: random.Random, dspy_too: bool = True
) -> list[tuple[str, list[float]]]:  # type: ignore[no-untyped-def]
    from minetune.learn.reoptimize import Learner

    with tempfile.TemporaryDirectory() as home:
        store, settings, conv_id, texts = build_store(Path(home), n, embedder, rng)
        learner = Learner(store, settings, "default")
        start = time.perf_counter()
        learner.rebuild()  # cold start: load every candidate into memory once per process
        cold = (time.perf_counter() - start) * 1000

        sync, select, credited = [], [], 0
        for i in range(repeats):
            text = message(n + i, rng)
            start = time.perf_counter()
            demos, vector = learner.demos_for(text)  # what the chat loop does before answering
            select.append((time.perf_counter() - start) * 1000)
            turn = store.add_turn(conv_id, text)
            attempt = store.add_attempt(
                turn.id,
                version_id=None,
                model_spec="bench",
                messages=[],
                response=f"answer {n + i}",
                latency_ms=1.0,
                demo_attempt_ids=[d.attempt_id for d in demos],
            )
            learner.remember_embedding(turn.id, vector)  # done at send time in the loop
            feedback = store.add_feedback(attempt.id, "explicit", rng.choice([1, 2, 3, 4, 5, 5]))
            start = time.perf_counter()
            report = learner.on_feedback(feedback.id)
            sync.append((time.perf_counter() - start) * 1000)
            credited += report.demos_credited
        store.close()
    print(f"{n:>6}  (demo stats credited by the {repeats} measured ratings: {credited})")
    ours = [
        ("minetune on_feedback (sync + credit update)", sync),
        ("minetune demos_for (embed + select)", select),
        ("minetune cold start (load index + credit once)", [cold]),
    ]
    if not dspy_too:
        return ours
    import dspy
    from dspy.teleprompt import KNNFewShot, LabeledFewShot

    trainset = [
        dspy.Example(message=t, response=f"answer {i}").with_inputs("message") for i, t in enumerate(texts)
    ]
    student = dspy.Predict("message -> response")
    labeled = []
    for _ in range(repeats):
        start = time.perf_counter()
        LabeledFewShot(k=3).compile(student, trainset=trainset)
        labeled.append((time.perf_counter() - start) * 1000)
    vectorizer = dspy.Embedder(lambda batch: embedder.encode(list(batch)), caching=False)
    knn = []
    for _ in range(max(1, min(repeats, 3_000 // max(n, 1)))):  # each rebuild re-embeds n texts
        start = time.perf_counter()
        KNNFewShot(k=3, trainset=trainset, vectorizer=vectorizer)
        knn.append((time.perf_counter() - start) * 1000)
    return ours + [
        ("DSPy LabeledFewShot rebuild", labeled),
        ("DSPy KNNFewShot rebuild (re-embeds trainset)", knn),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--no-dspy", action="store_true", help="only minetune's rows (no DSPy rebuilds)")
    args = parser.parse_args()

    from minetune.learn.embed import load_embedder

    embedder = load_embedder()
    print(
        f"bench/reoptimize.py · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.platform()} · "
        f"{os.cpu_count()} CPUs · Python {platform.python_version()} · "
        f"embedder minilm-int8 ({embedder.dim} dims)"
    )
    print(f"{'turns':>6}  {'what':<46} {'n':>4} {'p50 ms':>10} {'p95 ms':>10}")
    for n in args.sizes:
        rows = bench_size(n, args.repeats, embedder, random.Random(n), dspy_too=not args.no_dspy)
        ours = percentile(rows[0][1], 0.95)
        for name, samples in rows:
            print(
                f"{n:>6}  {name:<46} {len(samples):>4} {statistics.median(samples):>10.2f} "
                f"{percentile(samples, 0.95):>10.2f}"
            )
        for name, samples in rows[3:]:
            ratio = percentile(samples, 0.95) / ours
            print(f"{'':>6}  {name} p95 / minetune on_feedback p95 = {ratio:,.2f}x")


if __name__ == "__main__":
    main()
