"""Personal judge: held-out agreement with a simulated user as ratings accumulate, and speed.

A fixed pool of about 400 (prompt, response) pairs is built programmatically: 5 topics x 4
prompts x 20 responses whose style varies (length, tone, emoji, bullet lists), about 15% of
them answering another topic's question. A simulated user scores every pair with a hidden
function (weighted style features + Gaussian noise) mapped to 1-5 stars by pool quantiles.
Four users: "concise" (short, no emoji), "warm" (polite, thorough, emoji), "structured"
(bullet lists of medium length) and "contextual" (emoji and gushing welcome for hobby
questions, unwelcome for work questions: the taste depends on the message).
One prompt per topic (100 pairs) is held out: the judge never trains on it. The judge is
trained on ratings drawn from the other 300 pairs in random order and scored on the held-out
set at 10, 20, 50, 100 and 200 ratings, over several random rating orders (mean +- sd).

Columns: Spearman and pairwise accuracy on the held-out set (random scorer: 0.50; a constant
mean predictor ties every pair, so it also scores 0.50 and has no Spearman); the judge's own
5-fold CV estimate of its pairwise accuracy (what it would report to the user); MAE of the
judge and of always predicting the training mean; best-of-4: average real stars of the
candidate the judge picks from 4 responses to the same held-out prompt, next to a random pick
and the best possible pick. "ceiling" is the agreement of the noiseless hidden score itself.

    .venv/bin/python bench/judge.py [--user concise|warm|structured|contextual|all]
        [--repeats 5] [--cache /tmp/judge-pool.npz]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from minetune.learn.embed import load_embedder
from minetune.learn.judge import DEFAULT_ALPHA, PersonalJudge, pairwise_accuracy, spearman

CHECKPOINTS = (10, 20, 50, 100, 200)

TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "cooking": (
        [
            "How do I make a simple tomato pasta sauce?",
            "What is the best way to cook rice on the stove?",
            "How can I keep my roast chicken juicy?",
            "How do I stop onions from burning when I fry them?",
        ],
        [
            "Start with a heavy pan so the heat spreads evenly.",
            "Use medium heat rather than high heat for most of the cooking.",
            "Salt in stages instead of all at the end.",
            "Let the pan warm up before adding oil.",
            "Taste as you go and adjust the seasoning.",
            "A splash of water loosens anything stuck to the bottom of the pan.",
            "Resting the food for a few minutes after cooking helps it stay moist.",
            "Fresh garlic burns quickly, so add it later than the onions.",
            "A lid traps steam and cooks grains and vegetables evenly.",
            "Measure the water for rice by weight for consistent results.",
        ],
    ),
    "python": (
        [
            "How do I read a CSV file in Python?",
            "What is the difference between a list and a tuple in Python?",
            "How should I handle errors in a Python script?",
            "How do I speed up a slow Python loop?",
        ],
        [
            "The csv module in the standard library reads rows as lists or dictionaries.",
            "Tuples are immutable, so they can be used as dictionary keys.",
            "Catch the specific exception you expect instead of a bare except.",
            "Profile the code first so you optimise the part that is actually slow.",
            "Vectorising with numpy often replaces an explicit loop entirely.",
            "Use a with statement so files are closed even when an error happens.",
            "List comprehensions are usually faster than appending in a loop.",
            "Raise your own exception type with a clear message for callers.",
            "Pandas read_csv handles quoting, types and missing values for you.",
            "Avoid repeated attribute lookups inside tight loops.",
        ],
    ),
    "travel": (
        [
            "What should I pack for a week-long trip to Japan?",
            "How do I find cheap flights?",
            "Any tips for dealing with jet lag?",
            "How do I plan a road trip across several cities?",
        ],
        [
            "Pack layers so you can adapt to changing weather.",
            "Book flights on weekdays and compare a few nearby airports.",
            "Shift your sleep schedule by an hour a day before you leave.",
            "Keep digital and paper copies of your passport and bookings.",
            "A rail pass can save money if you visit several cities.",
            "Drink plenty of water on long flights.",
            "Leave a free day in the plan for rest and surprises.",
            "Price alerts notify you when a fare drops.",
            "Get daylight in the morning at your destination to reset your body clock.",
            "Plan driving legs of no more than four or five hours a day.",
        ],
    ),
    "fitness": (
        [
            "How do I start running as a complete beginner?",
            "How many days a week should I lift weights?",
            "What should I eat after a workout?",
            "How can I improve my flexibility?",
        ],
        [
            "Alternate short running intervals with walking for the first few weeks.",
            "Three full-body strength sessions a week is plenty for a beginner.",
            "Eat some protein and carbohydrates within a couple of hours after training.",
            "Stretch gently after exercise when your muscles are warm.",
            "Increase your weekly distance or load by about ten percent at most.",
            "Sleep is when most of the recovery happens.",
            "Good shoes matter more than expensive gear.",
            "Rest days prevent injuries and help you get stronger.",
            "Hold each stretch for about thirty seconds without bouncing.",
            "Track your workouts so you can see progress over time.",
        ],
    ),
    "money": (
        [
            "How do I start a monthly budget?",
            "Should I pay off debt or save first?",
            "How much should I keep in an emergency fund?",
            "How do I start investing with a small amount?",
        ],
        [
            "List your income and fixed costs before anything else.",
            "Pay off high-interest debt before investing.",
            "Keep three to six months of expenses in an emergency fund.",
            "Automate a transfer to savings on payday.",
            "Low-cost index funds are a simple way to start investing.",
            "Review your subscriptions and cancel the ones you do not use.",
            "Track spending for a month to see where the money goes.",
            "Keep the emergency fund in an account you can reach quickly.",
            "Investing small amounts regularly smooths out market swings.",
            "Check the fees, because they compound just like returns.",
        ],
    ),
}

OPENERS = {
    "polite": "Great question, happy to help!",
    "neutral": "",
    "curt": "Obviously, just do this.",
    "enthusiastic": "Wow, I love this question!!!",
}
CLOSERS = {
    "polite": "I hope this helps, and let me know if you have any other questions.",
    "neutral": "",
    "curt": "That's it.",
    "enthusiastic": "You are going to absolutely crush it!!!",
}
EMOJI = ["🎉", "🚀", "😊", "🔥", "✨", "👍"]
LENGTHS = (1, 2, 4, 7)
TONES = tuple(OPENERS)
RESPONSES_PER_PROMPT = 20
OFF_TOPIC_RATE = 0.15


@dataclass(frozen=True)
class Pair:
    topic: str
    prompt_id: int
    prompt: str
    response: str
    sentences: int
    tone: str
    emoji: bool
    bullets: bool
    off_topic: bool


def build_pool(seed: int = 0) -> list[Pair]:
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    pool = []
    for t, topic in enumerate(names):
        prompts, _ = TOPICS[topic]
        for p, prompt in enumerate(prompts):
            for _ in range(RESPONSES_PER_PROMPT):
                off_topic = bool(rng.random() < OFF_TOPIC_RATE)
                other = names[(t + 1 + int(rng.integers(len(names) - 1))) % len(names)]
                bank = TOPICS[other if off_topic else topic][1]
                sentences = int(rng.choice(LENGTHS))
                tone = str(rng.choice(TONES))
                emoji, bullets = bool(rng.random() < 0.35), bool(rng.random() < 0.4)
                body = [bank[i] for i in rng.permutation(len(bank))[:sentences]]
                if emoji:
                    body = [f"{s} {EMOJI[int(rng.integers(len(EMOJI)))]}" for s in body]
                if bullets:
                    text = "\n".join(f"- {s}" for s in body)
                    parts = [OPENERS[tone], text, CLOSERS[tone]]
                    response = "\n".join(x for x in parts if x)
                else:
                    response = " ".join(x for x in [OPENERS[tone], *body, CLOSERS[tone]] if x)
                pool.append(
                    Pair(topic, t * 4 + p, prompt, response, sentences, tone, emoji, bullets, off_topic)
                )
    return pool


def hidden_score(pair: Pair, user: str) -> float:
    """The simulated user's taste, without noise (higher is better)."""
    tone = {"polite": 0.0, "neutral": 0.0, "curt": 0.0, "enthusiastic": 0.0}
    if user == "concise":  # short, plain, no emoji, dislikes gushing
        tone.update(curt=-0.3, enthusiastic=-1.0)
        style = -0.45 * pair.sentences - 1.5 * pair.emoji
    elif user == "warm":  # friendly and thorough, likes emoji, dislikes curtness
        tone.update(polite=1.0, enthusiastic=0.6, curt=-1.5)
        style = 0.25 * pair.sentences + 0.8 * pair.emoji
    elif user == "structured":  # bullet lists of medium length
        tone.update(curt=-0.8, enthusiastic=-0.5)
        style = 1.5 * pair.bullets - 0.3 * abs(pair.sentences - 4)
    elif user == "contextual":  # taste depends on the question: playful for hobbies, sober for work
        playful = pair.topic in ("travel", "fitness", "cooking")
        tone.update(enthusiastic=1.0 if playful else -1.5, polite=0.3)
        style = (1.0 if playful else -1.5) * pair.emoji - 0.2 * pair.sentences
    else:
        raise ValueError(user)
    return style + tone[pair.tone] - 2.5 * pair.off_topic


USERS = ("concise", "warm", "structured", "contextual")


def to_stars(scores: np.ndarray) -> np.ndarray:
    """1-5 stars by quantiles of the pool's scores: 15% / 20% / 30% / 20% / 15%."""
    cuts = np.quantile(scores, [0.15, 0.35, 0.65, 0.85])
    return 1 + np.searchsorted(cuts, scores, side="right")


def best_of(
    judge: PersonalJudge, msg: np.ndarray, resp: np.ndarray, stars: np.ndarray, groups: list[np.ndarray]
) -> tuple[float, float, float]:
    """Mean real stars of the judge's pick, a random pick (expected) and the best pick."""
    picked, rand, best = [], [], []
    for g in groups:
        picked.append(stars[g[judge.rank(msg[g[0]], resp[g])[0]]])
        rand.append(stars[g].mean())
        best.append(stars[g].max())
    return float(np.mean(picked)), float(np.mean(rand)), float(np.mean(best))


def fmt(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f}±{statistics.stdev(values):.{digits}f}"


def held_out_split(pool: list[Pair]) -> tuple[np.ndarray, np.ndarray]:
    """The last prompt of each topic is held out; the judge trains on the other pairs only."""
    held_prompts = {t * 4 + 3 for t in range(len(TOPICS))}
    held = np.array([i for i, p in enumerate(pool) if p.prompt_id in held_prompts])
    train = np.array([i for i, p in enumerate(pool) if p.prompt_id not in held_prompts])
    return held, train


def run_user(
    user: str, pool: list[Pair], msg: np.ndarray, resp: np.ndarray, args: argparse.Namespace
) -> None:
    rng = np.random.default_rng(args.seed)
    clean = np.array([hidden_score(p, user) for p in pool])
    stars = to_stars(clean + rng.normal(0.0, args.noise, size=clean.size))
    held, train = held_out_split(pool)
    groups = []
    for pid in sorted({pool[i].prompt_id for i in held}):
        members = np.array([i for i in held if pool[i].prompt_id == pid])
        groups += [rng.choice(members, size=4, replace=False) for _ in range(args.groups // 5)]
    truth = stars[held].astype(float)

    ceiling_pairwise, _ = pairwise_accuracy(truth, clean[held])
    ceiling_rho = spearman(truth, clean[held])
    print(
        f"\nuser '{user}': trains on up to {len(train)} pairs, {len(held)} held out "
        f"(held-out stars 1..5: {np.bincount(stars[held], minlength=6)[1:].tolist()}); "
        f"ceiling (noiseless hidden score): Spearman {ceiling_rho:.2f}, pairwise {ceiling_pairwise:.2f}"
    )
    header = (
        f"{'ratings':>7} | {'Spearman':>10} {'pairwise':>10} {'random':>6} | {'self-CV pw':>10} | "
        f"{'MAE judge':>10} {'MAE mean':>10} | {'best-of-4':>10} {'rand pick':>9} {'oracle':>6}"
    )
    print(header)
    print("-" * len(header))
    results: dict[int, dict[str, list[float]]] = {c: {} for c in CHECKPOINTS}
    for r in range(args.repeats):
        order = np.random.default_rng(args.seed + 1 + r).permutation(train)
        judge = PersonalJudge(msg.shape[1], alpha=args.alpha)
        added = 0
        for checkpoint in CHECKPOINTS:
            for i in order[added:checkpoint]:
                judge.add(msg[i], resp[i], int(stars[i]))
            added = checkpoint
            row = results[checkpoint]
            metrics = judge.evaluate()
            if not judge.ready:
                row.setdefault("refused", []).append(1.0)
                continue
            predicted = judge.predict(msg[held], resp[held])
            row.setdefault("rho", []).append(spearman(truth, predicted) or 0.0)
            row.setdefault("pw", []).append(pairwise_accuracy(truth, predicted)[0] or 0.5)
            row.setdefault("cv", []).append(metrics.pairwise_accuracy or 0.5)
            row.setdefault("mae", []).append(float(np.abs(predicted - truth).mean()))
            train_mean = float(stars[order[:checkpoint]].mean())
            row.setdefault("mae_mean", []).append(float(np.abs(train_mean - truth).mean()))
            pick, rand, best = best_of(judge, msg, resp, stars, groups)
            row.setdefault("pick", []).append(pick)
            row.setdefault("rand", []).append(rand)
            row.setdefault("best", []).append(best)
    for checkpoint in CHECKPOINTS:
        row = results[checkpoint]
        if "rho" not in row:
            print(f"{checkpoint:>7} | refused: too little data (need 10 with two different star values)")
            continue
        refused = f"  (refused in {len(row['refused'])} of {args.repeats} runs)" if "refused" in row else ""
        print(
            f"{checkpoint:>7} | {fmt(row['rho']):>10} {fmt(row['pw']):>10} {0.5:>6.2f} | "
            f"{fmt(row['cv']):>10} | {fmt(row['mae']):>10} {fmt(row['mae_mean']):>10} | "
            f"{fmt(row['pick']):>10} {statistics.mean(row['rand']):>9.2f} "
            f"{statistics.mean(row['best']):>6.2f}{refused}"
        )


def timings(msg: np.ndarray, resp: np.ndarray, stars: np.ndarray, alpha: float, label: str) -> None:
    judge = PersonalJudge(msg.shape[1], alpha=alpha)
    judge.add_many(msg[:200], resp[:200], stars[:200])
    judge.fit()
    add_ms, fit_ms = [], []
    for i in range(200, 260):
        start = time.perf_counter()
        judge.add(msg[i], resp[i], int(stars[i]))
        middle = time.perf_counter()
        judge.fit()
        add_ms.append((middle - start) * 1000)
        fit_ms.append((time.perf_counter() - middle) * 1000)
    total = [a + f for a, f in zip(add_ms, fit_ms, strict=True)]
    rank_ms = []
    for i in range(300):
        g = np.arange(i, i + 4) % len(resp)
        start = time.perf_counter()
        judge.rank(msg[g[0]], resp[g])
        rank_ms.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    judge.evaluate()
    evaluate_ms = (time.perf_counter() - start) * 1000

    def med(xs: list[float], digits: int = 2) -> str:
        return f"{statistics.median(xs):.{digits}f} ms (p90 {np.quantile(xs, 0.9):.{digits}f})"

    print(
        f"  {label:<22} add {med(add_ms)} · fit {med(fit_ms)} · add+fit {med(total)} · "
        f"rank N=4 {med(rank_ms, 3)} · evaluate() {evaluate_ms:.0f} ms"
    )


def encode_pool(pool: list[Pair], cache: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    texts = [f"{p.prompt}\x00{p.response}" for p in pool]
    fingerprint = hashlib.sha256("\x01".join(texts).encode()).hexdigest()
    if cache and os.path.exists(cache):
        data = np.load(cache)
        if str(data["fingerprint"]) == fingerprint:
            return data["msg"], data["resp"], f"embeddings read from {cache}"
    start = time.perf_counter()
    embedder = load_embedder()
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    prompts = sorted({p.prompt for p in pool})
    prompt_vecs = dict(zip(prompts, embedder.encode(prompts), strict=True))
    msg = np.stack([prompt_vecs[p.prompt] for p in pool])
    resp = embedder.encode([p.response for p in pool])
    note = (
        f"embedder {embedder.name} ({embedder.dim} dims) loaded in {load_s:.1f} s, "
        f"pool encoded in {time.perf_counter() - start:.1f} s"
    )
    if cache:
        np.savez(cache, msg=msg, resp=resp, fingerprint=np.array(fingerprint))
    return msg, resp, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", choices=[*USERS, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=5, help="random rating orders per user")
    parser.add_argument("--noise", type=float, default=0.5, help="sd of the noise in the hidden score")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="ridge penalty")
    parser.add_argument("--groups", type=int, default=200, help="best-of-4 groups from held-out prompts")
    parser.add_argument("--cache", help="an .npz file to keep the pool's embeddings in between runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"bench/judge.py — {datetime.datetime.now().isoformat(timespec='seconds')}")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"machine: {platform.platform()} · {platform.machine()} · {os.cpu_count()} CPUs "
        f"(load avg {load}) · Python {platform.python_version()} · numpy {np.__version__}"
    )
    started = time.perf_counter()
    pool = build_pool(args.seed)
    msg, resp, note = encode_pool(pool, args.cache)
    words = [len(p.response.split()) for p in pool]
    print(f"pool: {len(pool)} pairs, 20 prompts, responses {min(words)}-{max(words)} words; {note}")
    print(
        f"judge: {2 * msg.shape[1] + 1} features, ridge alpha {args.alpha:g}; "
        f"{args.repeats} random rating orders per user (mean±sd); noise sd {args.noise}"
    )
    users = list(USERS) if args.user == "all" else [args.user]
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        single_thread: Any = None
        print("(threadpoolctl not installed: everything runs with the default BLAS threads)")
    else:
        single_thread = threadpool_limits
    # Agreement does not depend on threads; one BLAS thread is faster for these small solves.
    with single_thread(limits=1, user_api="blas") if single_thread else contextlib.nullcontext():
        for user in users:
            run_user(user, pool, msg, resp, args)

    print("\nspeed (judge holding 200-260 ratings; median and p90 over 60 adds / 300 ranks):")
    stars = to_stars(np.array([hidden_score(p, users[0]) for p in pool]))
    timings(msg, resp, stars, args.alpha, "BLAS threads: default")
    if single_thread:
        with single_thread(limits=1, user_api="blas"):
            timings(msg, resp, stars, args.alpha, "BLAS threads: 1")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
