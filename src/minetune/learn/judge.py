"""The personal judge: a preference model trained on the user's own star ratings.

The judge maps the embeddings of a (user message, response) pair to predicted stars (1-5) with
ridge regression. It is cheap enough to retrain after every rating and to rerank best-of-N
candidates on CPU, and it always carries its own report card: held-out agreement with the
user's real ratings (Spearman and pairwise accuracy), next to what random ranking and the
always-predict-the-mean baseline would score.

Features (:func:`features`), for a unit-length message vector ``m`` and response vector ``r``
of ``dim`` values each, ``2 * dim + 1`` values::

    [ r,  sqrt(dim) * (m * r),  m . r ]

* ``r`` — what the user likes in a response whatever was asked (style, tone, length, format,
  as far as the embedding reflects them);
* ``m * r`` (elementwise) — whether the response matches the message along each embedding
  direction: a diagonal bilinear form ``m^T diag(w) r``. Scaled by ``sqrt(dim)`` so the block's
  norm is about 1, like ``r``'s, and one ridge penalty suits both blocks;
* ``m . r`` — the cosine similarity (overall relevance) as one explicit value, so a single
  weight can use it instead of spreading it over ``dim`` penalised weights.

There is no bias column: the intercept is fitted separately and is not penalised (the ridge
problem is solved on centred statistics).

Training keeps sufficient statistics — ``X^T X``, ``X^T y``, ``sum x``, ``sum y`` and a count
per star value (which gives ``n``) — so :meth:`PersonalJudge.add` costs O(p^2) (p = 769 for
MiniLM: about 2 ms) and :meth:`PersonalJudge.fit` is one p x p Cholesky solve (about 10 ms on
one CPU thread; ``bench/judge.py`` measures both). On a busy machine multi-threaded OpenBLAS
makes these small solves several times slower; ``OPENBLAS_NUM_THREADS=1`` avoids that.
Adding ratings one by one gives the same model as adding them all at once. The raw message
and response vectors of the latest ``max_rows`` ratings (default 5000) are kept too, for
k-fold cross-validation in :meth:`PersonalJudge.evaluate`; older ratings still count in the
model but are no longer used for evaluation.

Refusal: with fewer than :data:`MIN_RATINGS` ratings, or with only one distinct star value,
the judge does not guess. :meth:`~PersonalJudge.predict` and :meth:`~PersonalJudge.rank`
*raise* :class:`JudgeNotReadyError` (a :class:`~minetune.errors.MinetuneError`, so the CLI
shows its one-line reason); check :attr:`PersonalJudge.ready` / :attr:`PersonalJudge.reason`
first to avoid the exception. :meth:`~PersonalJudge.evaluate` never raises for lack of data:
it returns metrics with ``status == "too little data"``.

Errors: stars that are not a whole number from 1 to 5 raise
:class:`~minetune.errors.FeedbackError`; vectors of the wrong shape or with non-finite values
raise :class:`ValueError` (a programming error, not a user's).

Only numpy is imported here; the embedder (and torch) is loaded by the caller through
:func:`minetune.learn.embed.load_embedder`.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from minetune.errors import FeedbackError, MinetuneError

MIN_RATINGS = 10
"""Below this many ratings the judge refuses to predict and reports "too little data"."""

STATUS_OK = "ok"
STATUS_TOO_LITTLE = "too little data"

DEFAULT_ALPHA = 0.3
"""Ridge penalty. Picked on bench/judge.py's simulated users; 0.1-1 score within about 0.03."""
DEFAULT_MAX_ROWS = 5000
RANDOM_PAIRWISE = 0.5
_FORMAT_VERSION = 1
_STAR_VALUES = (1, 2, 3, 4, 5)


class JudgeNotReadyError(MinetuneError):
    """The judge has too little data to predict; the message says what is missing."""


def _as_matrix(vectors: np.ndarray, dim: int | None, what: str) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
        want = f"(n, {dim}) or ({dim},)" if dim is not None else "(n, dim) or (dim,)"
        raise ValueError(f"{what} must have shape {want}, got {np.shape(vectors)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain NaN or infinite values")
    return array


def features(message_vecs: np.ndarray, response_vecs: np.ndarray) -> np.ndarray:
    """Judge features for each (message, response) pair: ``[r, sqrt(dim)*(m*r), m.r]``.

    Both arguments are ``(n, dim)`` arrays (or one ``(dim,)`` vector each); a single message
    vector is broadcast against ``n`` responses. Returns float64 ``(n, 2*dim + 1)``.
    """
    responses = _as_matrix(response_vecs, None, "response vectors")
    dim = responses.shape[1]
    messages = _as_matrix(message_vecs, dim, "message vectors")
    if messages.shape[0] == 1 and responses.shape[0] != 1:
        messages = np.broadcast_to(messages, responses.shape)
    if messages.shape != responses.shape:
        raise ValueError(f"{messages.shape[0]} message vectors for {responses.shape[0]} responses")
    product = messages * responses
    cosine = product.sum(axis=1, keepdims=True)
    return np.concatenate([responses, math.sqrt(dim) * product, cosine], axis=1)


def _check_stars(stars: Any) -> np.ndarray:
    array = np.atleast_1d(np.asarray(stars))
    if array.dtype == np.bool_ or array.dtype.kind not in "iuf":
        raise FeedbackError(f"Stars must be whole numbers from 1 to 5, got {stars!r}.")
    values = array.astype(np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 1) | (values > 5)
    if bad.any():
        raise FeedbackError(f"Stars must be whole numbers from 1 to 5, got {array[bad][0]!r}.")
    return values


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, ties sharing the average of the ranks they span."""
    values = np.asarray(values)
    n = values.size
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(n, dtype=np.float64)
    sorted_values = values[order]
    # Start index of each run of equal values, and the end (exclusive) after the last run.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], n]
    run_ranks = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    ranks[order] = np.repeat(run_ranks, ends - starts)
    return ranks


def spearman(truth: np.ndarray, predicted: np.ndarray) -> float | None:
    """Spearman rank correlation (ties averaged); None when either side is constant."""
    a, b = rankdata(truth), rankdata(predicted)
    a -= a.mean()
    b -= b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    if denominator == 0.0:
        return None
    return float(a @ b) / denominator


def pairwise_accuracy(truth: np.ndarray, predicted: np.ndarray) -> tuple[float | None, int]:
    """Over all pairs with different true stars: the fraction the predictions order the same way.

    A tie in the predictions counts as half right (so a constant predictor scores exactly 0.5,
    like a random one). Returns (accuracy or None when no pair qualifies, number of pairs).
    """
    truth = np.asarray(truth, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    agree = 0.0
    ordered_pairs = 0
    chunk = 512
    for start in range(0, truth.size, chunk):
        true_sign = np.sign(truth[start : start + chunk, None] - truth[None, :])
        pred_sign = np.sign(predicted[start : start + chunk, None] - predicted[None, :])
        mask = true_sign != 0
        ordered_pairs += int(mask.sum())
        agree += float(((1.0 + true_sign * pred_sign)[mask]).sum()) / 2.0
    if ordered_pairs == 0:
        return None, 0
    return agree / ordered_pairs, ordered_pairs // 2


@dataclass(frozen=True)
class JudgeMetrics:
    """How well the judge agrees with the user's own ratings on data it did not train on.

    All agreement numbers come from k-fold cross-validation over the stored ratings: every
    rating is predicted by a model fitted without it, and the out-of-fold predictions are
    scored together. Spearman and pairwise accuracy score the predictions less each training
    fold's mean stars (which would otherwise order folds against their own labels); MAE and
    exact accuracy score the full predictions. Folds mix messages the judge has seen answers
    to, so agreement on a new kind of message can be lower than reported (bench/judge.py
    compares this estimate with a held-out set of unseen prompts).
    """

    n_ratings: int
    """Ratings in the model."""
    n_evaluated: int
    """Stored ratings used for cross-validation (the latest ``max_rows``)."""
    distinct_stars: int
    folds: int
    status: str
    """``"ok"`` or ``"too little data"``."""
    reason: str | None = None
    """Why the status is not ok, in one sentence."""
    spearman: float | None = None
    """Rank correlation of predicted and real stars (None if undefined)."""
    pairwise_accuracy: float | None = None
    """Fraction of pairs with different real stars that the judge orders correctly."""
    n_pairs: int = 0
    mae: float | None = None
    """Mean absolute error in stars."""
    exact_accuracy: float | None = None
    """Fraction of ratings where the rounded prediction equals the real stars."""
    baseline_random_pairwise: float = RANDOM_PAIRWISE
    """Pairwise accuracy of a random scorer (and of any constant one, ties counting half)."""
    baseline_mean_mae: float | None = None
    """MAE of always predicting the training folds' mean stars."""
    baseline_mean_accuracy: float | None = None
    """Exact accuracy of always predicting the (rounded) training folds' mean stars."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.status != STATUS_OK:
            return f"judge: {self.n_ratings} ratings — {self.status} ({self.reason})"
        parts = [f"judge: {self.n_ratings} ratings"]
        parts.append("Spearman n/a" if self.spearman is None else f"Spearman {self.spearman:.2f}")
        pairwise = "n/a" if self.pairwise_accuracy is None else f"{self.pairwise_accuracy:.2f}"
        parts.append(f"pairwise {pairwise} (random {self.baseline_random_pairwise:.2f})")
        if self.mae is not None and self.baseline_mean_mae is not None:
            parts.append(f"MAE {self.mae:.2f} (mean {self.baseline_mean_mae:.2f})")
        return " · ".join(parts)


def _readiness(n: int, distinct: int) -> str | None:
    """None when the judge may predict, else the reason it may not."""
    if n >= MIN_RATINGS and distinct >= 2:
        return None
    return f"need {MIN_RATINGS} with at least two different star values"


def _ridge(
    xtx: np.ndarray, xty: np.ndarray, sum_x: np.ndarray, sum_y: float, n: float, alpha: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge from (uncentred) sufficient statistics: ``stars = (x - mean_x) @ weights + mean_y``.

    Returns (weights, mean_x, mean_y); the intercept is not penalised.
    """
    mean_x = sum_x / n
    centred_xtx = xtx - n * np.outer(mean_x, mean_x)
    centred_xty = xty - mean_x * sum_y
    centred_xtx[np.diag_indices_from(centred_xtx)] += alpha
    return _solve_positive_definite(centred_xtx, centred_xty), mean_x, sum_y / n


def _solve_positive_definite(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Solve ``matrix @ w = vector`` for a symmetric positive definite matrix.

    A Cholesky solve from scipy when it is installed (about twice as fast as LU), else numpy's
    general solver. scipy is imported here, on first use, never at module import.
    """
    try:
        from scipy.linalg import cho_factor, cho_solve
    except ImportError:
        return np.linalg.solve(matrix, vector)
    factor = cho_factor(matrix, lower=False, overwrite_a=True, check_finite=False)
    return np.asarray(cho_solve(factor, vector, check_finite=False))


class PersonalJudge:
    """Ridge regression from (message, response) embeddings to the user's stars.

    ``dim`` is the embedder's dimension and ``embedder`` its name (kept with the model so a
    judge is never fed vectors from another embedder). ``alpha`` is the ridge penalty;
    ``max_rows`` caps the raw ratings kept for evaluation.

    Typical use::

        judge = PersonalJudge(embedder.dim, embedder=embedder.name)
        judge.add(msg_vec, resp_vec, stars)          # after every rating, O(p^2)
        print(judge.evaluate().summary())            # report card, always shown with the judge
        if judge.ready:
            best_first = judge.rank(msg_vec, candidate_vecs)
    """

    def __init__(
        self,
        dim: int,
        *,
        embedder: str = "minilm",
        alpha: float = DEFAULT_ALPHA,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        if max_rows < MIN_RATINGS:
            raise ValueError(f"max_rows must be at least {MIN_RATINGS}, got {max_rows}")
        self.dim = dim
        self.embedder = embedder
        self.alpha = float(alpha)
        self.max_rows = max_rows
        p = self.n_features
        self._xtx = np.zeros((p, p), dtype=np.float64)
        self._xty = np.zeros(p, dtype=np.float64)
        self._sum_x = np.zeros(p, dtype=np.float64)
        self._sum_y = 0.0
        self._star_counts = np.zeros(len(_STAR_VALUES), dtype=np.int64)
        self._msg_rows = np.zeros((0, dim), dtype=np.float32)
        self._resp_rows = np.zeros((0, dim), dtype=np.float32)
        self._star_rows = np.zeros(0, dtype=np.int8)
        self._weights: np.ndarray | None = None
        self._intercept = 0.0

    # ---- state -------------------------------------------------------------------------------

    @property
    def n_features(self) -> int:
        return 2 * self.dim + 1

    @property
    def n_ratings(self) -> int:
        return int(self._star_counts.sum())

    @property
    def star_counts(self) -> dict[int, int]:
        """How many ratings of each star value the model holds."""
        return {s: int(c) for s, c in zip(_STAR_VALUES, self._star_counts, strict=True)}

    @property
    def reason(self) -> str | None:
        """Why the judge refuses to predict, or None when it is ready."""
        return _readiness(self.n_ratings, int(np.count_nonzero(self._star_counts)))

    @property
    def ready(self) -> bool:
        return self.reason is None

    # ---- training ----------------------------------------------------------------------------

    def add(self, msg_vec: np.ndarray, resp_vec: np.ndarray, stars: int) -> None:
        """Record one rating: O(p^2) update of the statistics; the next predict refits."""
        if np.ndim(stars) != 0:
            raise FeedbackError(f"Stars must be one whole number from 1 to 5, got {stars!r}.")
        self.add_many(msg_vec, resp_vec, [stars])

    def add_many(self, msg_vecs: np.ndarray, resp_vecs: np.ndarray, stars: Any) -> None:
        """Record several ratings at once (a batch load from the store); same result as add()."""
        star_values = _check_stars(stars)
        x = self._features(msg_vecs, resp_vecs)
        if x.shape[0] != star_values.size:
            raise ValueError(f"{x.shape[0]} (message, response) pairs for {star_values.size} stars")
        self._update(x, star_values, +1.0)
        messages = np.broadcast_to(_as_matrix(msg_vecs, self.dim, "message vectors"), (x.shape[0], self.dim))
        responses = _as_matrix(resp_vecs, self.dim, "response vectors")
        self._msg_rows = np.concatenate([self._msg_rows, messages.astype(np.float32)])[-self.max_rows :]
        self._resp_rows = np.concatenate([self._resp_rows, responses.astype(np.float32)])[-self.max_rows :]
        self._star_rows = np.concatenate([self._star_rows, star_values.astype(np.int8)])[-self.max_rows :]

    def remove(self, msg_vec: np.ndarray, resp_vec: np.ndarray, stars: int) -> None:
        """Forget one rating added earlier (the interaction was deleted or re-rated).

        The statistics are downdated exactly; the newest matching stored row, if still kept,
        is dropped from the evaluation rows.
        """
        star_values = _check_stars(stars)
        if star_values.size != 1:
            raise FeedbackError(f"Stars must be one whole number from 1 to 5, got {stars!r}.")
        if self._star_counts[int(star_values[0]) - 1] == 0:
            raise ValueError(f"the judge holds no {int(star_values[0])}-star rating to remove")
        x = self._features(msg_vec, resp_vec)
        if x.shape[0] != 1:
            raise ValueError("remove() takes one (message, response) pair")
        self._update(x, star_values, -1.0)
        msg32 = _as_matrix(msg_vec, self.dim, "message vectors").astype(np.float32)
        resp32 = _as_matrix(resp_vec, self.dim, "response vectors").astype(np.float32)
        match = np.flatnonzero(
            (self._star_rows == int(star_values[0]))
            & np.all(self._msg_rows == msg32, axis=1)
            & np.all(self._resp_rows == resp32, axis=1)
        )
        if match.size:
            keep = np.ones(self._star_rows.size, dtype=bool)
            keep[match[-1]] = False
            self._msg_rows, self._resp_rows = self._msg_rows[keep], self._resp_rows[keep]
            self._star_rows = self._star_rows[keep]

    def fit(self) -> PersonalJudge:
        """Solve the ridge problem from the statistics (one p x p solve). Returns self."""
        if self.n_ratings == 0:
            raise JudgeNotReadyError(f"The judge has no ratings yet ({self.reason}).")
        weights, mean_x, mean_y = _ridge(
            self._xtx, self._xty, self._sum_x, self._sum_y, float(self.n_ratings), self.alpha
        )
        self._weights, self._intercept = weights, mean_y - float(mean_x @ weights)
        return self

    # ---- prediction --------------------------------------------------------------------------

    def predict(self, msg_vecs: np.ndarray, resp_vecs: np.ndarray) -> np.ndarray:
        """Predicted stars, clipped to 1..5, for each pair (one message vector broadcasts).

        Raises :class:`JudgeNotReadyError` while the judge has too little data.
        """
        return np.clip(self._raw_scores(msg_vecs, resp_vecs), 1.0, 5.0)

    def rank(self, msg_vec: np.ndarray, candidate_resp_vecs: np.ndarray) -> list[int]:
        """Indices of the candidate responses, best first (ties keep their given order).

        Ranks by the unclipped scores, so two candidates both predicted above 5 stars are still
        ordered. Raises :class:`JudgeNotReadyError` while the judge has too little data.
        """
        msg = _as_matrix(msg_vec, self.dim, "message vector")
        if msg.shape[0] != 1:
            raise ValueError("rank() takes one message vector")
        scores = self._raw_scores(msg, candidate_resp_vecs)
        return [int(i) for i in np.argsort(-scores, kind="stable")]

    # ---- evaluation --------------------------------------------------------------------------

    def evaluate(self, folds: int = 5, seed: int = 0) -> JudgeMetrics:
        """k-fold cross-validated agreement with the stored ratings, next to the baselines."""
        if folds < 2:
            raise ValueError(f"folds must be at least 2, got {folds}")
        n_rows = int(self._star_rows.size)
        y = self._star_rows.astype(np.float64)
        distinct = int(np.unique(y).size)
        reason = self.reason or _readiness(n_rows, distinct)
        if reason is not None:
            return JudgeMetrics(
                n_ratings=self.n_ratings,
                n_evaluated=n_rows,
                distinct_stars=distinct,
                folds=0,
                status=STATUS_TOO_LITTLE,
                reason=reason,
            )

        folds = min(folds, n_rows)
        x = features(self._msg_rows, self._resp_rows)
        xtx_all, xty_all, sum_x_all = x.T @ x, x.T @ y, x.sum(axis=0)
        order = np.random.default_rng(seed).permutation(n_rows)
        signal = np.empty(n_rows)  # prediction minus the training folds' mean stars
        mean_predicted = np.empty(n_rows)  # the training folds' mean stars
        for held in np.array_split(order, folds):
            xh, yh = x[held], y[held]
            weights, mean_x, mean_y = _ridge(
                xtx_all - xh.T @ xh,
                xty_all - xh.T @ yh,
                sum_x_all - xh.sum(axis=0),
                float(y.sum() - yh.sum()),
                float(n_rows - held.size),
                self.alpha,
            )
            signal[held] = (xh - mean_x) @ weights
            mean_predicted[held] = mean_y
        predicted = np.clip(signal + mean_predicted, 1.0, 5.0)

        # Rank agreement is scored on the signal: the training mean differs from fold to fold and
        # is lower exactly where the held-out fold's stars are higher, so pooling full predictions
        # would make every fold's offset count against the judge (badly so with few ratings).
        pairwise, n_pairs = pairwise_accuracy(y, signal)
        return JudgeMetrics(
            n_ratings=self.n_ratings,
            n_evaluated=n_rows,
            distinct_stars=distinct,
            folds=folds,
            status=STATUS_OK,
            spearman=spearman(y, signal),
            pairwise_accuracy=pairwise,
            n_pairs=n_pairs,
            mae=float(np.abs(predicted - y).mean()),
            exact_accuracy=float((np.round(predicted) == y).mean()),
            baseline_mean_mae=float(np.abs(mean_predicted - y).mean()),
            baseline_mean_accuracy=float((np.round(mean_predicted) == y).mean()),
        )

    # ---- storage -----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole judge (statistics and evaluation rows) as an ``np.savez`` blob for the store.

        ``X^T X`` is stored as its upper triangle: about ``2.4 MB`` for MiniLM, plus
        ``3 kB`` per kept rating.
        """
        upper = np.triu_indices(self.n_features)
        meta = {
            "format": _FORMAT_VERSION,
            "dim": self.dim,
            "embedder": self.embedder,
            "alpha": self.alpha,
            "max_rows": self.max_rows,
            "sum_y": self._sum_y,
        }
        buffer = io.BytesIO()
        np.savez(
            buffer,
            meta=np.array(json.dumps(meta)),
            xtx_upper=self._xtx[upper],
            xty=self._xty,
            sum_x=self._sum_x,
            star_counts=self._star_counts,
            msg_rows=self._msg_rows,
            resp_rows=self._resp_rows,
            star_rows=self._star_rows,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> PersonalJudge:
        """A judge saved by :meth:`to_bytes`; predicts exactly as the saved one did."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != _FORMAT_VERSION:
                raise ValueError(f"unsupported judge format {meta.get('format')!r}")
            judge = cls(
                int(meta["dim"]), embedder=meta["embedder"], alpha=meta["alpha"], max_rows=meta["max_rows"]
            )
            upper = np.triu_indices(judge.n_features)
            judge._xtx[upper] = data["xtx_upper"]
            judge._xtx.T[upper] = data["xtx_upper"]
            judge._xty = data["xty"].astype(np.float64)
            judge._sum_x = data["sum_x"].astype(np.float64)
            judge._star_counts = data["star_counts"].astype(np.int64)
            judge._msg_rows = data["msg_rows"].astype(np.float32)
            judge._resp_rows = data["resp_rows"].astype(np.float32)
            judge._star_rows = data["star_rows"].astype(np.int8)
        judge._sum_y = float(meta["sum_y"])
        return judge

    # ---- internals ---------------------------------------------------------------------------

    def _features(self, msg_vecs: np.ndarray, resp_vecs: np.ndarray) -> np.ndarray:
        _as_matrix(resp_vecs, self.dim, "response vectors")  # check the dimension up front
        return features(msg_vecs, resp_vecs)

    def _update(self, x: np.ndarray, y: np.ndarray, sign: float) -> None:
        self._xtx += sign * (np.outer(x[0], x[0]) if x.shape[0] == 1 else x.T @ x)
        self._xty += sign * (x.T @ y)
        self._sum_x += sign * x.sum(axis=0)
        self._sum_y += sign * float(y.sum())
        np.add.at(self._star_counts, y.astype(np.int64) - 1, int(sign))
        self._weights = None

    def _raw_scores(self, msg_vecs: np.ndarray, resp_vecs: np.ndarray) -> np.ndarray:
        self._require_ready()
        if self._weights is None:
            self.fit()
        assert self._weights is not None
        return self._features(msg_vecs, resp_vecs) @ self._weights + self._intercept

    def _require_ready(self) -> None:
        reason = self.reason
        if reason is not None:
            raise JudgeNotReadyError(
                f"The judge has {self.n_ratings} ratings — too little data to predict ({reason})."
            )
