"""Adapters of a program: domain adapters, switching, retiring, routing, forgetting and retraining.

* **Domain adapters** (the career-change problem): a program can hold several adapters, each
  tagged with a domain (``general`` by default). :func:`create` trains one from a chosen slice of
  the program's examples (a date range or some conversations); :func:`switch` publishes a version
  that serves another adapter (or the base model) — a pointer move, no training.
* **Routing**: :func:`route` picks the domain adapter whose examples are most similar to a message
  (cosine similarity of sentence embeddings to each domain's centroid), falling back to the base
  model below ``min_similarity``; :class:`RoutedModel` does it per request. A program serves
  routed when its model spec ends in ``?route`` (``hf:DIR?route``, ``vllm:M@URL?route=0.4``):
  ``switch(..., "route")`` publishes such a version and :func:`routed_model` builds the model.
* **Forgetting** is :func:`minetune.app.forget.forget`: it deletes interactions, removes their
  text everywhere and marks adapters that learned from them as tainted; :func:`retrain_tainted`
  trains each again from what remains, without the forgotten data, and deletes the tainted weights.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from minetune.config import Settings
from minetune.errors import ModelError, NotFoundError
from minetune.models.base import ChatModel, Completion, CompletionStream, Message
from minetune.models.spec import DEFAULT_ROUTE_SIMILARITY, ModelSpec, parse_spec
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store import training as jobs_db
from minetune.store.schema import Adapter, ProgramVersion
from minetune.train.base import BaseModel, base_from_spec, check_adapter_dir
from minetune.train.config import ProgressCallback, TrainConfig, TrainingError
from minetune.train.datasets import DEFAULT_THRESHOLD, MIN_EXAMPLES
from minetune.train.examples import Selection, default_eval_sets, examples_for
from minetune.train.runs import Outcome, Plan, run, train

BASE = "base"  # switch target meaning "no adapter"
ROUTE = "route"  # switch target meaning "route each message to its domain's adapter"


@dataclass(frozen=True)
class AdapterView:
    """An adapter as listed: its row, program, and whether the active version serves it."""

    adapter: Adapter
    program: str
    active: bool

    @property
    def tainted(self) -> bool:
        return self.adapter.tainted_at is not None


def list_adapters(
    store: Store, program: str | None = None, *, include_retired: bool = False
) -> list[AdapterView]:
    rows = adapters_db.list_adapters(store, program, include_retired=include_retired)
    active: dict[str, str | None] = {}
    views = []
    for adapter, name in rows:
        if name not in active:
            active[name] = store.active_version(name).adapter
        views.append(AdapterView(adapter, name, active[name] == adapter.path))
    return views


def serving_base(store: Store, settings: Settings, program: str, adapter: Adapter | None) -> BaseModel | None:
    """How ``program`` serves ``adapter``'s base: the backend of its current spec when that spec is
    for the same base model (so ``vllm:`` stays vLLM), else ``hf:``. None: no local base known."""
    spec = store.active_version(program).model_spec or settings.model
    current: BaseModel | None = None
    if spec:
        try:
            current = base_from_spec(spec)
        except (TrainingError, ModelError):
            current = None
    if adapter is None:
        return current
    if current is not None and current.name == adapter.base_model:
        return current
    return BaseModel(adapter.base_model)


def spec_with_adapter(spec: str, adapter: str | None) -> str:
    """``spec`` serving ``adapter`` (replacing any adapter in it; None removes it). Only ``hf:`` and
    ``vllm:`` specs can carry an adapter; others are returned unchanged when ``adapter`` is None."""
    base = base_from_spec(spec) if adapter is not None else None
    if base is None:
        parsed = parse_spec(spec)
        if parsed.backend in ("hf", "vllm"):
            return BaseModel(parsed.model, parsed.backend, parsed.base_url).spec()
        return parsed.raw
    return base.spec(adapter)


def _resolve_target(store: Store, program: str, target: int | str | None) -> Adapter | None:
    if target is None or (isinstance(target, str) and target.lower() in (BASE, "none")):
        return None
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        adapter = adapters_db.get_adapter(store, int(target))
        if adapter.program_id != store.program(program).id:
            raise TrainingError(
                f"Adapter {adapter.id} belongs to another program; see `minetune adapter list`."
            )
        return adapter
    ready = [v.adapter for v in list_adapters(store, program) if v.adapter.domain == target and not v.tainted]
    if not ready:
        raise TrainingError(
            f"Program {program!r} has no ready adapter for domain {target!r}. "
            f"Create one with `minetune adapter create {target}`."
        )
    return ready[-1]


def switch(store: Store, settings: Settings, program: str, target: int | str | None) -> ProgramVersion:
    """Publish and activate a version of ``program`` that serves ``target``: an adapter id, a domain
    (its newest ready adapter), ``route`` (each message routed to its domain's adapter, see
    :func:`routed_model`) or ``base``/None (no adapter). The adapter directory is checked first,
    so a corrupt one is refused and the active version stays."""
    if isinstance(target, str) and target.strip().lower() == ROUTE:
        return _switch_to_routing(store, settings, program)
    adapter = _resolve_target(store, program, target)
    if adapter is not None:
        if adapter.status != "ready":
            raise TrainingError(f"Adapter {adapter.id} is {adapter.status}; it cannot be switched to.")
        check_adapter_dir(adapter.path)
    base = serving_base(store, settings, program, adapter)
    if adapter is None:
        spec = base.spec() if base is not None else None
        return adapters_db.use_adapter(store, program, None, model_spec=spec)
    assert base is not None
    note = f"switch to adapter {adapter.id} ({adapter.domain})"
    if adapter.tainted_at is not None:
        note += " — tainted"
    return adapters_db.use_adapter(store, program, adapter.id, model_spec=base.spec(adapter.path), note=note)


def _switch_to_routing(store: Store, settings: Settings, program: str) -> ProgramVersion:
    ready = [v.adapter for v in list_adapters(store, program) if not v.tainted]
    if not ready:
        raise TrainingError(
            f"Program {program!r} has no ready adapters to route between; create one per domain first "
            "(`minetune adapter create DOMAIN`)."
        )
    base = serving_base(store, settings, program, ready[-1])
    assert base is not None
    for adapter in ready:
        check_adapter_dir(adapter.path)
    spec = f"{base.spec()}?route"
    domains = ", ".join(sorted({a.domain for a in ready}))
    return adapters_db.use_adapter(store, program, None, model_spec=spec, note=f"route between {domains}")


def retire(
    store: Store, settings: Settings, program: str, adapter_id: int, *, force: bool = False
) -> Adapter:
    """Retire an adapter (its files stay for old versions). Retiring the active one needs ``force``
    and switches the program to the base model first."""
    adapter = _resolve_target(store, program, adapter_id)
    assert adapter is not None
    if store.active_version(program).adapter == adapter.path:
        if not force:
            raise TrainingError(
                f"Adapter {adapter.id} is active; switch to another first, or retire with --force to "
                "fall back to the base model."
            )
        switch(store, settings, program, None)
    return adapters_db.set_status(store, adapter.id, "retired")


def create(
    store: Store,
    settings: Settings,
    program: str,
    domain: str,
    *,
    method: str = "auto",
    selection: Selection | None = None,
    base: str | None = None,
    config: TrainConfig | None = None,
    activate: bool = False,
    threshold: int = DEFAULT_THRESHOLD,
    minimum: int = MIN_EXAMPLES,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Outcome:
    """Train a new adapter for ``domain`` from the selected examples (not activated by default)."""
    domain = domain.strip()
    if not domain:
        raise TrainingError("A domain adapter needs a domain name, e.g. `minetune adapter create work`.")
    return train(
        store,
        settings,
        program,
        method=method,
        base=base,
        config=config,
        domain=domain,
        selection=selection,
        activate=activate,
        threshold=threshold,
        minimum=minimum,
        kind="create",
        on_progress=on_progress,
        cancel=cancel,
    )


# -- routing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """The adapter a message should use (None: the base model) and every domain's similarity."""

    adapter: Adapter | None
    similarity: float
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def domain(self) -> str | None:
        return self.adapter.domain if self.adapter is not None else None


class Router:
    """Domain centroids of a program's ready, untainted adapters (newest per domain), built once."""

    def __init__(self, store: Store, settings: Settings, program: str, embedder: Any | None = None) -> None:
        from minetune.learn.embed import from_bytes, load_embedder, to_bytes

        self.embedder = embedder or load_embedder(settings.embedder)
        name = getattr(self.embedder, "name", settings.embedder)
        newest: dict[str, Adapter] = {}
        for view in list_adapters(store, program):
            if view.tainted:
                continue
            newest[view.adapter.domain] = view.adapter
        self.adapters = newest
        self.centroids: dict[str, np.ndarray] = {}
        for domain, adapter in newest.items():
            turns = sorted(set(adapters_db.attempt_turns(store, adapter.example_attempt_ids or []).values()))
            if not turns:
                continue
            stored = store.turn_embeddings(turns, name)
            vectors = {t: from_bytes(blob, self.embedder.dim) for t, blob in stored.items()}
            missing = [t for t in turns if t not in vectors]
            if missing:
                texts = adapters_db.turn_messages(store, missing)
                fresh = self.embedder.encode([texts[t] for t in missing])
                vectors.update(zip(missing, fresh, strict=True))
                store.save_turn_embeddings(
                    {t: to_bytes(vectors[t]) for t in missing}, name, self.embedder.dim
                )
            centroid = np.mean(np.stack([vectors[t] for t in turns]), axis=0)
            norm = float(np.linalg.norm(centroid))
            if norm > 0:
                self.centroids[domain] = centroid / norm

    def route(self, message: str, min_similarity: float = DEFAULT_ROUTE_SIMILARITY) -> Route:
        if not self.centroids:
            return Route(None, 0.0)
        query = self.embedder.encode([message])[0]
        scores = {d: float(np.dot(query, c)) for d, c in self.centroids.items()}
        best = max(scores, key=lambda d: scores[d])
        if scores[best] < min_similarity:
            return Route(None, scores[best], scores)
        return Route(self.adapters[best], scores[best], scores)


def route(
    store: Store,
    settings: Settings,
    program: str,
    message: str,
    *,
    min_similarity: float = DEFAULT_ROUTE_SIMILARITY,
    embedder: Any | None = None,
) -> Route:
    """The domain adapter for ``message`` (or the base model when no domain is similar enough)."""
    return Router(store, settings, program, embedder).route(message, min_similarity)


class RoutedModel:
    """A :class:`~minetune.models.base.ChatModel` that answers each request with the domain adapter
    :class:`Router` picks for its last user message, or the base model. Backends are built on first
    use per adapter (``hf:`` or ``vllm:``, as the program serves its base)."""

    def __init__(
        self,
        router: Router,
        base: BaseModel,
        settings: Settings,
        *,
        min_similarity: float = DEFAULT_ROUTE_SIMILARITY,
    ) -> None:
        self.router = router
        self.base = base
        self.settings = settings
        self.min_similarity = min_similarity
        self.spec = parse_spec(f"{base.spec()}?route={min_similarity}").raw  # e.g. hf:DIR?route
        self.last_route: Route | None = None
        self._models: dict[str, ChatModel] = {}

    def _pick(self, messages: list[Message]) -> ChatModel:
        from minetune.models.detect import build_model

        text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        self.last_route = self.router.route(text, self.min_similarity)
        adapter = self.last_route.adapter
        spec = self.base.spec(adapter.path if adapter is not None else None)
        if spec not in self._models:
            self._models[spec] = build_model(parse_spec(spec), self.settings)
        return self._models[spec]

    def complete(
        self, messages: list[Message], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> Completion:
        return self._pick(messages).complete(messages, temperature=temperature, max_tokens=max_tokens)

    def stream(
        self, messages: list[Message], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> CompletionStream:
        return self._pick(messages).stream(messages, temperature=temperature, max_tokens=max_tokens)


def routed_model(
    store: Store, settings: Settings, program: str, spec: str | ModelSpec, *, embedder: Any | None = None
) -> RoutedModel:
    """The model a routed spec (``hf:DIR?route[=MIN_SIMILARITY]`` or ``vllm:M@URL?route``) stands
    for in ``program``: each message goes to the domain adapter its text is most similar to, or to
    the plain base model. The router is built now, from the program's ready, untainted adapters."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if parsed.route is None:
        raise ModelError(f"{parsed.raw} is not a routed spec; add ?route to route between domain adapters.")
    base = BaseModel(parsed.model, parsed.backend, parsed.base_url)
    router = Router(store, settings, program, embedder)
    return RoutedModel(router, base, settings, min_similarity=parsed.route)


# -- forgetting and retraining -----------------------------------------------------------------------


def parse_date(text: str) -> datetime:
    """A date (YYYY-MM-DD, local midnight) or ISO date-time; naive times are local."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TrainingError(f"Not a date: {text!r}; use YYYY-MM-DD or an ISO date-time.") from None
    if value.tzinfo is None:
        value = value.astimezone()  # local time
    return value.astimezone(UTC)


@dataclass
class Retrained:
    """One tainted adapter and what retraining it did: an outcome, or why it was not retrained."""

    old: Adapter
    program: str
    outcome: Outcome | None = None
    skipped: str | None = None


def _job_hyperparameters(store: Store, adapter: Adapter) -> dict[str, Any]:
    if adapter.job_id is None:
        return {}
    try:
        return dict(jobs_db.get_job(store, adapter.job_id).hyperparameters or {})
    except NotFoundError:
        return {}


def _threshold_of(store: Store, adapter: Adapter) -> int:
    return int(_job_hyperparameters(store, adapter).get("threshold", DEFAULT_THRESHOLD))


def _config_of(store: Store, adapter: Adapter) -> TrainConfig:
    hp = _job_hyperparameters(store, adapter)
    return TrainConfig.from_dict(hp) if hp else TrainConfig()


def retrain_tainted(
    store: Store,
    settings: Settings,
    program: str | None = None,
    *,
    config: TrainConfig | None = None,
    minimum: int = MIN_EXAMPLES,
    purge: bool = True,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> list[Retrained]:
    """Train every tainted adapter again, from the base model, on what remains of its lineage.

    An adapter whose tainted descendant is retrained instead (a chain of incremental updates) is
    only retired. Each replacement takes its predecessor's method, domain and settings (unless
    ``config``), and is activated when the predecessor was active; the predecessor is retired and,
    with ``purge`` (the default: its weights hold forgotten data), its files are deleted — old
    versions that served it can then no longer be switched back to. Adapters with too few
    remaining examples are skipped and stay tainted (``skipped`` says why).
    """
    results: list[Retrained] = []
    tainted = adapters_db.tainted_adapters(store, program)
    parents = {a.parent_id for a, _ in tainted if a.parent_id is not None}
    for old, name in tainted:
        if old.id in parents:
            adapters_db.set_status(store, old.id, "retired")
            results.append(Retrained(old, name, skipped="superseded by a tainted descendant; retired"))
            _purge(old, purge)
            continue
        run_config = config or _config_of(store, old)
        lineage = set(old.lineage_attempt_ids or [])
        threshold = _threshold_of(store, old)
        found = examples_for(store, name, old.method, threshold=threshold, seed=run_config.seed)
        keep = [ex for ex in found.train if set(ex.attempt_ids) <= lineage]
        if len(keep) < minimum:
            results.append(
                Retrained(
                    old, name, skipped=f"only {len(keep)} of its examples remain (at least {minimum} needed)"
                )
            )
            continue
        active = store.active_version(name).adapter == old.path
        base = serving_base(store, settings, name, old) or BaseModel(old.base_model)
        plan = Plan(
            program=name,
            method=old.method,
            base=base,
            train=keep,
            eval_sets=default_eval_sets(store, name, old.method, found.valid, threshold, run_config.seed),
            config=run_config,
            kind="retrain",
            domain=old.domain,
            replaces=old,
            activate=active,
            threshold=threshold,
        )
        outcome = run(store, settings, plan, on_progress=on_progress, cancel=cancel)
        results.append(Retrained(old, name, outcome))
        if outcome.status == "cancelled":
            break
        if outcome.status == "succeeded":
            _purge(old, purge)
    return results


def _purge(adapter: Adapter, purge: bool) -> None:
    if purge and adapter.path and Path(adapter.path).is_dir():
        shutil.rmtree(adapter.path, ignore_errors=True)
