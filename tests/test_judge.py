"""The personal judge: learning a hidden preference from real MiniLM embeddings, incremental
training equal to batch ridge, refusal with too little data, storage round-trip, validation."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from minetune.errors import FeedbackError, MinetuneError
from minetune.learn.embed import Embedder, load_embedder
from minetune.learn.judge import (
    MIN_RATINGS,
    STATUS_OK,
    STATUS_TOO_LITTLE,
    JudgeMetrics,
    JudgeNotReadyError,
    PersonalJudge,
    features,
    pairwise_accuracy,
    rankdata,
    spearman,
)

# Ten questions, each with three facts that answers are built from.
QUESTIONS = {
    "How do I boil an egg?": [
        "put the egg in boiling water for nine minutes",
        "cool it in cold water afterwards",
        "older eggs peel more easily",
    ],
    "How do I read a file in Python?": [
        "open it in a with statement",
        "call read() on the file object",
        "pass encoding='utf-8' for text files",
    ],
    "How can I sleep better?": [
        "go to bed at the same time every night",
        "keep the bedroom dark and cool",
        "avoid caffeine in the afternoon",
    ],
    "How do I save money on groceries?": [
        "plan meals for the week before shopping",
        "buy store brands",
        "never shop when you are hungry",
    ],
    "How do I water a cactus?": [
        "water it only when the soil is completely dry",
        "use a pot with a drainage hole",
        "water much less in winter",
    ],
    "How do I start running?": [
        "alternate one minute of running with two of walking",
        "run three times a week",
        "buy comfortable shoes",
    ],
    "How do I learn vocabulary in a new language?": [
        "review flashcards a little every day",
        "learn words in whole sentences",
        "say the words out loud",
    ],
    "How do I clean a cast iron pan?": [
        "scrub it with hot water and a brush",
        "dry it completely on the stove",
        "rub in a thin layer of oil",
    ],
    "How do I write a good cover letter?": [
        "address it to a named person",
        "show how your experience fits the job",
        "keep it to one page",
    ],
    "How do I fix a squeaky door?": [
        "lift the hinge pins out",
        "rub them with a little oil or soap",
        "tap the pins back into place",
    ],
}


def polite_short(facts: list[str]) -> str:
    return f"Happy to help! The key thing is to {facts[0]}. Good luck, and thanks for asking."


def polite_long(facts: list[str]) -> str:
    return f"Great question, happy to help. First, {facts[0]}. Next, {facts[1]}. Also, {facts[2]}. Thank you!"


def neutral(facts: list[str]) -> str:
    return f"{facts[0].capitalize()}, and {facts[1]}."


def rude_long(facts: list[str]) -> str:
    return f"Ugh, obviously you {facts[0]}, you {facts[1]} and you {facts[2]}. Stop wasting my time."


def rude_short(facts: list[str]) -> str:
    return f"Seriously? Just {facts[0]}. Figure out the rest yourself, this is a stupid question."


# The simulated user's hidden preference: polite beats rude, and concise beats long.
STYLES = [(polite_short, 5), (polite_long, 4), (neutral, 3), (rude_long, 2), (rude_short, 1)]


@dataclass
class Rated:
    msg: np.ndarray  # (n, dim)
    resp: np.ndarray  # (n, dim)
    stars: np.ndarray  # (n,) int
    question: np.ndarray  # (n,) index of the question


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    """The real MiniLM model, loaded once for this module (several seconds: torch)."""
    return load_embedder()


@pytest.fixture(scope="module")
def rated(embedder: Embedder) -> Rated:
    """50 rated answers: 10 questions x 5 styles, stars from the hidden preference."""
    questions = list(QUESTIONS)
    texts, stars, question = [], [], []
    for q, facts in enumerate(QUESTIONS.values()):
        for style, star in STYLES:
            texts.append(style(facts))
            stars.append(star)
            question.append(q)
    question_vecs = embedder.encode(questions)
    q_index = np.array(question)
    return Rated(question_vecs[q_index], embedder.encode(texts), np.array(stars), q_index)


def random_unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def fitted(data: Rated, mask: np.ndarray, **kwargs: float) -> PersonalJudge:
    judge = PersonalJudge(data.msg.shape[1], **kwargs)  # type: ignore[arg-type]
    for m, r, s in zip(data.msg[mask], data.resp[mask], data.stars[mask], strict=True):
        judge.add(m, r, int(s))
    return judge.fit()


# ---- learning --------------------------------------------------------------------------------


def test_learns_hidden_preference_on_unseen_questions(rated: Rated) -> None:
    train = rated.question < 7  # 35 ratings on 7 questions; 3 questions never seen
    judge = fitted(rated, train)
    held = ~train
    predicted = judge.predict(rated.msg[held], rated.resp[held])
    accuracy, n_pairs = pairwise_accuracy(rated.stars[held], predicted)
    assert n_pairs == 15 * 14 // 2 - 5 * 3  # 15 answers; pairs of equal stars do not count
    assert accuracy is not None and accuracy >= 0.8
    rho = spearman(rated.stars[held], predicted)
    assert rho is not None and rho >= 0.6
    for q in (7, 8, 9):
        rows = np.flatnonzero(rated.question == q)
        ranking = judge.rank(rated.msg[rows[0]], rated.resp[rows])
        assert rated.stars[rows[ranking[0]]] >= 4, "best-of-5 should pick a polite answer"
        assert rated.stars[rows[ranking[-1]]] <= 2, "worst should be a rude answer"


def test_evaluate_reports_cross_validated_agreement_and_baselines(rated: Rated) -> None:
    judge = fitted(rated, np.ones(len(rated.stars), dtype=bool))
    metrics = judge.evaluate(folds=5, seed=0)
    assert metrics.status == STATUS_OK and metrics.reason is None
    assert metrics.n_ratings == metrics.n_evaluated == 50
    assert metrics.distinct_stars == 5 and metrics.folds == 5
    assert metrics.pairwise_accuracy is not None and metrics.pairwise_accuracy >= 0.75
    assert metrics.spearman is not None and metrics.spearman >= 0.5
    assert metrics.baseline_random_pairwise == 0.5
    assert metrics.mae is not None and metrics.baseline_mean_mae is not None
    assert metrics.mae < metrics.baseline_mean_mae  # better than always predicting the mean
    # |stars - 3| averages 1.2; training-fold means drift away from each held-out fold, a little worse.
    assert metrics.baseline_mean_mae == pytest.approx(1.2, abs=0.1)
    assert metrics.baseline_mean_accuracy == pytest.approx(0.2, abs=0.05)
    assert metrics.n_pairs == 50 * 49 // 2 - 5 * (10 * 9 // 2)  # minus pairs with equal stars
    assert judge.evaluate(folds=5, seed=0) == metrics  # deterministic for a seed
    summary = metrics.summary()
    assert summary.startswith("judge: 50 ratings · Spearman 0.")
    assert "(random 0.50)" in summary and "\n" not in summary
    as_dict = metrics.as_dict()
    assert as_dict["status"] == "ok" and as_dict["pairwise_accuracy"] == metrics.pairwise_accuracy


# ---- incremental training --------------------------------------------------------------------


def reference_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Textbook ridge with an unpenalised intercept: centre, solve the normal equations."""
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc = x - x_mean
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - y_mean))
    return w, y_mean - x_mean @ w


def test_incremental_add_equals_batch_fit(rated: Rated) -> None:
    everything = np.ones(len(rated.stars), dtype=bool)
    incremental = fitted(rated, everything)
    batch = PersonalJudge(rated.msg.shape[1])
    batch.add_many(rated.msg, rated.resp, rated.stars)
    batch.fit()
    probe_msg, probe_resp = rated.msg[::3], rated.resp[::-3]  # mismatched pairs too
    assert np.allclose(incremental.predict(probe_msg, probe_resp), batch.predict(probe_msg, probe_resp))
    assert incremental._weights is not None and batch._weights is not None
    assert np.allclose(incremental._weights, batch._weights, atol=1e-8)

    x = features(rated.msg, rated.resp)
    w, b = reference_ridge(x, rated.stars.astype(float), incremental.alpha)
    assert np.allclose(incremental._weights, w, atol=1e-8)
    assert incremental._intercept == pytest.approx(b)
    raw = x @ w + b
    assert np.allclose(incremental.predict(rated.msg, rated.resp), np.clip(raw, 1, 5))


def test_adding_more_ratings_changes_the_model_without_refit_call(rated: Rated) -> None:
    first = rated.question < 5
    judge = fitted(rated, first)
    before = judge.predict(rated.msg[-5:], rated.resp[-5:])
    for m, r, s in zip(rated.msg[~first], rated.resp[~first], rated.stars[~first], strict=True):
        judge.add(m, r, int(s))
    after = judge.predict(rated.msg[-5:], rated.resp[-5:])  # predict refits lazily
    assert not np.allclose(before, after)
    assert np.allclose(
        after, fitted(rated, np.ones(len(rated.stars), dtype=bool)).predict(rated.msg[-5:], rated.resp[-5:])
    )


def test_remove_undoes_add(rated: Rated) -> None:
    base = rated.question < 6
    judge = fitted(rated, base)
    expected = judge.predict(rated.msg, rated.resp)
    extra = np.flatnonzero(rated.question == 8)
    for i in extra:
        judge.add(rated.msg[i], rated.resp[i], int(rated.stars[i]))
    for i in extra:
        judge.remove(rated.msg[i], rated.resp[i], int(rated.stars[i]))
    assert judge.n_ratings == int(base.sum())
    assert judge.evaluate().n_evaluated == int(base.sum())
    assert np.allclose(judge.predict(rated.msg, rated.resp), expected)
    with pytest.raises(ValueError, match="no 5-star rating"):
        PersonalJudge(rated.msg.shape[1]).remove(rated.msg[0], rated.resp[0], 5)


def test_evaluation_rows_are_capped_but_every_rating_counts() -> None:
    rng = np.random.default_rng(1)
    msg, resp = random_unit(rng, 40, 8), random_unit(rng, 40, 8)
    stars = rng.integers(1, 6, size=40)
    judge = PersonalJudge(8, max_rows=25)
    judge.add_many(msg, resp, stars)
    metrics = judge.evaluate()
    assert metrics.n_ratings == 40 and metrics.n_evaluated == 25
    assert judge.star_counts == {s: int((stars == s).sum()) for s in range(1, 6)}
    with pytest.raises(ValueError, match="max_rows"):
        PersonalJudge(8, max_rows=5)


# ---- too little data -------------------------------------------------------------------------


def test_too_little_data_is_reported_and_predictions_are_refused(rated: Rated) -> None:
    judge = PersonalJudge(rated.msg.shape[1])
    with pytest.raises(JudgeNotReadyError, match="no ratings"):
        judge.fit()
    for i in range(6):
        judge.add(rated.msg[i], rated.resp[i], int(rated.stars[i]))
    assert not judge.ready
    metrics = judge.evaluate()
    assert metrics.status == STATUS_TOO_LITTLE
    assert metrics.spearman is None and metrics.pairwise_accuracy is None and metrics.mae is None
    assert metrics.summary() == (
        "judge: 6 ratings — too little data (need 10 with at least two different star values)"
    )
    with pytest.raises(JudgeNotReadyError, match="6 ratings — too little data") as refused:
        judge.rank(rated.msg[0], rated.resp[:4])
    assert isinstance(refused.value, MinetuneError)  # the CLI shows it as one line
    with pytest.raises(JudgeNotReadyError):
        judge.predict(rated.msg[:2], rated.resp[:2])


def test_enough_ratings_of_one_star_value_are_still_too_little(rated: Rated) -> None:
    fives = np.flatnonzero(rated.stars == 5)
    judge = PersonalJudge(rated.msg.shape[1])
    judge.add_many(rated.msg[fives], rated.resp[fives], rated.stars[fives])
    assert judge.n_ratings == MIN_RATINGS and not judge.ready
    assert judge.evaluate().status == STATUS_TOO_LITTLE
    assert judge.reason == "need 10 with at least two different star values"
    judge.add(rated.msg[1], rated.resp[1], int(rated.stars[1]))  # a 4-star rating
    assert judge.ready and judge.evaluate().status == STATUS_OK
    assert len(judge.rank(rated.msg[0], rated.resp[:4])) == 4


# ---- storage ---------------------------------------------------------------------------------


def test_serialization_round_trip_predicts_identically(rated: Rated) -> None:
    judge = fitted(rated, rated.question < 8, alpha=0.5)
    restored = PersonalJudge.from_bytes(judge.to_bytes())
    assert (restored.dim, restored.alpha, restored.max_rows, restored.embedder) == (384, 0.5, 5000, "minilm")
    assert restored.n_ratings == judge.n_ratings and restored.star_counts == judge.star_counts
    assert np.array_equal(restored.predict(rated.msg, rated.resp), judge.predict(rated.msg, rated.resp))
    assert restored.rank(rated.msg[45], rated.resp[45:50]) == judge.rank(rated.msg[45], rated.resp[45:50])
    assert restored.evaluate() == judge.evaluate()
    # Training continues after a round trip exactly as it would have without one.
    for judge_ in (judge, restored):
        judge_.add(rated.msg[-1], rated.resp[-1], int(rated.stars[-1]))
    assert np.array_equal(restored.predict(rated.msg, rated.resp), judge.predict(rated.msg, rated.resp))
    empty = PersonalJudge.from_bytes(PersonalJudge(384).to_bytes())
    assert empty.n_ratings == 0 and not empty.ready


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("stars", [0, 6, -1, 3.5, float("nan"), "4", True, None])
def test_invalid_stars_raise_feedback_error_and_change_nothing(rated: Rated, stars: object) -> None:
    judge = PersonalJudge(rated.msg.shape[1])
    judge.add(rated.msg[0], rated.resp[0], 4)
    with pytest.raises(FeedbackError, match="whole numbers from 1 to 5"):
        judge.add(rated.msg[1], rated.resp[1], stars)  # type: ignore[arg-type]
    assert judge.n_ratings == 1 and judge.evaluate().n_evaluated == 1


def test_whole_number_stars_of_any_numeric_type_are_accepted(rated: Rated) -> None:
    judge = PersonalJudge(rated.msg.shape[1])
    for stars in (1, np.int64(2), 3.0, np.float32(4.0)):
        judge.add(rated.msg[0], rated.resp[0], stars)  # type: ignore[arg-type]
    assert judge.star_counts == {1: 1, 2: 1, 3: 1, 4: 1, 5: 0}
    with pytest.raises(FeedbackError):
        judge.add_many(rated.msg[:3], rated.resp[:3], [5, 4, 9])
    assert judge.n_ratings == 4


def test_wrong_vectors_raise_value_error(rated: Rated) -> None:
    judge = PersonalJudge(rated.msg.shape[1])
    with pytest.raises(ValueError, match="shape"):
        judge.add(rated.msg[0][:100], rated.resp[0], 3)
    with pytest.raises(ValueError, match="shape"):
        judge.add(rated.msg[0], rated.resp[0][:100], 3)
    with pytest.raises(ValueError, match="NaN"):
        judge.add(np.full(384, np.nan), rated.resp[0], 3)
    with pytest.raises(ValueError, match=r"2 \(message, response\) pairs for 3 stars"):
        judge.add_many(rated.msg[:2], rated.resp[:2], [3, 4, 5])
    with pytest.raises(ValueError):
        PersonalJudge(384, alpha=0)
    assert judge.n_ratings == 0


# ---- features and metrics --------------------------------------------------------------------


def test_features_layout() -> None:
    rng = np.random.default_rng(0)
    msg, resp = random_unit(rng, 3, 16), random_unit(rng, 3, 16)
    x = features(msg, resp)
    assert x.shape == (3, 33)
    assert np.allclose(x[:, :16], resp)
    assert np.allclose(x[:, 16:32], 4.0 * msg * resp)  # sqrt(16) * elementwise product
    assert np.allclose(x[:, 32], np.sum(msg * resp, axis=1))  # cosine of unit vectors
    assert np.allclose(features(msg[0], resp), features(np.repeat(msg[:1], 3, axis=0), resp))
    with pytest.raises(ValueError):
        features(msg[:2], resp)


def test_rank_orders_by_unclipped_score_and_keeps_ties_in_order() -> None:
    rng = np.random.default_rng(3)
    dim = 8
    msg = random_unit(rng, 1, dim)[0]
    judge = PersonalJudge(dim, alpha=1e-3)
    good, bad = np.eye(dim, dtype=np.float32)[0], np.eye(dim, dtype=np.float32)[1]
    for _ in range(6):
        judge.add(msg, good, 5)
        judge.add(msg, bad, 1)
    # Features are linear in the response, so this one scores about 7 stars before clipping.
    better = good + 0.5 * (good - bad)
    candidates = np.stack([bad, better, good, bad])
    predicted = judge.predict(msg, candidates)
    assert predicted[1] == 5.0 and predicted[2] == pytest.approx(5.0, abs=0.01)
    assert judge.rank(msg, candidates) == [1, 2, 0, 3]


def test_rank_statistics_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    truth = rng.integers(1, 6, size=60).astype(float)
    predicted = np.round(truth + rng.normal(0, 1.5, size=60), 1)
    assert np.allclose(rankdata(predicted), stats.rankdata(predicted))
    assert spearman(truth, predicted) == pytest.approx(stats.spearmanr(truth, predicted).statistic)
    assert spearman(truth, np.ones(60)) is None


def test_pairwise_accuracy_counts_prediction_ties_as_half() -> None:
    truth = np.array([1, 2, 3, 3])
    assert pairwise_accuracy(truth, np.array([1.0, 2.0, 3.0, 0.0])) == (3 / 5, 5)
    assert pairwise_accuracy(truth, np.zeros(4)) == (0.5, 5)
    assert pairwise_accuracy(np.array([2, 2]), np.array([1.0, 2.0])) == (None, 0)
    assert pairwise_accuracy(truth, -np.arange(4.0))[0] == pytest.approx(0.0)


def test_metrics_summary_without_spearman() -> None:
    metrics = JudgeMetrics(
        n_ratings=12, n_evaluated=12, distinct_stars=2, folds=5, status=STATUS_OK, pairwise_accuracy=0.5
    )
    assert metrics.summary() == "judge: 12 ratings · Spearman n/a · pairwise 0.50 (random 0.50)"


def test_module_import_does_not_load_torch() -> None:
    code = "import sys, minetune.learn.judge; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
