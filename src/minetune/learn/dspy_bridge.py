"""DSPy bridge: the user's ratings as a DSPy trainset and metric, DSPy optimizers run on them,
and the optimized program imported back as a new program version.

The mapping, in both directions::

    minetune                                   DSPy
    -----------------------------------------  ---------------------------------------------------
    active version: instructions + lessons     signature ``message -> response`` whose instructions
                                               are the rendered system prompt (without demos)
    demo_policy["pinned"]                      the predictor's demos
    attempts rated 4-5 stars                   trainset: Example(message, response).with_inputs("message")
    every rating (1-5 stars) and critique      the metric (``StarMetric``) and GEPA's feedback metric
    new version (note "dspy:<name>")      <--  optimized instructions and chosen demos

**How the metric scores a prediction.** For the message of the example, take every answer the
user rated for that message (same text up to whitespace), each with its stars ``s`` in 1..5.
With ``F1(a, b)`` the token F1 of the lower-cased word tokens (``\\w+``) of two texts, the
prediction ``p`` and ``best`` the highest-rated answer (the latest one on ties)::

    reward  = max over rated answers a of  F1(p, a) * s(a) / 5
    penalty = max over answers a rated <= 2 of  max(0, F1(p, a) - F1(p, best)) * (3 - s(a)) / 2
    score   = clamp(reward - penalty, 0, 1)

So repeating the user's 5-star answer scores 1.0, repeating a 4-star answer 0.8, an unrelated
answer about 0, and an answer that is closer to one the user rated 1 star (weight 1.0) or 2 stars
(weight 0.5) than to the best-rated one loses that margin. A message the user never rated is
scored against the example's own ``response`` as if it had 5 stars. GEPA's feedback metric gives
the same score plus a text that quotes the best-rated answer, says which low-rated answer the
prediction resembles, and lists every critique the user wrote for that message.

Labels are always the user's rated responses: when an optimizer bootstraps demos (regenerated
text), only demos whose response equals a response the user accepted (4-5 stars) for the same
message are pinned; the others are dropped and counted in the report.

dspy is imported inside the functions that need it (``pip install 'minetune[dspy]'``).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from minetune.config import Settings, load_settings
from minetune.errors import MinetuneError, ModelError
from minetune.models.keys import key_for
from minetune.models.spec import parse_spec
from minetune.program import render_system_prompt
from minetune.store.repo import DEFAULT_PROGRAM, Store, effective_ratings
from minetune.store.schema import Attempt, Conversation, Feedback, Program, Turn

ACCEPTED_STARS = 4
"""An attempt rated at least this many stars is an accepted answer (trainset row, possible demo)."""

MIN_TRAINSET = 2
"""Optimizing needs at least this many accepted answers."""

OPTIMIZERS = ("LabeledFewShot", "BootstrapFewShot", "KNNFewShot", "MIPROv2", "GEPA")
"""The DSPy optimizers :func:`optimize` runs."""

DEFAULT_MAX_LM_CALLS = 300
"""Default hard cap on the optimizer's model requests in one :func:`optimize` run, on top of two
requests per trainset example for the evaluation before and after."""

SEARCH_VALSET = 16
"""MIPROv2 and GEPA score their candidates on at most this many trainset examples."""

_OPTIONS: dict[str, set[str]] = {
    "LabeledFewShot": {"k"},
    "BootstrapFewShot": {"max_bootstrapped_demos", "max_labeled_demos", "max_rounds", "metric_threshold"},
    "KNNFewShot": {"k", "embedder"},
    "MIPROv2": {
        "num_candidates", "num_trials", "max_bootstrapped_demos", "max_labeled_demos", "prompt_model", "seed",
    },
    "GEPA": {"max_metric_calls", "auto", "reflection_model", "reflection_minibatch_size", "seed"},
}
_COMMON_OPTIONS = {"max_lm_calls", "chain_of_thought", "activate", "settings"}


# ---------------------------------------------------------------------------------------------------
# Rated examples from the store
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatedExample:
    """One rated attempt: the user's message, the response they rated, its effective stars."""

    attempt_id: int
    turn_id: int
    message: str
    response: str
    stars: int
    critiques: str = ""  # every critique written on this attempt, oldest first, one per line

    @property
    def accepted(self) -> bool:
        return self.stars >= ACCEPTED_STARS


def rated_examples(store: Store, program: str = DEFAULT_PROGRAM) -> list[RatedExample]:
    """Every rated attempt of ``program`` (of ``store``'s user), oldest attempt first; turns the
    user excluded are left out.

    Stars are each attempt's effective rating (the latest explicit one wins, see
    :func:`minetune.store.repo.effective_ratings`); attempts without stars are left out.
    """
    program_id = store.program(program).id  # NotFoundError for a program this user does not have
    with store.db.transaction() as s:
        rows = s.execute(
            select(
                Feedback.attempt_id,
                Feedback.kind,
                Feedback.stars,
                Feedback.critique,
                Attempt.turn_id,
                Turn.user_message,
                Attempt.response,
            )
            .join(Attempt, Feedback.attempt_id == Attempt.id)
            .join(Turn, Attempt.turn_id == Turn.id)
            .join(Conversation, Turn.conversation_id == Conversation.id)
            .join(Program, Program.id == Conversation.program_id)
            .where(
                Conversation.program_id == program_id,
                Program.user_id == store.user_id,
                Turn.excluded.is_(False),
            )
            .order_by(Feedback.id)
        ).all()
    ratings = effective_ratings((row[0], row[1], row[2]) for row in rows)
    critiques: dict[int, list[str]] = {}
    info: dict[int, tuple[int, str, str]] = {}
    for attempt_id, _kind, _stars, critique, turn_id, message, response in rows:
        info[attempt_id] = (turn_id, message, response)
        text = (critique or "").strip()
        if text and text not in critiques.setdefault(attempt_id, []):
            critiques[attempt_id].append(text)
    return [
        RatedExample(
            attempt_id=attempt_id,
            turn_id=info[attempt_id][0],
            message=info[attempt_id][1],
            response=info[attempt_id][2],
            stars=stars,
            critiques="\n".join(critiques.get(attempt_id, [])),
        )
        for attempt_id, stars in sorted(ratings.items())
    ]


# ---------------------------------------------------------------------------------------------------
# The metric (pure Python; exported verbatim into program.py by export_dspy)
# ---------------------------------------------------------------------------------------------------


def message_key(message: str) -> str:
    """Messages are the same message when they match up to whitespace."""
    return " ".join(message.split())


def token_f1(a: str, b: str) -> float:
    """Token F1 of the lower-cased word tokens of two texts (1.0 for two empty texts)."""
    ta = re.findall(r"\w+", a.lower())
    tb = re.findall(r"\w+", b.lower())
    if not ta or not tb:
        return 1.0 if ta == tb else 0.0
    common = sum((Counter(ta) & Counter(tb)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(ta), common / len(tb)
    return 2 * precision * recall / (precision + recall)


def star_score(prediction: str, rated: Sequence[tuple[str, int, str]]) -> float:
    """Score ``prediction`` against the user's rated answers to one message: (response, stars,
    critiques) triples, oldest first. See the module docstring for the formula."""
    if not rated:
        return 0.0
    best = max(range(len(rated)), key=lambda i: (rated[i][1], i))
    best_sim = token_f1(prediction, rated[best][0])
    reward = max(token_f1(prediction, response) * stars / 5 for response, stars, _ in rated)
    penalty = max(
        (
            max(0.0, token_f1(prediction, response) - best_sim) * (3 - stars) / 2
            for response, stars, _ in rated
            if stars <= 2
        ),
        default=0.0,
    )
    return round(min(1.0, max(0.0, reward - penalty)), 4)


def star_feedback(prediction: str, rated: Sequence[tuple[str, int, str]]) -> str:
    """The text GEPA's reflection reads: the score, the best-rated answer, the closest low-rated
    answer, and the user's critiques of answers to this message."""

    def clip(text: str, limit: int = 600) -> str:
        text = text.strip()
        return text if len(text) <= limit else text[:limit] + " [...]"

    score = star_score(prediction, rated)
    if not rated:
        return f"Score {score:.2f}. The user has not rated any answer to this message."
    best = max(range(len(rated)), key=lambda i: (rated[i][1], i))
    best_response, best_stars, _ = rated[best]
    lines = [
        f"Score {score:.2f} out of 1 (word overlap with the answers the user rated, weighted by stars).",
        f"The answer the user rated best ({best_stars}/5 stars) was:\n{clip(best_response)}",
        f"Your answer overlaps it with token F1 {token_f1(prediction, best_response):.2f}.",
    ]
    low = [(token_f1(prediction, r), r, s) for r, s, _ in rated if s <= 2]
    if low:
        sim, response, stars = max(low, key=lambda t: t[0])
        if sim > token_f1(prediction, best_response):
            lines.append(
                f"Your answer is closer to an answer the user rated only {stars}/5 stars:\n{clip(response)}"
            )
    critiques = [(s, c) for _, s, c in rated if c.strip()]
    if critiques:
        lines.append("What the user said about answers to this message:")
        lines += [f"- on a {s}/5 answer: {c.strip()}" for s, c in critiques]
    return "\n".join(lines)


class StarMetric:
    """The user's stars as a DSPy metric: ``metric(example, prediction, trace=None) -> float``.

    ``metric.feedback`` is the GEPA form: ``(gold, pred, trace, pred_name, pred_trace) ->
    dspy.Prediction(score=..., feedback=...)``.
    """

    def __init__(self, examples: Iterable[RatedExample]) -> None:
        self._rated: dict[str, list[tuple[str, int, str]]] = {}
        for ex in sorted(examples, key=lambda e: e.attempt_id):
            self._rated.setdefault(message_key(ex.message), []).append((ex.response, ex.stars, ex.critiques))

    def rated(self, message: str, fallback: str | None = None) -> list[tuple[str, int, str]]:
        """The rated (response, stars, critiques) of a message; ``fallback`` as 5 stars if none."""
        found = self._rated.get(message_key(message))
        if found:
            return list(found)
        return [(fallback, 5, "")] if fallback else []

    def score(self, message: str, prediction: str, fallback: str | None = None) -> float:
        return star_score(prediction, self.rated(message, fallback))

    def __call__(self, example: Any, pred: Any, trace: Any = None) -> float:
        return self.score(_field(example, "message"), _field(pred, "response"), _field(example, "response"))

    def feedback(
        self, gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
    ) -> Any:
        dspy = _dspy()
        rated = self.rated(_field(gold, "message"), _field(gold, "response"))
        prediction = _field(pred, "response")
        return dspy.Prediction(score=star_score(prediction, rated), feedback=star_feedback(prediction, rated))


def _field(obj: Any, name: str) -> str:
    """A text field of a dspy Example/Prediction or a dict ('' when missing)."""
    if isinstance(obj, dict):
        value = obj.get(name)
    else:
        try:
            value = obj[name]
        except (KeyError, TypeError, AttributeError, IndexError):
            value = getattr(obj, name, None)
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------------------------------
# minetune -> DSPy
# ---------------------------------------------------------------------------------------------------


def _dspy() -> Any:
    """Import dspy with its network and home-directory traps disarmed."""
    if "dspy" not in sys.modules:  # both are read once, when dspy is first imported
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("DSPY_CACHEDIR", str(load_settings().home / "dspy-cache"))
    try:
        import dspy
    except ImportError as exc:
        raise MinetuneError("The DSPy bridge needs dspy: pip install 'minetune[dspy]'") from exc
    return dspy


@dataclass
class _VersionView:
    number: int
    instructions: str
    lessons: list[Any]
    demo_policy: dict[str, Any]
    model_spec: str | None
    adapter: str | None


def dspy_instructions(version: Any) -> str:
    """The version's system prompt (instructions and lessons) without its demos, which DSPy
    renders itself from the predictor's demos."""
    policy = {k: v for k, v in (version.demo_policy or {}).items() if k != "pinned"}
    view = _VersionView(
        version.number, version.instructions, list(version.lessons or []), policy, version.model_spec,
        version.adapter,
    )
    return render_system_prompt(view)


_MODULE_CLASS: Any = None
_CLASS_LOCK = threading.Lock()


def _module_class() -> Any:
    """``MinetuneProgram(dspy.Module)``, defined on first use so that dspy is imported lazily."""
    global _MODULE_CLASS
    with _CLASS_LOCK:
        if _MODULE_CLASS is None:
            dspy = _dspy()

            class MinetuneProgram(dspy.Module):  # type: ignore[name-defined]
                """One predictor ``message -> response`` under the program's instructions."""

                def __init__(self, instructions: str, chain_of_thought: bool = False) -> None:
                    super().__init__()
                    signature = dspy.Signature("message -> response", instructions)
                    self.respond = (dspy.ChainOfThought if chain_of_thought else dspy.Predict)(signature)

                def forward(self, message: str) -> Any:
                    return self.respond(message=message)

            _MODULE_CLASS = MinetuneProgram
        return _MODULE_CLASS


def _accepted_trainset(examples: Iterable[RatedExample]) -> list[RatedExample]:
    """Accepted examples, oldest first, one per distinct (message, response)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for ex in sorted(examples, key=lambda e: e.attempt_id):
        pair = (message_key(ex.message), ex.response)
        if ex.accepted and pair not in seen:
            seen.add(pair)
            out.append(ex)
    return out


def to_dspy(
    program_version: Any, examples: Sequence[RatedExample], *, chain_of_thought: bool = False
) -> tuple[Any, list[Any], StarMetric]:
    """``(module, trainset, metric)`` for a program version and its rated examples.

    The module is a ``dspy.Module`` with one ``dspy.Predict`` (or ``ChainOfThought``) over
    ``message -> response`` whose instructions are :func:`dspy_instructions` of the version and
    whose demos are the version's pinned demos. The trainset holds the accepted examples (4-5
    stars) as ``dspy.Example(message=..., response=...).with_inputs("message")``. The metric is a
    :class:`StarMetric` over all ``examples``.
    """
    dspy = _dspy()
    module = _module_class()(dspy_instructions(program_version), chain_of_thought)
    pinned = [
        dspy.Example(message=str(d["user"]), response=str(d["response"])).with_inputs("message")
        for d in (program_version.demo_policy or {}).get("pinned", [])
        if isinstance(d, dict) and d.get("user") and d.get("response") is not None
    ]
    for predictor in module.predictors():
        predictor.demos = list(pinned)
    trainset = [
        dspy.Example(message=ex.message, response=ex.response).with_inputs("message")
        for ex in _accepted_trainset(examples)
    ]
    return module, trainset, StarMetric(examples)


def _ollama_root(url: str) -> str:
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def _lm_args(spec: str, settings: Settings | None) -> tuple[str, dict[str, Any]]:
    parsed = parse_spec(spec)
    settings = settings or load_settings()
    if parsed.backend == "openai":
        key = key_for(settings, settings.openai_base_url)
        if key is None:
            raise ModelError(f"{parsed.raw} needs an API key: set OPENAI_API_KEY=sk-...")
        base, api_key = settings.openai_base_url, key.value
    elif parsed.backend == "ollama":
        base, api_key = f"{_ollama_root(settings.ollama_url)}/v1", "ollama"
    elif parsed.backend == "openai-compatible":
        assert parsed.base_url is not None
        scoped = key_for(settings, parsed.base_url)  # only a key scoped to this URL (models.keys)
        base, api_key = parsed.base_url, scoped.value if scoped else "unused"
    else:
        raise ModelError(
            f"DSPy optimizers need a model served over HTTP, not {parsed.raw}: serve it with vLLM or "
            "llama.cpp and use openai-compatible:<model>@<url>, or use ollama:<model>."
        )
    return f"openai/{parsed.model}", {
        "api_base": base,
        "api_key": api_key,
        "cache": False,
        "num_retries": 1,
        "timeout": settings.request_timeout,
    }


def lm_for_spec(spec: str, *, settings: Settings | None = None, **lm_kwargs: Any) -> Any:
    """A ``dspy.LM`` for an ``openai:``, ``ollama:`` or ``openai-compatible:`` model spec.

    All three go through DSPy's OpenAI-compatible client: ``openai:`` to ``OPENAI_BASE_URL`` with
    ``OPENAI_API_KEY``, ``ollama:`` to ``MINETUNE_OLLAMA_URL``/v1, ``openai-compatible:`` to its URL
    with the key scoped to that URL (:mod:`minetune.models.keys`; a dummy key when none is). Responses are
    never cached (``cache=False``). ``lm_kwargs`` (temperature, max_tokens, ...) go to ``dspy.LM``.
    """
    model, kwargs = _lm_args(spec, settings)
    return _dspy().LM(model, **(kwargs | lm_kwargs))


# ---------------------------------------------------------------------------------------------------
# Optimizing
# ---------------------------------------------------------------------------------------------------


class BudgetExceededError(MinetuneError):
    """An optimizer needed more model requests than ``max_lm_calls`` allows."""


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.exceeded = False
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self.used >= self.limit:
                self.exceeded = True
                raise BudgetExceededError(f"The LM-call budget of {self.limit} requests is spent.")
            self.used += 1


_BUDGET_LM_CLASS: Any = None


def _budget_lm(spec: str, budget: _Budget, settings: Settings | None) -> Any:
    """A ``dspy.LM`` that counts every request against ``budget`` (copies share the budget)."""
    global _BUDGET_LM_CLASS
    dspy = _dspy()
    with _CLASS_LOCK:
        if _BUDGET_LM_CLASS is None:

            class BudgetLM(dspy.LM):  # type: ignore[name-defined]
                budget: _Budget | None = None

                def __call__(self, *args: Any, **kwargs: Any) -> Any:
                    if self.budget is not None:
                        self.budget.take()
                    return super().__call__(*args, **kwargs)

                async def acall(self, *args: Any, **kwargs: Any) -> Any:
                    if self.budget is not None:
                        self.budget.take()
                    return await super().acall(*args, **kwargs)

            _BUDGET_LM_CLASS = BudgetLM
    model, kwargs = _lm_args(spec, settings)
    lm = _BUDGET_LM_CLASS(model, **kwargs)
    lm.budget = budget
    return lm


@dataclass(frozen=True)
class OptimizeReport:
    """What one :func:`optimize` run did. Scores are mean :class:`StarMetric` scores (0..1) on the
    trainset, so they measure fit to the user's accepted answers rather than generalisation."""

    optimizer: str
    program: str
    version: int
    parent_version: int
    model_spec: str
    trainset_size: int
    score_before: float
    score_after: float
    instructions_changed: bool
    pinned: list[dict[str, Any]]
    dropped_demos: int
    lm_calls: int
    elapsed_s: float
    notes: list[str] = field(default_factory=list)


def _canonical(optimizer: str) -> str:
    for name in OPTIMIZERS:
        if name.lower() == (optimizer or "").strip().lower():
            return name
    raise MinetuneError(f"Unknown DSPy optimizer {optimizer!r}; supported: {', '.join(OPTIMIZERS)}.")


def _evaluate(module: Any, trainset: list[Any], metric: StarMetric, spec: str) -> float:
    """Mean metric over the trainset; an example whose call fails scores 0 (all failing is an error,
    and so is an unreachable server or a rejected key)."""
    from dspy import LMAuthError, LMTransportError

    scores = []
    errors: list[Exception] = []
    for example in trainset:
        try:
            prediction = module(**example.inputs())
        except BudgetExceededError:
            raise
        except (LMTransportError, LMAuthError) as exc:
            raise ModelError(f"DSPy cannot use {spec}: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # parse errors and the like: this example scores 0
            errors.append(exc)
            scores.append(0.0)
            continue
        scores.append(metric(example, prediction))
    if trainset and len(errors) == len(trainset):
        first = errors[0]
        raise ModelError(f"DSPy got no usable answer from {spec}: {type(first).__name__}: {first}")
    return round(sum(scores) / len(scores), 4) if scores else 0.0


def _compile(
    dspy: Any, name: str, module: Any, trainset: list[Any], metric: StarMetric, lm: Any,
    opts: dict[str, Any], settings: Settings | None, budget: _Budget, notes: list[str],
) -> Any:
    n = len(trainset)
    if name == "LabeledFewShot":
        return dspy.LabeledFewShot(k=opts.get("k", 4)).compile(module, trainset=trainset)
    if name == "BootstrapFewShot":
        optimizer = dspy.BootstrapFewShot(
            metric=metric,
            metric_threshold=opts.get("metric_threshold", 0.5),
            max_bootstrapped_demos=opts.get("max_bootstrapped_demos", 2),
            max_labeled_demos=opts.get("max_labeled_demos", 4),
            max_rounds=opts.get("max_rounds", 1),
        )
        return optimizer.compile(module, trainset=trainset)
    if name == "KNNFewShot":
        encode = opts.get("embedder")
        if encode is None:
            from minetune.learn.embed import load_embedder

            encode = load_embedder().encode
        k = min(int(opts.get("k", 3)), n)
        knn = dspy.KNNFewShot(
            k=k, trainset=trainset, vectorizer=dspy.Embedder(encode, caching=False),
            max_bootstrapped_demos=0, max_labeled_demos=k,
        )
        notes.append(
            f"KNNFewShot chooses {k} demos per message at answer time; the new version keeps that as "
            f"demo_policy k={k} (minetune's own per-message retrieval) and pins no fixed demos. Its trainset "
            "score includes each example's own answer among its neighbours."
        )
        return knn.compile(module)
    if name == "MIPROv2":
        if importlib.util.find_spec("optuna") is None:
            raise MinetuneError("MIPROv2 needs optuna: pip install optuna (or use GEPA or BootstrapFewShot).")
        prompt_model = lm
        if opts.get("prompt_model"):
            prompt_model = _budget_lm(str(opts["prompt_model"]), budget, settings)
        optimizer = dspy.MIPROv2(
            metric=metric,
            prompt_model=prompt_model,
            task_model=lm,
            auto=None,
            num_candidates=opts.get("num_candidates", 2),
            max_bootstrapped_demos=opts.get("max_bootstrapped_demos", 1),
            max_labeled_demos=opts.get("max_labeled_demos", 4),
            num_threads=1,
            seed=opts.get("seed", 9),
            verbose=False,
            track_stats=False,
        )
        return optimizer.compile(
            module, trainset=trainset, valset=_search_valset(trainset), num_trials=opts.get("num_trials", 3),
            minibatch=False,
        )
    assert name == "GEPA"
    reflection_lm = lm
    if opts.get("reflection_model"):
        reflection_lm = _budget_lm(str(opts["reflection_model"]), budget, settings)
    budget_kw: dict[str, Any] = (
        {"auto": opts["auto"]}
        if opts.get("auto")
        else {"max_metric_calls": opts.get("max_metric_calls", min(4 * n, 200))}
    )
    optimizer = dspy.GEPA(
        metric=metric.feedback,
        reflection_lm=reflection_lm,
        reflection_minibatch_size=min(int(opts.get("reflection_minibatch_size", 3)), n),
        num_threads=1,
        track_stats=False,
        seed=opts.get("seed", 0),
        **budget_kw,
    )
    return optimizer.compile(module, trainset=trainset, valset=_search_valset(trainset))


def _search_valset(trainset: list[Any]) -> list[Any]:
    """The examples MIPROv2 and GEPA score candidates on: all, or a fixed sample of SEARCH_VALSET."""
    if len(trainset) <= SEARCH_VALSET:
        return list(trainset)
    return random.Random(0).sample(trainset, SEARCH_VALSET)


def _strip_lessons(new_instructions: str, version: Any) -> str:
    """Drop the rendered lessons block from optimized instructions: lessons stay in the version's
    own lessons and are rendered after the instructions anyway."""
    rendered, base = dspy_instructions(version), version.instructions.strip()
    block = rendered[len(base):].strip() if rendered.startswith(base) else ""
    if block and block in new_instructions:
        new_instructions = re.sub(r"\n{3,}", "\n\n", new_instructions.replace(block, ""))
    return new_instructions.strip()


def _first_predictor(module: Any) -> Any:
    return module.predictors()[0]


def optimize(
    store: Store,
    program: str,
    optimizer: str,
    model_spec: str | None = None,
    **kw: Any,
) -> OptimizeReport:
    """Run a DSPy optimizer on the user's ratings and import the result as a new program version.

    ``optimizer`` is one of :data:`OPTIMIZERS` (any case). ``model_spec`` is the model DSPy calls
    (default: the active version's, then ``MINETUNE_MODEL``). Options, all optional:
    ``max_lm_calls`` (hard cap on model requests; default 300 plus 2 per trainset example for the
    evaluation before and after), ``chain_of_thought``, ``activate``
    (default True), ``settings``; LabeledFewShot ``k``; BootstrapFewShot ``max_bootstrapped_demos``,
    ``max_labeled_demos``, ``max_rounds``, ``metric_threshold``; KNNFewShot ``k``, ``embedder``
    (texts -> unit vectors; default :func:`minetune.learn.embed.load_embedder`); MIPROv2
    ``num_candidates``, ``num_trials``, ``max_bootstrapped_demos``, ``max_labeled_demos``,
    ``prompt_model`` (a spec), ``seed``; GEPA ``max_metric_calls`` (default 4 x trainset size, at most 200) or
    ``auto``, ``reflection_model`` (a spec), ``reflection_minibatch_size``, ``seed``.

    The new version (note ``dspy:<name>``) has the optimized instructions when they changed, the
    active demo policy with ``pinned`` set to the demos the optimizer chose (each one the user's
    own accepted response), and ``sources`` with the optimizer, trainset attempt ids, parent
    version and scores. Nothing is written when the run fails.
    """
    name = _canonical(optimizer)
    allowed = _OPTIONS[name] | _COMMON_OPTIONS
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise MinetuneError(
            f"{name} does not take {', '.join(unknown)}; it takes: {', '.join(sorted(allowed))}."
        )
    settings: Settings | None = kw.get("settings")
    started = time.perf_counter()
    version = store.active_version(program)
    examples = rated_examples(store, program)
    accepted = _accepted_trainset(examples)
    if len(accepted) < MIN_TRAINSET:
        raise MinetuneError(
            f"DSPy optimization of {program!r} needs at least {MIN_TRAINSET} accepted answers "
            f"(rated {ACCEPTED_STARS}-5 stars); it has {len(accepted)}. Rate more answers first."
        )
    spec = (model_spec or version.model_spec or (settings or load_settings()).model or "").strip()
    if not spec:
        raise MinetuneError("Name the model DSPy should call (a model spec such as ollama:llama3.2).")
    spec = parse_spec(spec).raw

    dspy = _dspy()
    module, trainset, metric = to_dspy(version, examples, chain_of_thought=bool(kw.get("chain_of_thought")))
    budget = _Budget(int(kw.get("max_lm_calls", DEFAULT_MAX_LM_CALLS + 2 * len(trainset))))
    lm = _budget_lm(spec, budget, settings)
    notes: list[str] = []
    opts = {k: v for k, v in kw.items() if k in _OPTIONS[name]}
    try:
        with dspy.context(lm=lm):
            before = _evaluate(module, trainset, metric, spec)
            compiled = _compile(dspy, name, module, trainset, metric, lm, opts, settings, budget, notes)
            after = _evaluate(compiled, trainset, metric, spec)
    except BudgetExceededError:
        raise BudgetExceededError(
            f"{name} needed more than {budget.limit} model requests; nothing was changed. "
            "Raise max_lm_calls or use a cheaper optimizer (LabeledFewShot, BootstrapFewShot)."
        ) from None
    if budget.exceeded:
        raise BudgetExceededError(
            f"{name} ran past its budget of {budget.limit} model requests (some calls failed); "
            "nothing was changed. Raise max_lm_calls."
        )

    # Instructions: imported only when the optimizer changed them.
    old_instructions = _first_predictor(module).signature.instructions
    new_instructions = _first_predictor(compiled).signature.instructions
    changes: dict[str, Any] = {}
    instructions_changed = new_instructions.strip() != old_instructions.strip()
    if instructions_changed:
        changes["instructions"] = _strip_lessons(new_instructions, version)

    # Demos: only the user's own accepted responses for the same message.
    by_pair: dict[tuple[str, str], RatedExample] = {}
    for ex in sorted(accepted, key=lambda e: (e.stars, e.attempt_id)):
        by_pair[(message_key(ex.message), ex.response)] = ex
    pinned: list[dict[str, Any]] = []
    dropped = 0
    for predictor in compiled.predictors():
        for demo in predictor.demos or []:
            match = by_pair.get((message_key(_field(demo, "message")), _field(demo, "response")))
            if match is None:
                dropped += 1
            elif all(p["attempt_id"] != match.attempt_id for p in pinned):
                pinned.append(
                    {"user": match.message, "response": match.response, "attempt_id": match.attempt_id}
                )
    if dropped:
        notes.append(
            f"Dropped {dropped} demo(s) whose response was regenerated by the model rather than an answer "
            "the user accepted; pinned demos are always the user's own rated responses."
        )
    demo_policy = dict(version.demo_policy or {}) | {"pinned": pinned}
    if name == "KNNFewShot":
        demo_policy["k"] = min(int(opts.get("k", 3)), len(trainset))
    changes["demo_policy"] = demo_policy
    if after < before:
        notes.append(f"The trainset score fell from {before:.3f} to {after:.3f}.")

    if store.active_version(program).number != version.number:
        raise MinetuneError(
            f"Program {program!r} changed while {name} ran (active version is no longer "
            f"{version.number}); nothing was imported. Run it again."
        )
    new_version = store.add_version(
        program,
        note=f"dspy:{name}",
        activate=bool(kw.get("activate", True)),
        sources={
            "optimizer": f"dspy:{name}",
            "trainset_attempt_ids": [ex.attempt_id for ex in accepted],
            "parent_version": version.number,
            "score_before": before,
            "score_after": after,
            "model": spec,
            "lm_calls": budget.used,
            "dropped_demos": dropped,
        },
        **changes,
    )
    return OptimizeReport(
        optimizer=name,
        program=program,
        version=new_version.number,
        parent_version=version.number,
        model_spec=spec,
        trainset_size=len(trainset),
        score_before=before,
        score_after=after,
        instructions_changed=instructions_changed,
        pinned=pinned,
        dropped_demos=dropped,
        lm_calls=budget.used,
        elapsed_s=round(time.perf_counter() - started, 3),
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------

_PROGRAM_TEMPLATE = '''"""A DSPy program exported by minetune: program {program!r}, version {version}.

Use it from your own DSPy code (run from this folder, or put it on sys.path)::

    import dspy
    from program import load_program

    dspy.configure(lm=dspy.LM("openai/gpt-4o-mini"))
    module, trainset, metric = load_program()
    optimized = dspy.BootstrapFewShot(metric=metric).compile(module, trainset=trainset)
    print(optimized(message="...").response)

Files beside this one:
  trainset.jsonl  the answers the user accepted (4-5 stars): message, response, stars, attempt_id
  ratings.jsonl   every rated answer (1-5 stars) with the user's critiques; the metric reads it

The metric: for a message, reward = best token-F1 to a rated answer times its stars / 5, minus
a penalty when the prediction is closer to an answer rated 1-2 stars than to the best-rated one
(weight 1.0 for 1 star, 0.5 for 2 stars); clamped to 0..1. ``feedback_metric`` is the GEPA form.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import dspy

HERE = Path(__file__).resolve().parent
INSTRUCTIONS = {instructions!r}
PINNED = {pinned}  # demos pinned in this version: (message, response)


{functions}

def load_jsonl(name: str) -> list[dict]:
    with open(HERE / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_trainset() -> list[dspy.Example]:
    return [
        dspy.Example(message=row["message"], response=row["response"]).with_inputs("message")
        for row in load_jsonl("trainset.jsonl")
    ]


RATED: dict[str, list[tuple[str, int, str]]] = {{}}
for _row in load_jsonl("ratings.jsonl"):
    RATED.setdefault(message_key(_row["message"]), []).append(
        (_row["response"], int(_row["stars"]), _row.get("critiques") or "")
    )


def _rated(example) -> list[tuple[str, int, str]]:
    return RATED.get(message_key(example.message)) or [(example.get("response") or "", 5, "")]


def metric(example, pred, trace=None) -> float:
    return star_score(pred.response or "", _rated(example))


def feedback_metric(gold, pred, trace=None, pred_name=None, pred_trace=None) -> dspy.Prediction:
    rated = _rated(gold)
    return dspy.Prediction(score=star_score(pred.response or "", rated),
                           feedback=star_feedback(pred.response or "", rated))


class MinetuneProgram(dspy.Module):
    def __init__(self, instructions: str = INSTRUCTIONS, chain_of_thought: bool = False) -> None:
        super().__init__()
        signature = dspy.Signature("message -> response", instructions)
        self.respond = (dspy.ChainOfThought if chain_of_thought else dspy.Predict)(signature)
        self.respond.demos = [
            dspy.Example(message=m, response=r).with_inputs("message") for m, r in PINNED
        ]

    def forward(self, message: str):
        return self.respond(message=message)


def load_program(chain_of_thought: bool = False):
    """(module, trainset, metric), as minetune's DSPy bridge builds them."""
    return MinetuneProgram(chain_of_thought=chain_of_thought), load_trainset(), metric
'''


def export_dspy(store: Store, program: str, out_dir: str | Path) -> list[Path]:
    """Write ``trainset.jsonl``, ``ratings.jsonl`` and ``program.py`` for use in plain DSPy code.

    ``program.py`` defines the module (active version's instructions and pinned demos), the
    metric and the GEPA feedback metric (the same functions this bridge uses, copied as text),
    and ``load_program() -> (module, trainset, metric)``. Returns the written paths.
    """
    version = store.active_version(program)
    examples = rated_examples(store, program)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)

    def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    trainset_path, ratings_path = out / "trainset.jsonl", out / "ratings.jsonl"
    program_path = out / "program.py"
    write_jsonl(
        trainset_path,
        (
            {"message": e.message, "response": e.response, "stars": e.stars, "attempt_id": e.attempt_id}
            for e in _accepted_trainset(examples)
        ),
    )
    write_jsonl(
        ratings_path,
        (
            {"message": e.message, "response": e.response, "stars": e.stars, "critiques": e.critiques,
             "attempt_id": e.attempt_id}
            for e in examples
        ),
    )
    functions: list[Callable[..., Any]] = [message_key, token_f1, star_score, star_feedback]
    pinned = [
        (str(d["user"]), str(d["response"]))
        for d in (version.demo_policy or {}).get("pinned", [])
        if isinstance(d, dict) and "user" in d and "response" in d
    ]
    program_path.write_text(
        _PROGRAM_TEMPLATE.format(
            program=program,
            version=version.number,
            instructions=dspy_instructions(version),
            pinned=repr(pinned),
            functions="\n\n".join(inspect.getsource(f) for f in functions),
        ),
        encoding="utf-8",
    )
    return [trainset_path, ratings_path, program_path]
